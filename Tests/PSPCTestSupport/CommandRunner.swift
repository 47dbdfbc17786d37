import Foundation
import XCTest

/// Runs the built `pspc` binary (next to the test bundle) and captures its exit status and output.
public struct CommandRunner {
    public struct Result {
        public var status: Int32
        public var stdout: String
        public var stderr: String
        /// True when the process ended by a signal (a crash), not an exit.
        public var crashed: Bool
    }

    public static var binary: URL {
        if let path = ProcessInfo.processInfo.environment["PSPC_BINARY"] { return URL(fileURLWithPath: path) }
        // The test bundle sits in the build products folder beside the binary.
        let bundle = Bundle.main.bundleURL
        var candidates = [bundle, bundle.deletingLastPathComponent()]
        if let executable = Bundle.main.executableURL {
            candidates.insert(executable.deletingLastPathComponent(), at: 0)
        }
        for candidate in candidates {
            let url = candidate.appendingPathComponent("pspc")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        return bundle.appendingPathComponent("pspc")
    }

    @discardableResult
    public static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(
            status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self), crashed: process.terminationReason == .uncaughtSignal)
    }

    /// Runs and fails the test unless the command succeeds.
    @discardableResult
    public static func succeed(
        _ arguments: [String], environment: [String: String] = [:], file: StaticString = #filePath,
        line: UInt = #line
    ) throws -> Result {
        let result = try run(arguments, environment: environment)
        XCTAssertEqual(
            result.status, 0, "pspc \(arguments.joined(separator: " ")) failed: \(result.stderr)", file: file,
            line: line)
        return result
    }

    public static func temporaryDirectory(_ name: String) throws -> String {
        let path = NSTemporaryDirectory() + "pspc-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Runs a Python snippet (standard library and numpy) for fixtures made by an independent tool.
    public static func python(_ code: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", code]
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "python fixture failed")
    }
}

extension CommandRunner {
    /// Command lines of running processes (from /proc) that contain `text`, this test process excluded.
    public static func processes(matching text: String) throws -> [String] {
        var found: [String] = []
        for entry in try FileManager.default.contentsOfDirectory(atPath: "/proc") {
            guard let pid = Int32(entry), pid != getpid(),
                let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"), !data.isEmpty
            else { continue }
            let line = String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            if line.contains(text) { found.append(line) }
        }
        return found
    }
}
