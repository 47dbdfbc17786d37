import Foundation
import Yams

/// The coordinator's description of a cluster (`--cluster FILE`, YAML or JSON):
/// ```
/// workers: [node1:7070, node2:7070, node3:7070]
/// tokenFile: token          # relative to this file, or absolute
/// deadlineSeconds: 300      # a worker slower than this on one request is skipped for its replica (default 300)
/// retrySeconds: 5           # how often a worker that failed is tried again
/// ```
/// Shard placement comes from what each worker reports at the handshake.
public struct ClusterFile: Codable, Sendable, Equatable {
    public var workers: [String]
    public var tokenFile: String
    public var replication: Int?
    public var deadlineSeconds: Double?
    public var inFlightPerWorker: Int?
    public var retrySeconds: Double?

    public init(
        workers: [String], tokenFile: String, replication: Int? = nil, deadlineSeconds: Double? = nil,
        inFlightPerWorker: Int? = nil
    ) {
        self.workers = workers
        self.tokenFile = tokenFile
        self.replication = replication
        self.deadlineSeconds = deadlineSeconds
        self.inFlightPerWorker = inFlightPerWorker
    }

    public static func read(_ path: String) throws -> ClusterFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ClusterError.invalidConfiguration("\(path): cannot read the cluster file")
        }
        let file: ClusterFile
        do {
            // YAML 1.2 reads JSON too.
            file = try YAMLDecoder().decode(ClusterFile.self, from: data)
        } catch {
            throw ClusterError.invalidConfiguration("\(path): not a valid cluster file (\(error))")
        }
        if let deadline = file.deadlineSeconds { try checkSeconds(deadline, name: "\(path): deadlineSeconds") }
        if let retry = file.retrySeconds { try checkSeconds(retry, name: "\(path): retrySeconds") }
        guard !file.workers.isEmpty else { throw ClusterError.invalidConfiguration("\(path): no workers listed") }
        for address in file.workers { _ = try HostPort(address) }
        // A relative token path is relative to the cluster file.
        var resolved = file
        if !file.tokenFile.hasPrefix("/") {
            resolved.tokenFile =
                URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent(file.tokenFile).path
        }
        return resolved
    }
}

extension ClusterFile {
    /// The default of `deadlineSeconds` (and of `--deadline`), documented in the README.
    public static let defaultDeadlineSeconds = 300.0
    /// The longest deadline or retry interval accepted: one day.
    public static let maximumSeconds = 86_400.0

    /// Refuses a time in seconds that is not finite, not positive or above a day (nan and inf crashed the
    /// coordinator's timers): `name` says which option or key.
    public static func checkSeconds(_ value: Double, name: String) throws {
        guard value.isFinite, value > 0, value <= maximumSeconds else {
            throw ClusterError.invalidConfiguration(
                "\(name) must be a finite number of seconds in (0, \(Int(maximumSeconds))], got \(value)")
        }
    }
}

/// `HOST:PORT` (IPv6 as `[::1]:PORT`).
public struct HostPort: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init(_ text: String) throws {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            port >= 0, port < 65536
        else {
            throw ClusterError.invalidConfiguration("'\(text)' is not HOST:PORT")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw ClusterError.invalidConfiguration("'\(text)' has no host") }
        self.init(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Reads a shared cluster token: the file's bytes, trailing whitespace removed; at least 16 bytes.
public func readClusterToken(_ path: String) throws -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw ClusterError.invalidConfiguration("\(path): cannot read the token file")
    }
    var bytes = [UInt8](data)
    while let last = bytes.last, last == 10 || last == 13 || last == 32 || last == 9 { bytes.removeLast() }
    guard bytes.count >= 16 else {
        throw ClusterError.invalidConfiguration("\(path): the token must be at least 16 bytes")
    }
    return bytes
}
