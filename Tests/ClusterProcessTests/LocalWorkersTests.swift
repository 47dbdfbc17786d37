import Foundation
import NIOPosix
import PSPCCluster
import PSPCCore
import PSPCData
import PSPCTestSupport
import XCTest

/// `--local-workers 1` and `--local-workers 3` (7 uneven shards, replication 2) give the in-process answers
/// for every method: at all 18 grid times through the same local cluster the flag starts (real worker
/// processes), and end to end through the command line at three of them.
final class LocalWorkersTests: XCTestCase {
    func testLocalClusterProcessesMatchInProcessAtEveryGridTime() async throws {
        let work = try CommandRunner.temporaryDirectory("local-cluster")
        defer { try? FileManager.default.removeItem(atPath: work) }
        try CommandRunner.succeed([
            "ingest", "--source", "fashion-mnist:train", "--limit", "1003", "--shards", "7", "--out", "\(work)/data",
        ])
        let (_, parts) = try ShardStore.loadShards(directory: "\(work)/data", xflip: true, threads: 2)
        let local = try DenoisingEngine(sources: parts, batchSize: 4)
        let test = try IDXReader.read(
            path: DatasetSource.fashionMNISTDirectory + "/t10k-images-idx3-ubyte.gz", limit: 6)
        let maps: [Double] = (0..<(784 * 784)).map { i in
            let dy = Double((i % 784) / 28 - (i / 784) / 28), dx = Double((i % 784) % 28 - (i / 784) % 28)
            return exp(-(dy * dy + dx * dx) / 3)
        }
        let flex = try FlexMasks(maps: maps, levels: 1, height: 28, width: 28, levelTimes: [1], lambda: .constant(0.4))
        let methods: [DenoiseMethod] = [
            .empirical, .pspcSquare(.constant(7)), .pspcFlex(flex), .gaussian,
            .cfdm(smoothing: 0.1, copies: 2, seed: 1),
        ]
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        for (workers, replication) in [(1, 1), (3, 2)] {
            let cluster = try LocalCluster.start(
                workers: workers, data: "\(work)/data", replication: replication, threadsPerWorker: 1,
                binary: CommandRunner.binary.path)
            let connected = try await Cluster.connect(
                to: cluster.addresses, token: try readClusterToken(cluster.tokenFile), group: group, xflip: true)
            let remote = try DenoisingEngine(
                sources: connected.sources(), batchSize: 4, concurrentSources: true, batchesInFlight: 2)
            for (ti, t) in EDM.grid(steps: 18).enumerated() {
                let eps = NormalNoise(seed: 9).normals(stream: UInt64(ti), count: test.pixels.count)
                let z = test.pixels.enumerated().map { Double($1) / 127.5 - 1 + t * eps[$0] }
                for method in methods {
                    let expected = try await local.denoise(z, t: t, method: method).values
                    let got = try await remote.denoise(z, t: t, method: method).values
                    let difference = zip(got, expected).reduce(0) { max($0, abs($1.0 - $1.1)) }
                    XCTAssertLessThanOrEqual(
                        difference, 1e-5, "\(method.name) at t=\(t) through \(workers) local workers")
                }
            }
            await connected.close()
            cluster.stop()
        }
        try await group.shutdownGracefully()
    }

    func testLocalWorkersMatchInProcess() throws {
        let work = try CommandRunner.temporaryDirectory("local-workers")
        defer { try? FileManager.default.removeItem(atPath: work) }
        // Uneven shards: 7 parts of 1003 images (143 or 144 each), then x-flipped by the workers.
        try CommandRunner.succeed([
            "ingest", "--source", "fashion-mnist:train", "--limit", "1003", "--shards", "7", "--out", "\(work)/data",
        ])
        var maps = [Float](repeating: 0, count: 784 * 784)
        for out in 0..<784 {
            for q in 0..<784 {
                let dy = Double(q / 28 - out / 28), dx = Double(q % 28 - out % 28)
                maps[out * 784 + q] = Float(exp(-(dy * dy + dx * dx) / 4))
            }
        }
        try NPY.write(NPYArray(shape: [28, 28, 28, 28], data: .float32(maps)), to: "\(work)/heatmaps.npy")
        let methods: [[String]] = [
            ["--method", "empirical"], ["--method", "pspc-square", "--patch-size", "5"],
            ["--method", "pspc-flex", "--heatmaps", "\(work)/heatmaps.npy", "--lambda", "0.4"],
            ["--method", "gaussian"],
            ["--method", "cfdm", "--smoothing", "0.1", "--copies", "2"],
        ]
        for t in ["1.09"] {
            try CommandRunner.succeed([
                "queries", "--source", "fashion-mnist:test", "--t", t, "--count", "6", "--out", "\(work)/q\(t)",
            ])
            for method in methods {
                let base = ["denoise", "--data", "\(work)/data", "--t", t, "--input", "\(work)/q\(t)/z.npy"] + method
                try CommandRunner.succeed(base + ["--output", "\(work)/in.npy"])
                let reference = try NPY.read(path: "\(work)/in.npy").asDoubles()
                for extra in [["--local-workers", "1"], ["--local-workers", "3", "--replication", "2"]] {
                    try CommandRunner.succeed(base + extra + ["--output", "\(work)/lw.npy"])
                    let out = try NPY.read(path: "\(work)/lw.npy").asDoubles()
                    let difference = zip(out, reference).reduce(0) { max($0, abs($1.0 - $1.1)) }
                    XCTAssertLessThanOrEqual(
                        difference, 1e-5, "\(method[1]) at t=\(t) with \(extra.joined(separator: " "))")
                }
            }
        }
    }
}
