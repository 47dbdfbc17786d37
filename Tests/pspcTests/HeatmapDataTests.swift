import Foundation
import PSPCData
import PSPCTestSupport
import XCTest

/// `pspc heatmap --data DIR`: x0 drawn in pspc from an ingested dataset (with its flipped copies), only those
/// images sent; the maps equal the network's in Python on the same draw, and asking in ranges of output
/// pixels changes no bit. The endpoint's options reach it through --network-batch and --network-option.
final class HeatmapDataTests: XCTestCase {
    /// WORK/eps.ts (a small convolutional epsilon network), WORK/images.npy (4 seeded random images) and
    /// WORK/data (them ingested in 2 shards).
    static func makeNetworkAndData(in work: String) throws {
        try NetworkFixture.makeConvNetwork(at: "\(work)/eps.ts")
        try CommandRunner.python(
            "import numpy as np; np.save('\(work)/images.npy', np.random.default_rng(7).integers(0, 256, (4, 1, 28, 28), dtype=np.uint8))"
        )
        try CommandRunner.succeed([
            "ingest", "--source", "npy:\(work)/images.npy", "--shards", "2", "--out", "\(work)/data",
        ])
    }

    func testHeatmapFromAnIngestedDatasetInRanges() throws {
        let work = try CommandRunner.temporaryDirectory("heatmap-data")
        defer { try? FileManager.default.removeItem(atPath: work) }
        try Self.makeNetworkAndData(in: work)
        func heatmap(_ out: String, _ extra: [String]) throws {
            try CommandRunner.succeed(
                [
                    "heatmap", "--local-network", "\(work)/eps.ts", "--network-adapter", "vp-eps", "--network-shape",
                    "1,28,28", "--network-batch", "32", "--network-option", "threads=2", "--grid", "1.5,0.4",
                    "--samples", "3", "--seed", "5", "--data", "\(work)/data", "--out", out,
                ] + extra, environment: NetworkFixture.environment)
        }
        try heatmap("\(work)/one.npy", [])
        try heatmap("\(work)/ranges.npy", ["--pixels-per-request", "100"])
        XCTAssertEqual(try FileIO.read("\(work)/one.npy"), try FileIO.read("\(work)/ranges.npy"))
        XCTAssertEqual(
            try String(contentsOfFile: "\(work)/one.locality.csv", encoding: .utf8),
            try String(contentsOfFile: "\(work)/ranges.locality.csv", encoding: .utf8))
        XCTAssertEqual(try NPY.read(path: "\(work)/one.npy").shape, [2, 28, 28, 28, 28])
        // The same draw in Python: SeededDraw.distinct (SplitMix64, partial Fisher-Yates) over the 4 images and
        // their mirrors, seed 5 + level, image i for sample i.
        try NetworkFixture.run(
            """
            import numpy as np, torch
            from pspc_net.adapters import load_denoiser
            from pspc_net.heatmap import gradient_heatmaps
            M = (1 << 64) - 1
            def distinct(count, total, seed):
                state, swapped, out = (seed + 0x9E3779B97F4A7C15) & M, {}, []
                for i in range(count):
                    state = (state + 0x9E3779B97F4A7C15) & M
                    z = state
                    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
                    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
                    z ^= z >> 31
                    j = i + z % (total - i)
                    a, b = swapped.get(i, i), swapped.get(j, j)
                    swapped[j] = a
                    out.append(b)
                return out
            images = np.load('\(work)/images.npy')
            both = np.concatenate([images, images[..., ::-1]])
            net = load_denoiser('\(work)/eps.ts', 'vp-eps', 'cpu', (1, 28, 28))
            got = np.load('\(work)/one.npy')
            for level, t in enumerate([1.5, 0.4]):
                picked = torch.from_numpy(np.ascontiguousarray(both[distinct(3, 8, 5 + level)]))
                want = gradient_heatmaps(net, picked, t, 3, 5 + level, batch=32, in_order=True)
                assert np.allclose(got[level], want, rtol=1e-4, atol=1e-7), np.abs(got[level] - want).max()
            """)
    }

    /// Several named networks: one run directory each (OUT/NAME) from the same draws, so the same network under
    /// two names gives the same maps bit for bit, and OUT/locality.csv lists their locality side by side.
    func testHeatmapsOfSeveralNetworksShareTheirDraws() throws {
        let work = try CommandRunner.temporaryDirectory("heatmap-networks")
        defer { try? FileManager.default.removeItem(atPath: work) }
        try Self.makeNetworkAndData(in: work)
        let common = [
            "heatmap", "--local-network", "a=\(work)/eps.ts", "--local-network", "b=\(work)/eps.ts", "--network-adapter",
            "vp-eps", "--network-shape", "1,28,28", "--grid", "1.5,0.4", "--samples", "2", "--seed", "5", "--data",
            "\(work)/data",
        ]
        let refused = try CommandRunner.run(common + ["--out", "\(work)/maps.npy"], environment: NetworkFixture.environment)
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("give --out a directory, not an .npy file"), refused.stderr)
        try CommandRunner.succeed(common + ["--out", "\(work)/maps"], environment: NetworkFixture.environment)
        XCTAssertEqual(try NPY.read(path: "\(work)/maps/a/heatmaps.npy").shape, [2, 28, 28, 28, 28])
        XCTAssertEqual(try FileIO.read("\(work)/maps/a/heatmaps.npy"), try FileIO.read("\(work)/maps/b/heatmaps.npy"))
        let table = try String(contentsOfFile: "\(work)/maps/locality.csv", encoding: .utf8)
        let lines = table.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 5, table)
        XCTAssertEqual(lines[0], "network,t,side50,side75,side95")
        XCTAssertEqual(lines.dropFirst().map { $0.split(separator: ",")[0] }, ["a", "a", "b", "b"])
        XCTAssertEqual(Array(lines[1...2]).map { $0.dropFirst(2) }, Array(lines[3...4]).map { $0.dropFirst(2) })
    }

    func testHeatmapDataAndEndpointOptionErrors() throws {
        let result = try CommandRunner.run([
            "heatmap", "--network", "127.0.0.1:1", "--network-token-file", "/nonexistent", "--network-adapter",
            "vp-eps", "--out", "/tmp/x.npy",
        ])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("configure --local-network"), result.stderr)
        let bad = try CommandRunner.run([
            "heatmap", "--local-network", "/nonexistent.pt", "--network-option", "listen=1.2.3.4:5", "--out",
            "/tmp/x.npy",
        ])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("not one pspc sets"), bad.stderr)
    }
}
