import Foundation
import PSPCTestSupport
import XCTest

/// Every command that writes into a run folder takes its lock for the whole write: while a second process
/// holds RUN/.lock (flock(1), the same kind of lock as `RunLock`'s flock(2)), `pspc calibrate`, `pspc report`,
/// `pspc heatmap` and `pspc sample --compare` on that folder exit non-zero naming the locked folder, and leave
/// every file in it as it was. Once the holder exits, the same commands run.
final class RunFolderLockTests: XCTestCase {
    /// A second process holding the lock of `folder` until `release()`: a shell that takes it on an inherited
    /// descriptor with flock(1), says so, then becomes `cat` reading a pipe, which ends when the pipe closes.
    final class LockHolder {
        let process = Process()
        let input = Pipe()
        let output = Pipe()

        init(_ folder: String) throws {
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = [
                "-c", "exec 9>>\"$1/.lock\" && flock -n 9 && echo locked && exec cat >/dev/null", "holder", folder,
            ]
            process.standardInput = input
            process.standardOutput = output
            try process.run()
            let line = String(decoding: output.fileHandleForReading.readData(ofLength: 7), as: UTF8.self)
            guard line == "locked\n" else { throw HolderError(folder: folder) }
        }

        func release() {
            try? input.fileHandleForWriting.close()
            process.waitUntilExit()
        }
    }

    struct HolderError: Error, CustomStringConvertible {
        var folder: String
        var description: String { "a second process could not lock \(folder)" }
    }

    /// Every file under `folder` (relative path -> bytes), to show a refused command wrote nothing.
    static func snapshot(_ folder: String) -> [String: Data] {
        var files: [String: Data] = [:]
        let enumerator = FileManager.default.enumerator(atPath: folder)
        while let relative = enumerator?.nextObject() as? String {
            var isDirectory: ObjCBool = false
            let full = folder + "/" + relative
            _ = FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory)
            files[relative] = isDirectory.boolValue ? Data("<folder>".utf8) : FileManager.default.contents(atPath: full)
        }
        return files
    }

    /// A finished forward sweep with pspc-square candidates at two t, written as a sweep writes it.
    static func writeSweep(_ folder: String) throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let config = #"{"kind": "sweep-forward", "version": 1, "grid": [2.0, 1.0], "methods": ["pspc-square"]}"#
        var results = "t_index,t,method,param,label,mse_to_network,mse_to_x0,queries\n"
        for (i, t) in ["2.0", "1.0"].enumerated() {
            results += "\(i),\(t),network,,network,0.0,0.5,4\n"
            results += "\(i),\(t),pspc-square,3,pspc-square s=3,0.25,0.5,4\n"
            results += "\(i),\(t),pspc-square,5,pspc-square s=5,0.125,0.5,4\n"
        }
        try Data((config + "\n").utf8).write(to: URL(fileURLWithPath: folder + "/config.json"))
        try Data(results.utf8).write(to: URL(fileURLWithPath: folder + "/results.csv"))
        try Data("done\n".utf8).write(to: URL(fileURLWithPath: folder + "/done"))
    }

    func assertRefused(
        _ arguments: [String], locked folder: String, file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let before = Self.snapshot(folder)
        let result = try CommandRunner.run(arguments)
        let command = "pspc " + arguments.joined(separator: " ")
        XCTAssertNotEqual(result.status, 0, "\(command) ran while \(folder) was locked", file: file, line: line)
        XCTAssertFalse(result.crashed, command, file: file, line: line)
        XCTAssertTrue(
            result.stderr.contains("run folder \(folder) is in use by another pspc process"),
            "\(command): \(result.stderr)", file: file, line: line)
        XCTAssertEqual(Self.snapshot(folder), before, "\(command) changed \(folder)", file: file, line: line)
    }

    func testEveryRunWriterIsRefusedWhileAnotherProcessHoldsTheLock() throws {
        let work = try CommandRunner.temporaryDirectory("run-lock")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let sweep = work + "/sweep"
        try Self.writeSweep(sweep)

        // The sweep run is locked: calibrate's default output (sweep/calibration) and report's (sweep/report)
        // lie inside it.
        let sweepHolder = try LockHolder(sweep)
        try assertRefused(["calibrate", sweep], locked: sweep)
        try assertRefused(["report", sweep], locked: sweep)
        sweepHolder.release()

        // The output runs themselves are locked.
        let calibration = work + "/calibration"
        let heatmap = work + "/heatmap"
        let compare = work + "/compare"
        for folder in [calibration, heatmap, compare] {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            try Data("an earlier run's file\n".utf8).write(to: URL(fileURLWithPath: folder + "/notes.txt"))
        }
        let holders = try [calibration, heatmap, compare].map { try LockHolder($0) }
        try assertRefused(["calibrate", sweep, "--out", calibration], locked: calibration)
        try assertRefused(["heatmap", "--grid", "1.0", "--samples", "1", "--out", heatmap], locked: heatmap)
        try assertRefused(
            ["sample", "--compare", "--methods", "empirical,gaussian", "--data", work + "/no-data", "--out", compare],
            locked: compare)
        for holder in holders { holder.release() }

        // With the holders gone the same commands write their runs.
        try CommandRunner.succeed(["calibrate", sweep])
        XCTAssertTrue(FileManager.default.fileExists(atPath: sweep + "/calibration/best.csv"))
        try CommandRunner.succeed(["calibrate", sweep, "--out", calibration])
        XCTAssertTrue(FileManager.default.fileExists(atPath: calibration + "/best.csv"))
        // The report of the calibration run goes inside it (calibration/report/): refused while it is locked.
        let inner = sweep + "/calibration"
        let innerHolder = try LockHolder(inner)
        try assertRefused(["report", inner], locked: inner)
        innerHolder.release()
        try CommandRunner.succeed(["report", inner])
        XCTAssertTrue(FileManager.default.fileExists(atPath: inner + "/report/index.html"))
    }
}
