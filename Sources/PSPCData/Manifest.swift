import Crypto
import Foundation
import PSPCCore

/// The JSON index of a sharded dataset: its shape, size and shard files with their SHA-256.
public struct Manifest: Codable, Sendable, Equatable {
    public static let fileName = "manifest.json"
    public static let formatName = "pspc-shards"

    public struct Shard: Codable, Sendable, Equatable {
        public var file: String
        public var first: Int
        public var count: Int
        public var bytes: Int
        public var sha256: String
    }

    public var format: String = Manifest.formatName
    public var version: Int = 1
    public var source: String
    public var shape: ImageShape
    public var count: Int
    public var shards: [Shard]

    /// The keys read as integers, named in errors when a file holds a fraction there.
    static let integerKeys: Set<String> = ["version", "count", "first", "bytes", "channels", "height", "width"]

    public static func read(directory: String) throws -> Manifest {
        let path = (directory as NSString).appendingPathComponent(fileName)
        let bytes = try FileIO.read(path)
        let manifest: Manifest
        do {
            manifest = try JSONDecoder().decode(Manifest.self, from: Data(bytes))
        } catch {
            throw DataError.corrupt(path: path, reason: "not a valid manifest: \(DecodingProblem.describe(error, json: bytes, integerKeys: integerKeys))")
        }
        guard manifest.format == formatName, manifest.version == 1 else {
            throw DataError.unsupported(
                path: path, reason: "manifest format \(manifest.format) version \(manifest.version)")
        }
        var next = 0
        for shard in manifest.shards {
            guard shard.first == next, shard.count >= 0 else {
                throw DataError.corrupt(
                    path: path, reason: "shard \(shard.file) starts at \(shard.first), expected \(next)")
            }
            next += shard.count
        }
        guard next == manifest.count else {
            throw DataError.corrupt(
                path: path, reason: "shards hold \(next) images, the manifest says \(manifest.count)")
        }
        return manifest
    }

    public func write(directory: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(self)
        try FileIO.writeAtomically(
            [UInt8](data) + [10], to: (directory as NSString).appendingPathComponent(Self.fileName))
    }

    /// SHA-256 over the shards' SHA-256s in order: one id for the whole dataset, so workers can tell they
    /// serve the same one.
    public var fingerprint: String { Self.sha256Hex(Array(shards.map(\.sha256).joined(separator: "\n").utf8)) }

    public static func sha256Hex(_ bytes: [UInt8]) -> String {
        SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }

    /// SHA-256 of a whole file, read in 1 MiB pieces.
    public static func sha256Hex(_ file: ReadableFile) throws -> String {
        var hash = SHA256()
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        var position = 0
        while position < file.size {
            let n = min(chunk.count, file.size - position)
            try file.read(at: position, into: &chunk, from: 0, count: n)
            hash.update(data: chunk[0..<n])
            position += n
        }
        return hash.finalize().map { String(format: "%02x", $0) }.joined()
    }
}
