import Foundation
import PSPCCore
import PSPCData
import PSPCTestSupport
import XCTest

/// `--local-workers 1` and `--local-workers 3` (7 uneven shards, replication 2) through the command line give
/// the in-process answers for every method. (PSPCClusterTests checks the same code at all 18 grid times with
/// workers in the test process; here the worker processes, token and launch are real.)
final class LocalWorkersTests: XCTestCase {
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
        for t in ["0.002", "1.09", "80"] {
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
