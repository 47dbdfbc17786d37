import Foundation
import PSPCCore
import PSPCData
import PSPCTestSupport
import XCTest

/// `pspc denoise --method network --local-network CHECKPOINT`: pspc starts the Python endpoint as a real
/// process and talks to it through the protocol; the answer equals calling the network in Python.
final class NetworkEndpointTests: XCTestCase {
    func testLocalNetworkMatchesTheNetworkCalledDirectly() throws {
        let root = NetworkFixture.root, python = NetworkFixture.python
        let work = try CommandRunner.temporaryDirectory("network")
        defer { try? FileManager.default.removeItem(atPath: work) }
        // A small random-weight network and queries, and what the network gives when called directly.
        try NetworkFixture.makeNetwork(
            at: "\(work)/net.pt",
            extra: """
                z = np.random.default_rng(1).standard_normal((5, 1, 28, 28)).astype(np.float32) * 1.09
                np.save('\(work)/z.npy', z)
                with torch.no_grad():
                    d = net(torch.from_numpy(z), torch.full((5,), 1.09)).numpy()
                np.save('\(work)/expected.npy', d.astype(np.float32))
                """)

        let result = try CommandRunner.succeed(
            [
                "denoise", "--method", "network", "--local-network", "\(work)/net.pt", "--t", "1.09", "--input",
                "\(work)/z.npy",
                "--output", "\(work)/out.npy",
            ],
            environment: ["PSPC_PYTHON": python, "PSPC_SCRIPTS": root + "/scripts"])
        XCTAssertTrue(result.stderr.contains("network endpoint"), result.stderr)
        // Heatmaps from the same endpoint feed pspc-flex.
        try CommandRunner.succeed(
            [
                "heatmap", "--local-network", "\(work)/net.pt", "--grid", "1.09", "--samples", "1", "--out",
                "\(work)/h.npy",
            ],
            environment: ["PSPC_PYTHON": python, "PSPC_SCRIPTS": root + "/scripts"])
        XCTAssertEqual(try NPY.read(path: "\(work)/h.npy").shape, [1, 28, 28, 28, 28])
        let locality = try String(contentsOfFile: "\(work)/h.locality.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(locality.count, 2)
        XCTAssertTrue(locality[1].hasPrefix("1.09,"))
        try CommandRunner.python(
            "import numpy as np; np.save('\(work)/z8.npy', (np.random.default_rng(0).standard_normal((2, 1, 28, 28)) * 1.09).astype(np.float32))"
        )
        try CommandRunner.succeed([
            "ingest", "--source", "fashion-mnist:train", "--limit", "200", "--out", "\(work)/data",
        ])
        try CommandRunner.succeed(
            [
                "denoise", "--data", "\(work)/data", "--method", "pspc-flex", "--heatmaps", "\(work)/h.npy",
                "--heatmap-times",
                "\(work)/h.times.json", "--lambda", "0.5", "--t", "1.09", "--input", "\(work)/z8.npy", "--output",
                "\(work)/flex.npy",
            ])

        let out = try NPY.read(path: "\(work)/out.npy").asDoubles()
        let expected = try NPY.read(path: "\(work)/expected.npy").asDoubles()
        XCTAssertEqual(out.count, expected.count)
        let difference = zip(out, expected).reduce(0) { max($0, abs($1.0 - $1.1)) }
        XCTAssertLessThanOrEqual(difference, 1e-6)
    }
}
