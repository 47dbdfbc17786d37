import Foundation
import PSPCTestSupport
import XCTest

/// `pspc worker` logs (swift-log, on stderr, with timestamp, level and the peer's address) every refused
/// connection and bad frame once, with its cause, and at `--log-level debug` each request's latency.
final class WorkerLogsTests: XCTestCase {
    func testRefusedConnectionsBadFramesAndRequestsAreLoggedOnceWithTheirCause() throws {
        let work = try CommandRunner.temporaryDirectory("worker-logs")
        defer { try? FileManager.default.removeItem(atPath: work) }
        try CommandRunner.succeed([
            "ingest", "--source", "fashion-mnist:train", "--limit", "200", "--shards", "2", "--out", "\(work)/data",
        ])
        try CommandRunner.succeed([
            "queries", "--source", "fashion-mnist:test", "--t", "1", "--count", "3", "--out", "\(work)/q",
        ])
        try Data("worker-logs-token-0123456789abcdef".utf8).write(to: URL(fileURLWithPath: "\(work)/token"))
        try Data("another-token-0123456789abcdefgh".utf8).write(to: URL(fileURLWithPath: "\(work)/wrong"))
        FileManager.default.createFile(atPath: "\(work)/worker.err", contents: nil)
        let worker = Process()
        worker.executableURL = CommandRunner.binary
        worker.arguments = [
            "worker", "--listen", "127.0.0.1:0", "--data", "\(work)/data", "--token-file", "\(work)/token",
            "--threads", "1", "--log-level", "debug",
        ]
        let out = Pipe()
        worker.standardOutput = out
        worker.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: "\(work)/worker.err"))
        try worker.run()
        defer {
            if worker.isRunning {
                kill(worker.processIdentifier, SIGKILL)
                worker.waitUntilExit()
            }
        }
        var line = Data()
        while let byte = try out.fileHandleForReading.read(upToCount: 1), !byte.isEmpty, byte != Data([10]) {
            line += byte
        }
        let address = String(String(decoding: line, as: UTF8.self).dropFirst("pspc worker listening on ".count))
        let port = address.split(separator: ":").last!
        for (name, token) in [("good", "token"), ("bad", "wrong")] {
            let json = try JSONSerialization.data(withJSONObject: ["workers": [address], "tokenFile": token])
            try json.write(to: URL(fileURLWithPath: "\(work)/\(name).json"))
        }
        // A wrong token, then bytes that are no frame at all, then a real run.
        XCTAssertEqual(try CommandRunner.run(["status", "--cluster", "\(work)/bad.json"]).status, 1)
        let garbage = Process()
        garbage.executableURL = URL(fileURLWithPath: "/bin/bash")
        garbage.arguments = ["-c", "exec 3<>/dev/tcp/127.0.0.1/\(port); printf '\\x00\\x00\\x00\\x05hello' >&3; sleep 0.5"]
        try garbage.run()
        garbage.waitUntilExit()
        try CommandRunner.succeed([
            "denoise", "--cluster", "\(work)/good.json", "--method", "empirical", "--t", "1", "--input",
            "\(work)/q/z.npy", "--output", "\(work)/out.npy",
        ])
        kill(worker.processIdentifier, SIGTERM)
        worker.waitUntilExit()
        let log = try String(contentsOfFile: "\(work)/worker.err", encoding: .utf8)
        let lines = log.split(separator: "\n").map(String.init)
        func count(_ text: String) -> Int { lines.filter { $0.contains(text) }.count }
        XCTAssertEqual(count("warning pspc.worker: peer=127.0.0.1:"), 2, log)
        XCTAssertEqual(count("closing the connection: handshake failed: peer reported authenticationFailed"), 1, log)
        XCTAssertEqual(count("closing the connection: bad frame"), 1, log)
        XCTAssertEqual(count("info pspc.worker: peer=127.0.0.1:"), 1, "only the run connected: \(log)")
        XCTAssertEqual(count("request 1 (partial_request) answered in"), 1, log)

    }
}
