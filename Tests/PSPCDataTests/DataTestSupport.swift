import Foundation
import PSPCData
import XCTest

/// Temporary directories, python3 fixture scripts and DataError assertions for the data tests.
enum DataTestSupport {
    enum Kind: String { case io, corrupt, unsupported, invalid }

    struct PythonFailed: Error, CustomStringConvertible {
        var status: Int32
        var stderr: String
        var description: String { "python3 fixture script exited \(status): \(stderr)" }
    }

    static func makeTemporaryDirectory() throws -> String {
        let path = (NSTemporaryDirectory() as NSString).appendingPathComponent("pspc-data-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Runs `script` with `python3 -c` (the independent implementation that writes fixtures); skips the
    /// test when python3 is not installed.
    static func runPython(_ script: String, arguments: [String] = []) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script] + arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw PythonFailed(status: -1, stderr: "cannot start python3 (scripts/setup.sh installs it): \(error)")
        }
        let stderr = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        if process.terminationStatus == 127 {
            throw PythonFailed(status: 127, stderr: "python3 is not installed (scripts/setup.sh installs it)")
        }
        guard process.terminationStatus == 0 else {
            throw PythonFailed(status: process.terminationStatus, stderr: String(decoding: stderr, as: UTF8.self))
        }
    }

    /// The fixtures need numpy for python3 (scripts/setup.sh installs it); its absence fails the test.
    static func requireNumpy() throws {
        try runPython("import numpy")
    }

    /// Asserts that `expression` throws the DataError case `kind` whose message contains every fragment.
    static func assertThrows<T>(
        _ expression: @autoclosure () throws -> T, _ kind: Kind, mentioning fragments: [String],
        file: StaticString = #filePath, line: UInt = #line
    ) {
        do {
            _ = try expression()
            XCTFail("expected a \(kind) error, nothing was thrown", file: file, line: line)
        } catch let error as DataError {
            let actual: Kind
            switch error {
            case .io: actual = .io
            case .corrupt: actual = .corrupt
            case .unsupported: actual = .unsupported
            case .invalid: actual = .invalid
            }
            XCTAssertEqual(actual, kind, "\(error)", file: file, line: line)
            for fragment in fragments {
                XCTAssertTrue(
                    error.description.contains(fragment), "'\(error)' does not mention '\(fragment)'", file: file,
                    line: line)
            }
        } catch {
            XCTFail("expected a DataError, got \(error)", file: file, line: line)
        }
    }
}
