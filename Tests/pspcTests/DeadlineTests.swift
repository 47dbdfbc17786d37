import Foundation
import PSPCData
import PSPCTestSupport
import XCTest

/// Time options are refused at parse time unless finite, positive and at most a day: nan and inf used to crash
/// the coordinator (SIGILL) once a worker was asked.
final class DeadlineTests: XCTestCase {
    func testBadDeadlinesAreRefusedAtParseTime() throws {
        let work = try CommandRunner.temporaryDirectory("deadline")
        defer { try? FileManager.default.removeItem(atPath: work) }
        try CommandRunner.succeed(["ingest", "--source", "fashion-mnist:train", "--limit", "20", "--out", "\(work)/data"])
        try NPY.write(NPYArray(shape: [1, 1, 28, 28], data: .float32(.init(repeating: 0, count: 784))), to: "\(work)/z.npy")
        let denoise = [
            "denoise", "--data", "\(work)/data", "--method", "empirical", "--t", "1", "--input", "\(work)/z.npy",
            "--output", "\(work)/out.npy",
        ]
        for value in ["nan", "inf", "1e300", "0", "-1"] {
            let result = try CommandRunner.run(denoise + ["--local-workers", "1", "--deadline=\(value)"])
            XCTAssertFalse(result.crashed, "--deadline \(value) crashed: \(result.stderr)")
            XCTAssertNotEqual(result.status, 0, "--deadline \(value) accepted")
            XCTAssertTrue(
                result.stderr.contains("--deadline must be a finite number of seconds in (0, 86400]"),
                "--deadline \(value): \(result.stderr)")
        }
        try FileIO.writeAtomically(Array("0123456789abcdef0123".utf8), to: "\(work)/token")
        for (key, value) in [("deadlineSeconds", ".nan"), ("deadlineSeconds", ".inf"), ("retrySeconds", "0")] {
            let cluster = "\(work)/cluster-\(key).yaml"
            try FileIO.writeAtomically(
                Array("workers: [127.0.0.1:1]\ntokenFile: token\n\(key): \(value)\n".utf8), to: cluster)
            let result = try CommandRunner.run(
                ["denoise", "--cluster", cluster, "--method", "empirical", "--t", "1", "--input", "\(work)/z.npy",
                 "--output", "\(work)/out.npy"])
            XCTAssertFalse(result.crashed, "\(key) \(value) crashed: \(result.stderr)")
            XCTAssertTrue(
                result.stderr.contains("\(cluster): \(key) must be a finite number of seconds in (0, 86400]"),
                "\(key) \(value): \(result.stderr)")
        }
        for value in ["nan", "inf", "0", "-1"] {
            let result = try CommandRunner.run(["queries", "--t=\(value)", "--count", "1", "--out", "\(work)/q"])
            XCTAssertNotEqual(result.status, 0)
            XCTAssertTrue(result.stderr.contains("--t must be positive and finite"), result.stderr)
        }
    }
}
