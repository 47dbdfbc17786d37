import Foundation
import PSPCTestSupport
import XCTest

/// `pspc worker --metrics-listen` serves Prometheus metrics whose request counters equal, op by op, what the
/// coordinators of real `pspc denoise --cluster` runs sent (their `--log-level info` `wire traffic` line), and bytes
/// equal to theirs; /healthz and /readyz answer 200, other paths 404; `pspc status` and a wrong token are counted.
final class WorkerMetricsTests: XCTestCase {
    func testScrapedCountersEqualWhatTheCoordinatorsSent() async throws {
        let work = try CommandRunner.temporaryDirectory("worker-metrics")
        defer { try? FileManager.default.removeItem(atPath: work) }
        try CommandRunner.succeed([
            "ingest", "--source", "fashion-mnist:train", "--limit", "200", "--shards", "2", "--out", "\(work)/data",
        ])
        try CommandRunner.succeed([
            "queries", "--source", "fashion-mnist:test", "--t", "1", "--count", "3", "--out", "\(work)/q",
        ])
        try Data("worker-metrics-token-0123456789abcdef".utf8).write(to: URL(fileURLWithPath: "\(work)/token"))
        let worker = Process()
        worker.executableURL = CommandRunner.binary
        worker.arguments = [
            "worker", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--data", "\(work)/data",
            "--token-file", "\(work)/token", "--threads", "1", "--exit-with-parent",
        ]
        let out = Pipe(), input = Pipe()
        worker.standardOutput = out
        worker.standardInput = input
        worker.standardError = FileHandle.nullDevice
        try worker.run()
        defer {
            if worker.isRunning {
                kill(worker.processIdentifier, SIGKILL)
                worker.waitUntilExit()
            }
        }
        func readLine() throws -> String {
            var line = Data()
            while let byte = try out.fileHandleForReading.read(upToCount: 1), !byte.isEmpty, byte != Data([10]) {
                line += byte
            }
            return String(decoding: line, as: UTF8.self)
        }
        let listening = try readLine(), announced = try readLine()
        XCTAssertTrue(listening.hasPrefix("pspc worker listening on 127.0.0.1:"), listening)
        XCTAssertTrue(announced.hasPrefix("pspc worker metrics on 127.0.0.1:"), announced)
        let address = String(listening.dropFirst("pspc worker listening on ".count))
        let metricsPort = try XCTUnwrap(Int(announced.split(separator: ":").last ?? ""), announced)
        let json = try JSONSerialization.data(withJSONObject: ["workers": [address], "tokenFile": "token"])
        try json.write(to: URL(fileURLWithPath: "\(work)/cluster.json"))

        XCTAssertEqual(try HTTPProbe.get("/healthz", port: metricsPort).status, 200)
        XCTAssertEqual(try HTTPProbe.get("/readyz", port: metricsPort).status, 200)
        XCTAssertEqual(try HTTPProbe.get("/nothing-here", port: metricsPort).status, 404)
        let idle = try await HTTPProbe.scrape(port: metricsPort)
        XCTAssertEqual(idle["pspc_shards_held"], 2)
        XCTAssertEqual(idle["pspc_images_held"], 400, "200 images and their x-flipped copies")
        XCTAssertTrue(idle.keys.contains { $0.hasPrefix("pspc_build_info{version=") }, "\(idle)")

        // Two runs, two methods; each coordinator logs what it sent when it closes.
        var sent: [String: Int] = [:]
        var bytesSent = 0, bytesReceived = 0
        for method in [["--method", "empirical"], ["--method", "pspc-square", "--patch-size", "5"]] {
            let run = try CommandRunner.succeed(
                ["denoise", "--cluster", "\(work)/cluster.json", "--t", "1", "--input", "\(work)/q/z.npy",
                 "--output", "\(work)/out.npy", "--log-level", "info"] + method)
            let line = try XCTUnwrap(
                run.stderr.split(separator: "\n").first { $0.contains("wire traffic") }, run.stderr)
            let traffic = Self.parseTraffic(String(line))
            bytesSent += traffic.sent
            bytesReceived += traffic.received
            sent.merge(traffic.requests, uniquingKeysWith: +)
        }
        XCTAssertGreaterThan(sent["empirical"] ?? 0, 0, "\(sent)")
        XCTAssertGreaterThan(sent["crop_composite"] ?? 0, 0, "\(sent)")
        // The worker has read everything once it has seen both connections close.
        let samples = try await HTTPProbe.scrape(port: metricsPort) { $0["pspc_connections_open"] == 0 }
        XCTAssertEqual(samples["pspc_connections_open"], 0)
        for op in Set(sent.keys).union(["empirical", "crop_normalizers", "crop_composite", "moments", "health"]) {
            XCTAssertEqual(
                samples[#"pspc_requests_total{op="\#(op)"}"#], Double(sent[op] ?? 0), "op \(op): sent \(sent)")
        }
        XCTAssertGreaterThan(bytesSent, 0)
        XCTAssertEqual(samples["pspc_bytes_received_total"], Double(bytesSent))
        // A health check the coordinator sent just before closing may be answered after it stopped reading.
        let workerSent = try XCTUnwrap(samples["pspc_bytes_sent_total"])
        if sent["health", default: 0] == 0 {
            XCTAssertEqual(workerSent, Double(bytesReceived))
        } else {
            XCTAssertGreaterThanOrEqual(workerSent, Double(bytesReceived))
        }
        XCTAssertEqual(samples["pspc_queue_depth"], 0)

        // `pspc status` sends one health request; a wrong token is one authentication failure, and no request.
        try Data("a-wrong-token-0123456789abcdefgh".utf8).write(to: URL(fileURLWithPath: "\(work)/wrong"))
        let wrong = try JSONSerialization.data(withJSONObject: ["workers": [address], "tokenFile": "wrong"])
        try wrong.write(to: URL(fileURLWithPath: "\(work)/wrong.json"))
        try CommandRunner.succeed(["status", "--cluster", "\(work)/cluster.json"])
        XCTAssertEqual(try CommandRunner.run(["status", "--cluster", "\(work)/wrong.json"]).status, 1)
        let after = try await HTTPProbe.scrape(port: metricsPort) { $0["pspc_connections_open"] == 0 }
        XCTAssertEqual(after[#"pspc_requests_total{op="health"}"#], Double(sent["health", default: 0] + 1))
        XCTAssertEqual(after[#"pspc_handshake_failures_total{reason="authentication"}"#], 1)
        XCTAssertEqual(after[#"pspc_requests_total{op="empirical"}"#], samples[#"pspc_requests_total{op="empirical"}"#])

        input.fileHandleForWriting.closeFile()
        worker.waitUntilExit()
        XCTAssertEqual(worker.terminationStatus, 0)
    }

    /// Bytes and requests from `... received_bytes=R requests_sent=a:1,b:2 sent_bytes=S ... wire traffic`.
    static func parseTraffic(_ line: String) -> (sent: Int, received: Int, requests: [String: Int]) {
        var fields: [String: String] = [:]
        for word in line.split(separator: " ") {
            let parts = word.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        var requests: [String: Int] = [:]
        for item in (fields["requests_sent"] ?? "").split(separator: ",") {
            let parts = item.split(separator: ":")
            if parts.count == 2, let n = Int(parts[1]) { requests[String(parts[0])] = n }
        }
        return (Int(fields["sent_bytes"] ?? "") ?? -1, Int(fields["received_bytes"] ?? "") ?? -1, requests)
    }
}
