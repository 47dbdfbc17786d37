import Foundation
import PSPCTestSupport
import XCTest

/// Real hosts: three network namespaces joined to this one by veth links (scripts/netns.sh), a `pspc worker`
/// process in each at its own address. The cluster's answers equal the in-process ones bit for bit; a host cut
/// off in the middle of a run (its link set down: no reset, no FIN, only silence) is noticed by its missed
/// heartbeats and the run ends with the same bits through the replicas; links limited by a token bucket change
/// nothing but the time.
final class NamespaceHostsTests: XCTestCase {
    var work = ""
    var workers: [Process] = []
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/netns.sh").path

    override func setUpWithError() throws {
        work = try CommandRunner.temporaryDirectory("netns")
        try CommandRunner.succeed([
            "ingest", "--source", "fashion-mnist:train", "--limit", "1000", "--shards", "7", "--out", "\(work)/data",
        ])
        try CommandRunner.succeed([
            "queries", "--source", "fashion-mnist:test", "--t", "1.09", "--count", "600", "--out", "\(work)/q",
        ])
        try Data("netns-test-token-0123456789abcdef".utf8).write(to: URL(fileURLWithPath: "\(work)/token"))
        try CommandRunner.succeed(denoise(["--data", "\(work)/data"], output: "\(work)/in-process.npy"))
    }

    override func tearDownWithError() throws {
        for worker in workers where worker.isRunning {
            kill(worker.processIdentifier, SIGKILL)
            worker.waitUntilExit()
        }
        try Self.hosts(["down"])
        try? FileManager.default.removeItem(atPath: work)
    }

    static func hosts(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script] + arguments
        let err = Pipe()
        process.standardError = err
        try process.run()
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw NSError(
                domain: "netns", code: Int(process.terminationStatus),
                userInfo: [NSLocalizedDescriptionKey: "scripts/netns.sh \(arguments.joined(separator: " ")): \(message)"])
        }
    }

    func denoise(_ source: [String], output: String) -> [String] {
        ["denoise"] + source + [
            "--method", "pspc-square", "--patch-size", "5", "--t", "1.09", "--input", "\(work)/q/z.npy",
            "--output", output, "--batch-size", "25",
        ]
    }

    /// Starts `pspc worker` i of n (placement i/n/2) inside host i + 1; returns the cluster file naming them.
    func startWorkers(_ n: Int) throws -> String {
        var addresses: [String] = []
        for i in 0..<n {
            let address = "10.77.\(i + 1).2:7070"
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            process.arguments = [
                "netns", "exec", "pspc-h\(i + 1)", CommandRunner.binary.path, "worker", "--listen", address, "--data",
                "\(work)/data", "--placement", "\(i)/\(n)/2", "--token-file", "\(work)/token", "--threads", "1",
            ]
            let out = Pipe()
            process.standardOutput = out
            process.standardError = FileHandle.nullDevice
            try process.run()
            workers.append(process)
            var line = Data()
            while let byte = try out.fileHandleForReading.read(upToCount: 1), !byte.isEmpty, byte != Data([10]) {
                line += byte
            }
            XCTAssertEqual(String(decoding: line, as: UTF8.self), "pspc worker listening on \(address)")
            addresses.append(address)
        }
        let file = "\(work)/cluster.json"
        let json = try JSONSerialization.data(withJSONObject: [
            "workers": addresses, "tokenFile": "token", "deadlineSeconds": 120, "retrySeconds": 1,
        ])
        try json.write(to: URL(fileURLWithPath: file))
        return file
    }

    func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    func testHostsMatchInProcessAndAHostCutOffMidRunChangesNothing() throws {
        try Self.hosts(["up", "3"])
        let cluster = try startWorkers(3)
        let started = Date()
        try CommandRunner.succeed(denoise(["--cluster", cluster], output: "\(work)/clean.npy"))
        let duration = Date().timeIntervalSince(started)
        XCTAssertEqual(try bytes("\(work)/clean.npy"), try bytes("\(work)/in-process.npy"))

        let process = Process()
        process.executableURL = CommandRunner.binary
        process.arguments = denoise(["--cluster", cluster], output: "\(work)/cut.npy")
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        let cutStarted = Date()
        try process.run()
        Thread.sleep(forTimeInterval: duration * 0.3)
        XCTAssertTrue(process.isRunning, "the run ended before the cut: make it longer")
        try Self.hosts(["cut", "2"])
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        print(
            "netns: 3 hosts, 600 queries pspc-square s=5: \(String(format: "%.2f", duration)) s fault-free, \(String(format: "%.2f", Date().timeIntervalSince(cutStarted))) s with host 2 cut off at 30 %"
        )
        XCTAssertEqual(process.terminationStatus, 0, stderr)
        XCTAssertTrue(stderr.contains("worker 10.77.2.2:7070 is down"), stderr)
        XCTAssertEqual(try bytes("\(work)/cut.npy"), try bytes("\(work)/in-process.npy"), "the cut changed the output")
    }

    func testLinksLimitedByATokenBucketGiveTheSameBits() throws {
        try Self.hosts(["up", "3", "40mbit"])
        let cluster = try startWorkers(3)
        let started = Date()
        try CommandRunner.succeed(denoise(["--cluster", cluster], output: "\(work)/limited.npy"))
        print("netns: 3 hosts behind 40 Mbit/s token buckets: \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
        XCTAssertEqual(try bytes("\(work)/limited.npy"), try bytes("\(work)/in-process.npy"))
    }
}
