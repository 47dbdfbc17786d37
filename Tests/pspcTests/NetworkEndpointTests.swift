import Foundation
import PSPCCore
import PSPCData
import PSPCTestSupport
import XCTest

/// `pspc denoise --method network --local-network CHECKPOINT`: pspc starts the Python endpoint as a real
/// process and talks to it through the protocol; the answer equals calling the network in Python.
final class NetworkEndpointTests: XCTestCase {
    func testLocalNetworkMatchesTheNetworkCalledDirectly() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let python = root + "/.venv/bin/python"
        guard FileManager.default.isExecutableFile(atPath: python) else {
            return XCTFail("\(python) is missing: scripts/setup-python.sh makes it (scripts/test.sh runs it first)")
        }
        let work = try CommandRunner.temporaryDirectory("network")
        defer { try? FileManager.default.removeItem(atPath: work) }
        // A small random-weight network and queries, and what the network gives when called directly.
        let script = """
            import sys, torch, numpy as np
            sys.path.insert(0, '\(root)/scripts')
            from pspc_net.model import EDMPrecond, save_checkpoint
            torch.manual_seed(0)
            net = EDMPrecond.from_preset('tiny', img_resolution=28)
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(0.05 * torch.randn_like(p))
            net.eval()
            save_checkpoint(net, '\(work)/net.pt')
            z = np.random.default_rng(1).standard_normal((5, 1, 28, 28)).astype(np.float32) * 1.09
            np.save('\(work)/z.npy', z)
            with torch.no_grad():
                d = net(torch.from_numpy(z), torch.full((5,), 1.09)).numpy()
            np.save('\(work)/expected.npy', d.astype(np.float32))
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", script]
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "making the test network failed")

        let result = try CommandRunner.succeed(
            [
                "denoise", "--method", "network", "--local-network", "\(work)/net.pt", "--t", "1.09", "--input",
                "\(work)/z.npy",
                "--output", "\(work)/out.npy",
            ],
            environment: ["PSPC_PYTHON": python, "PSPC_SCRIPTS": root + "/scripts"])
        XCTAssertTrue(result.stderr.contains("network endpoint"), result.stderr)
        let out = try NPY.read(path: "\(work)/out.npy").asDoubles()
        let expected = try NPY.read(path: "\(work)/expected.npy").asDoubles()
        XCTAssertEqual(out.count, expected.count)
        let difference = zip(out, expected).reduce(0) { max($0, abs($1.0 - $1.1)) }
        XCTAssertLessThanOrEqual(difference, 1e-6)
    }
}
