import Foundation
import PSPCCore

/// A directory of shard files and their manifest: writing one from images, and reading shards back with
/// every check (size, header, per-block CRC, SHA-256 against the manifest).
public enum ShardStore {
    public static func shardFileName(_ index: Int, of total: Int) -> String {
        String(format: "shard-%05d-of-%05d.pspc", index, total)
    }

    /// Splits `images` into `shards` contiguous parts (sizes differ by at most one) and writes them with a
    /// manifest. `progress(done, total)` counts shards written.
    @discardableResult
    public static func write(
        _ images: ImageArray, shards: Int, to directory: String, source: String,
        progress: ((Int, Int) -> Void)? = nil
    ) throws -> Manifest {
        try write(ImageStream(images), shards: shards, to: directory, source: source, progress: progress)
    }

    /// Writes the images of `stream` as `write(_ images:)` does, reading them one at a time: each shard file
    /// is filled block by block as images arrive, so memory holds one block, whatever the dataset's size.
    /// `progress(done, total)` counts shards written; `imageProgress(done, total)`, when given, images read.
    @discardableResult
    public static func write(
        _ stream: ImageStream, shards: Int, to directory: String, source: String,
        progress: ((Int, Int) -> Void)? = nil, imageProgress: ((Int, Int) -> Void)? = nil
    ) throws -> Manifest {
        guard shards >= 1 else { throw DataError.invalid("--shards must be at least 1, got \(shards)") }
        let count = stream.count - stream.position
        guard count >= shards else {
            throw DataError.invalid("cannot split \(count) images into \(shards) shards")
        }
        try FileIO.createDirectory(directory)
        var entries: [Manifest.Shard] = []
        var done = 0
        for k in 0..<shards {
            let lo = k * count / shards, hi = (k + 1) * count / shards
            let name = shardFileName(k, of: shards)
            let writer = try ShardWriter(
                path: (directory as NSString).appendingPathComponent(name), shape: stream.shape, count: hi - lo,
                firstIndex: lo)
            for _ in lo..<hi {
                try writer.append(from: stream)
                done += 1
                imageProgress?(done, count)
            }
            let (bytes, sha256) = try writer.finish()
            entries.append(Manifest.Shard(file: name, first: lo, count: hi - lo, bytes: bytes, sha256: sha256))
            progress?(k + 1, shards)
        }
        let manifest = Manifest(source: source, shape: stream.shape, count: count, shards: entries)
        try manifest.write(directory: directory)
        return manifest
    }

    /// Reads and verifies one shard of `manifest`.
    public static func readShard(_ shard: Manifest.Shard, manifest: Manifest, directory: String) throws -> ImageArray {
        let path = (directory as NSString).appendingPathComponent(shard.file)
        guard FileManager.default.fileExists(atPath: path) else {
            throw DataError.io(path: path, reason: "shard named in the manifest is missing")
        }
        // Read at offsets, block by block: memory holds the shard's images, not its file as well.
        let file = try ReadableFile(path: path)
        guard file.size == shard.bytes else {
            throw DataError.corrupt(
                path: path,
                reason:
                    "\(file.size) bytes, the manifest says \(shard.bytes)\(file.size < shard.bytes ? " (truncated)" : "")"
            )
        }
        let (header, images) = try ShardFile.decode(file)
        guard try Manifest.sha256Hex(file) == shard.sha256 else {
            throw DataError.corrupt(path: path, reason: "SHA-256 does not match the manifest")
        }
        guard header.shape == manifest.shape, header.count == shard.count, header.firstIndex == shard.first else {
            throw DataError.corrupt(
                path: path,
                reason:
                    "header (\(header.count) \(header.shape) images from \(header.firstIndex)) disagrees with the manifest"
            )
        }
        return images
    }

    /// Every shard of a dataset directory, in order, verified.
    public static func readAll(directory: String, progress: ((Int, Int) -> Void)? = nil) throws -> (
        Manifest, [ImageArray]
    ) {
        let manifest = try Manifest.read(directory: directory)
        var parts: [ImageArray] = []
        for (i, shard) in manifest.shards.enumerated() {
            parts.append(try readShard(shard, manifest: manifest, directory: directory))
            progress?(i + 1, manifest.shards.count)
        }
        return (manifest, parts)
    }
}

extension ShardStore {
    /// The in-process shards of a dataset directory, each verified and x-flipped on load when asked
    /// (every shard holds the mirror images of its own originals, so the union is the x-flipped set).
    public static func loadShards(
        directory: String, xflip: Bool, threads: Int, progress: ((Int, Int) -> Void)? = nil
    ) throws -> (Manifest, [InProcessShard]) {
        let (manifest, parts) = try readAll(directory: directory, progress: progress)
        let shards = try parts.map { part in
            InProcessShard(
                images: try ImageSet(pixels: part.pixels, count: part.count, shape: part.shape, xflip: xflip),
                threads: threads)
        }
        return (manifest, shards)
    }
}
