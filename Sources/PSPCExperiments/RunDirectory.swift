import Foundation
import PSPCData

/// One experiment's directory (docs/runs.md): config.json, finished units under parts/, final csv/json/npy
/// files and figures/. Units are written atomically, so a killed command re-run with the same directory
/// resumes from the last finished unit.
public struct RunDirectory: Sendable {
    public let path: String

    public init(_ path: String) { self.path = path }

    /// `path/components...`
    public func file(_ components: String...) -> String {
        components.reduce(path) { ($0 as NSString).appendingPathComponent($1) }
    }

    /// Creates the directory and writes `config`, or checks that an existing run was made with the same
    /// config (everything but `command`, which may differ in spelling). Returns whether the run already existed.
    @discardableResult
    public func prepare(config: JSONValue) throws -> Bool {
        let configPath = file("config.json")
        if FileManager.default.fileExists(atPath: configPath) {
            let existing = try RunDirectory.readJSON(configPath)
            if let difference = existing.firstDifference(from: config, ignoring: ["command"]) {
                throw DataError.invalid(
                    "\(path) holds a run with a different config (\(difference)); use another --out or remove it")
            }
            return true
        }
        try FileIO.createDirectory(file("parts"))
        try writeJSON(config, to: "config.json")
        return false
    }

    /// Locks the run for this process (see RunLock): a second command on the same run is refused while the
    /// first holds it.
    public func lock() throws -> RunLock { try RunLock(path) }

    /// The config this run was made with.
    public func config() throws -> JSONValue { try RunDirectory.readJSON(file("config.json")) }

    /// The run's kind (`sweep-forward`, `calibration`, ...), from config.json.
    public func kind() throws -> String {
        guard case .string(let kind)? = try config()["kind"] else {
            throw DataError.invalid("\(file("config.json")): no \"kind\"")
        }
        return kind
    }

    public var isComplete: Bool { FileManager.default.fileExists(atPath: file("done")) }

    public func markComplete() throws { try FileIO.writeAtomically(Array("done\n".utf8), to: file("done")) }

    // MARK: Units

    /// Whether unit `name` (a file under parts/) has finished.
    public func hasPart(_ name: String) -> Bool { FileManager.default.fileExists(atPath: file("parts", name)) }

    public func writePart(_ bytes: [UInt8], name: String) throws {
        try FileIO.createDirectory(file("parts"))
        try FileIO.writeAtomically(bytes, to: file("parts", name))
    }

    public func readPart(_ name: String) throws -> [UInt8] { try FileIO.read(file("parts", name)) }

    // MARK: Files

    /// Writes `bytes` to `relative` (creating its folders) atomically.
    public func write(_ bytes: [UInt8], to relative: String) throws {
        let full = file(relative)
        try FileIO.createDirectory((full as NSString).deletingLastPathComponent)
        try FileIO.writeAtomically(bytes, to: full)
    }

    public func writeText(_ text: String, to relative: String) throws { try write(Array(text.utf8), to: relative) }

    public func writeJSON(_ value: JSONValue, to relative: String) throws {
        try writeText(value.serialized(pretty: true) + "\n", to: relative)
    }

    public func writeNPY(_ array: NPYArray, to relative: String) throws {
        let full = file(relative)
        try FileIO.createDirectory((full as NSString).deletingLastPathComponent)
        try NPY.write(array, to: full)
    }

    public static func readJSON(_ path: String) throws -> JSONValue {
        let bytes = try FileIO.read(path)
        do {
            return try JSONValue.parse(bytes)
        } catch {
            throw DataError.corrupt(path: path, reason: "not valid JSON (\(error))")
        }
    }

    /// The runs named by `paths`: each is a run (holds config.json) or a parent of runs (its immediate
    /// subdirectories holding config.json, sorted by name).
    public static func discover(_ paths: [String]) throws -> [RunDirectory] {
        var runs: [RunDirectory] = []
        for path in paths {
            let run = RunDirectory(path)
            if FileManager.default.fileExists(atPath: run.file("config.json")) {
                runs.append(run)
                continue
            }
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw DataError.invalid("\(path): no such run directory")
            }
            let children = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
            let found = children.map { RunDirectory((path as NSString).appendingPathComponent($0)) }
                .filter { FileManager.default.fileExists(atPath: $0.file("config.json")) }
            guard !found.isEmpty else {
                throw DataError.invalid("\(path): neither a run (no config.json) nor a folder of runs")
            }
            runs += found
        }
        return runs
    }
}

/// Number formatting shared by every results file: the shortest text that reads back as the same Double.
public enum RunNumber {
    public static func text(_ value: Double) -> String {
        if value.isNaN { return "nan" }
        if value.isInfinite { return value > 0 ? "inf" : "-inf" }
        return value.description
    }
}
