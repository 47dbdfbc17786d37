import Foundation
import PSPCCore
import PSPCData
import PSPCTestSupport
import XCTest

/// Real `pspc worker` processes behind `pspc denoise --cluster`: one killed with SIGKILL or frozen with
/// SIGSTOP in the middle of a 1000-query run (replication 2) changes nothing in the output, bit for bit;
/// with replication 1 a killed worker stops the run with the lost shards named and no output written.
final class FaultToleranceTests: XCTestCase {
    var work = ""
    var workers: [Process] = []

    override func setUpWithError() throws {
        work = try CommandRunner.temporaryDirectory("faults")
        try CommandRunner.succeed([
            "ingest", "--source", "fashion-mnist:train", "--limit", "1000", "--shards", "7", "--out", "\(work)/data",
        ])
        try CommandRunner.succeed([
            "queries", "--source", "fashion-mnist:test", "--t", "1.09", "--count", "1000", "--out", "\(work)/q",
        ])
        try Data("fault-test-token-0123456789abcdef".utf8).write(to: URL(fileURLWithPath: "\(work)/token"))
    }

    override func tearDownWithError() throws {
        for worker in workers where worker.isRunning {
            kill(worker.processIdentifier, SIGCONT)
            kill(worker.processIdentifier, SIGKILL)
            worker.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: work)
    }

    var addresses: [String] = []

    /// Starts worker `i` of `n` (placement i/n/r) listening on `address` and returns the address it announced.
    func startWorker(
        _ i: Int, of n: Int, replication: Int, address: String = "127.0.0.1:0", data: String? = nil
    ) throws -> String {
        let process = Process()
        process.executableURL = CommandRunner.binary
        process.arguments = [
            "worker", "--listen", address, "--data", data ?? "\(work)/data", "--placement", "\(i)/\(n)/\(replication)",
            "--token-file", "\(work)/token", "--threads", "1",
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
        let text = String(decoding: line, as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("pspc worker listening on "), text)
        return String(text.dropFirst("pspc worker listening on ".count))
    }

    /// Starts `n` workers with placement i/n/r and writes a cluster file naming them (YAML when asked).
    func startWorkers(
        _ n: Int, replication: Int, deadline: Double, retry: Double = 5, yaml: Bool = false, data: String? = nil
    ) throws -> String {
        addresses = try (0..<n).map { try startWorker($0, of: n, replication: replication, data: data) }
        let file = "\(work)/cluster-\(n)-\(replication).\(yaml ? "yaml" : "json")"
        if yaml {
            let text = """
                # written by FaultToleranceTests
                workers:
                \(addresses.map { "  - \($0)" }.joined(separator: "\n"))
                tokenFile: token
                deadlineSeconds: \(deadline)
                retrySeconds: \(retry)

                """
            try Data(text.utf8).write(to: URL(fileURLWithPath: file))
            return file
        }
        let json = try JSONSerialization.data(withJSONObject: [
            "workers": addresses, "tokenFile": "token", "deadlineSeconds": deadline, "retrySeconds": retry,
        ])
        try json.write(to: URL(fileURLWithPath: file))
        return file
    }

    func denoiseArguments(
        cluster: String, output: String, method: [String] = ["pspc-square", "--patch-size", "5"],
        input: String? = nil, batchSize: Int = 25
    ) -> [String] {
        ["denoise", "--cluster", cluster, "--method"] + method + [
            "--t", "1.09", "--input", input ?? "\(work)/q/z.npy", "--output", output, "--batch-size", "\(batchSize)",
        ]
    }

    /// Runs a denoise in the background, applies `fault` to worker `victim` once a fraction of the fault-free
    /// duration has passed, and returns the finished process's result.
    func runWithFault(
        cluster: String, output: String, method: [String] = ["pspc-square", "--patch-size", "5"],
        input: String? = nil, batchSize: Int = 25, faultAfter seconds: Double, fault: () -> Void
    ) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = CommandRunner.binary
        process.arguments = denoiseArguments(
            cluster: cluster, output: output, method: method, input: input, batchSize: batchSize)
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        Thread.sleep(forTimeInterval: seconds)
        XCTAssertTrue(process.isRunning, "the run ended before the fault: make it longer")
        fault()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: stderr, as: UTF8.self))
    }

    func timed(_ body: () throws -> Void) rethrows -> Double {
        let start = Date()
        try body()
        return Date().timeIntervalSince(start)
    }

    /// A worker killed with SIGKILL 40% into a run of `method` (replication 2): the replica answers, same bits.
    func checkKilledWorkerChangesNothing(
        method: [String], data: String? = nil, input: String? = nil, batchSize: Int = 25
    ) throws {
        let cluster = try startWorkers(3, replication: 2, deadline: 60, data: data)
        let duration = try timed {
            try CommandRunner.succeed(
                denoiseArguments(
                    cluster: cluster, output: "\(work)/clean.npy", method: method, input: input, batchSize: batchSize))
        }
        let (status, stderr) = try runWithFault(
            cluster: cluster, output: "\(work)/faulted.npy", method: method, input: input, batchSize: batchSize,
            faultAfter: duration * 0.4
        ) {
            kill(workers[1].processIdentifier, SIGKILL)
        }
        XCTAssertEqual(status, 0, stderr)
        XCTAssertTrue(stderr.contains("is down"), "the coordinator should report the failover: \(stderr)")
        XCTAssertEqual(
            try Data(contentsOf: URL(fileURLWithPath: "\(work)/faulted.npy")),
            try Data(contentsOf: URL(fileURLWithPath: "\(work)/clean.npy")), "output differs after a worker died")
    }

    func testKilledWorkerWithReplicationTwoChangesNothing() throws {
        try checkKilledWorkerChangesNothing(method: ["pspc-square", "--patch-size", "5"])
    }

    /// The LS machine's window_posterior op fails over like the crop ops.
    func testKilledWorkerDuringAnLSRunChangesNothing() throws {
        try checkKilledWorkerChangesNothing(method: ["ls", "--patch-size", "5"])
    }

    /// ELS as well, on a smaller set (its candidates are every window position of every image): 150 images in
    /// 6 shards (300 with x-flip), 48 queries in batches of 4.
    func testKilledWorkerDuringAnELSRunChangesNothing() throws {
        try CommandRunner.succeed([
            "ingest", "--source", "fashion-mnist:train", "--limit", "150", "--shards", "6", "--out", "\(work)/small",
        ])
        try CommandRunner.succeed([
            "queries", "--source", "fashion-mnist:test", "--t", "1.09", "--count", "48", "--out", "\(work)/q48",
        ])
        try checkKilledWorkerChangesNothing(
            method: ["els", "--patch-size", "3"], data: "\(work)/small", input: "\(work)/q48/z.npy", batchSize: 4)
    }

    func testStoppedWorkerHitsTheDeadlineAndTheReplicaAnswers() throws {
        let cluster = try startWorkers(3, replication: 2, deadline: 2)
        let duration = try timed {
            try CommandRunner.succeed(denoiseArguments(cluster: cluster, output: "\(work)/clean.npy"))
        }
        let (status, stderr) = try runWithFault(
            cluster: cluster, output: "\(work)/stopped.npy", faultAfter: duration * 0.4
        ) {
            kill(workers[0].processIdentifier, SIGSTOP)
        }
        XCTAssertEqual(status, 0, stderr)
        XCTAssertTrue(stderr.contains("did not answer within 2"), "the deadline should fire: \(stderr)")
        XCTAssertEqual(
            try Data(contentsOf: URL(fileURLWithPath: "\(work)/stopped.npy")),
            try Data(contentsOf: URL(fileURLWithPath: "\(work)/clean.npy")), "output differs after a worker hung")
    }

    func testRestartedWorkerIsTakenBack() throws {
        let cluster = try startWorkers(3, replication: 2, deadline: 60, retry: 0.3, yaml: true)
        let duration = try timed {
            try CommandRunner.succeed(denoiseArguments(cluster: cluster, output: "\(work)/clean.npy"))
        }
        let (status, stderr) = try runWithFault(
            cluster: cluster, output: "\(work)/restarted.npy", faultAfter: duration * 0.25
        ) {
            kill(workers[1].processIdentifier, SIGKILL)
            workers[1].waitUntilExit()
            // The same worker comes back on the same address.
            XCTAssertEqual(try? startWorker(1, of: 3, replication: 2, address: addresses[1]), addresses[1])
        }
        XCTAssertEqual(status, 0, stderr)
        XCTAssertTrue(stderr.contains("is down"), stderr)
        XCTAssertTrue(
            stderr.contains("worker \(addresses[1]) is back"), "the restarted worker should be used again: \(stderr)")
        XCTAssertEqual(
            try Data(contentsOf: URL(fileURLWithPath: "\(work)/restarted.npy")),
            try Data(contentsOf: URL(fileURLWithPath: "\(work)/clean.npy")))
    }

    /// Before: the reconnection never looked at the dataset again, so the restarted worker's answers (another
    /// training set of the same shape and shard sizes) changed the output, exit 0.
    func testWorkerRestartedWithAnotherDatasetIsRefusedAndTheReplicaKeepsTheBits() throws {
        try CommandRunner.succeed([
            "ingest", "--source", "fashion-mnist:test", "--limit", "1000", "--shards", "7", "--out", "\(work)/other",
        ])
        let cluster = try startWorkers(3, replication: 2, deadline: 60, retry: 0.3)
        let duration = try timed {
            try CommandRunner.succeed(denoiseArguments(cluster: cluster, output: "\(work)/clean.npy"))
        }
        let (status, stderr) = try runWithFault(
            cluster: cluster, output: "\(work)/swapped.npy", faultAfter: duration * 0.25
        ) {
            kill(workers[1].processIdentifier, SIGKILL)
            workers[1].waitUntilExit()
            XCTAssertEqual(
                try? startWorker(1, of: 3, replication: 2, address: addresses[1], data: "\(work)/other"), addresses[1])
        }
        XCTAssertEqual(status, 0, stderr)
        XCTAssertTrue(
            stderr.contains("worker \(addresses[1]) is refused and not used: it serves another dataset"), stderr)
        XCTAssertFalse(stderr.contains("worker \(addresses[1]) is back"), stderr)
        XCTAssertEqual(
            try Data(contentsOf: URL(fileURLWithPath: "\(work)/swapped.npy")),
            try Data(contentsOf: URL(fileURLWithPath: "\(work)/clean.npy")), "the other dataset changed the output")
    }

    /// `pspc status`: every worker and every shard's live replicas; exit 1 once a shard has none, or when a
    /// worker serves another dataset.
    func testStatusBeforeAndAfterWorkersAreKilled() throws {
        let cluster = try startWorkers(3, replication: 2, deadline: 60)
        let healthy = try CommandRunner.run(["status", "--cluster", cluster])
        XCTAssertEqual(healthy.status, 0, healthy.stderr)
        for address in addresses { XCTAssertTrue(healthy.stdout.contains("worker \(address)  up  "), healthy.stdout) }
        XCTAssertTrue(healthy.stdout.hasSuffix("status: ok\n"), healthy.stdout)
        print("pspc status, 3 workers up:\n\(healthy.stdout)")

        kill(workers[1].processIdentifier, SIGKILL)
        workers[1].waitUntilExit()
        let oneDown = try CommandRunner.run(["status", "--cluster", cluster])
        XCTAssertEqual(oneDown.status, 0, "replication 2 survives one worker: \(oneDown.stdout)")
        XCTAssertTrue(oneDown.stdout.contains("worker \(addresses[1])  down  cannot connect"), oneDown.stdout)
        print("pspc status, worker 1 killed (exit \(oneDown.status)):\n\(oneDown.stdout)")

        kill(workers[2].processIdentifier, SIGKILL)
        workers[2].waitUntilExit()
        let twoDown = try CommandRunner.run(["status", "--cluster", cluster, "--json"])
        XCTAssertEqual(twoDown.status, 1)
        let report = try JSONSerialization.jsonObject(with: Data(twoDown.stdout.utf8)) as! [String: Any]
        // Placement i/3/2: worker 0 holds shards k with k % 3 in {0, 2}; shards 1 and 4 were on workers 1 and 2.
        XCTAssertEqual(report["lostShards"] as? [Int], [1, 4])
        XCTAssertEqual(report["ok"] as? Bool, false)
        print("pspc status --json, workers 1 and 2 killed (exit \(twoDown.status)): lost \(report["lostShards"]!)")

        try CommandRunner.succeed([
            "ingest", "--source", "fashion-mnist:test", "--limit", "1000", "--shards", "7", "--out", "\(work)/other",
        ])
        _ = try startWorker(1, of: 3, replication: 2, address: addresses[1], data: "\(work)/other")
        let wrong = try CommandRunner.run(["status", "--cluster", cluster])
        XCTAssertEqual(wrong.status, 1)
        XCTAssertTrue(wrong.stdout.contains("status: worker \(addresses[1]) serves another dataset"), wrong.stdout)
    }

    func testKilledWorkerWithoutReplicaNamesLostShardsAndWritesNothing() throws {
        let cluster = try startWorkers(3, replication: 1, deadline: 60)
        let duration = try timed {
            try CommandRunner.succeed(denoiseArguments(cluster: cluster, output: "\(work)/clean.npy"))
        }
        let (status, stderr) = try runWithFault(
            cluster: cluster, output: "\(work)/lost.npy", faultAfter: duration * 0.4
        ) {
            kill(workers[2].processIdentifier, SIGKILL)
        }
        XCTAssertNotEqual(status, 0)
        // Worker 2 of 3 with replication 1 holds shards 2 and 5.
        XCTAssertTrue(stderr.contains("pspc: error: shards lost: 2, 5"), stderr)
        XCTAssertFalse(
            FileManager.default.fileExists(atPath: "\(work)/lost.npy"), "an output was written despite lost shards")
    }
}
