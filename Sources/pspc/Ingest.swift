import ArgumentParser
import Foundation
import PSPCData
import PSPCExperiments

struct Ingest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read a dataset and write it as checksummed zstd shards with a manifest.",
        discussion: """
            SOURCE is one of:
              fashion-mnist[:train|:test]   Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)
              idx:PATH                      MNIST-style IDX of unsigned bytes, gzipped or plain
              cifar10:DIR[:train|:test]     CIFAR-10 binary batches (data_batch_1..5.bin, test_batch.bin)
              npy:PATH                      uint8 [N,C,H,W] (or [N,H,W,C] with --channels-last, or [N,H,W])
              edm-zip:PATH                  the EDM dataset tool's zip of PNGs
            """)

    @Option(help: "The dataset to read (see below).") var source: String
    @Option(help: "Directory to write the shards and manifest.json to.") var out: String
    @Option(help: "Number of shard files.") var shards: Int = 1
    @Option(help: "Keep only the first N images.") var limit: Int?
    @Flag(help: "npy images are [N, H, W, C].") var channelsLast = false

    func validate() throws {
        guard shards >= 1 else { throw ValidationError("--shards must be at least 1") }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
    }

    func run() async throws {
        try Self.checkTarget(out)
        let dataset = try DatasetSource(parsing: source, channelsLast: channelsLast)
        // Images stream from the source into the shards: neither the source file nor the dataset is held
        // in memory, only the block of images being compressed.
        let images = try dataset.open(limit: limit)
        note("reading \(images.count) images of \(images.shape) from \(dataset)")
        let reading = ProgressBar("read images", total: images.count, unit: " images")
        let writing = ProgressBar("write shards", total: shards)
        // The new dataset is written beside --out and swapped in whole at the end, so a failed ingest (a full
        // disk, a kill) never damages a dataset already in --out.
        let staging = Self.sibling(out, "ingest")
        let manifest: Manifest
        do {
            manifest = try ShardStore.write(
                images, shards: shards, to: staging, source: dataset.description,
                progress: { done, _ in writing.update(done) },
                imageProgress: { done, _ in reading.update(done) })
            try Self.swapIn(staging, at: out)
        } catch {
            try? FileManager.default.removeItem(atPath: staging)
            throw error
        }
        let bytes = manifest.shards.reduce(0) { $0 + $1.bytes }
        note(
            "wrote \(manifest.shards.count) shards (\(bytes) bytes, \(String(format: "%.2f", Double(bytes) / Double(max(1, manifest.count * manifest.shape.dimension)))) of raw) and manifest.json to \(out)"
        )
    }

    /// A hidden folder beside `path` for this process.
    static func sibling(_ path: String, _ purpose: String) -> String {
        let (folder, name) = FileIO.splitPath(path)
        return folder + "." + name + ".\(purpose)-\(getpid())"
    }

    /// --out must be new, empty, or hold only a dataset (manifest.json and shard files), which is replaced.
    static func checkTarget(_ out: String) throws {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: out) else {
            if FileManager.default.fileExists(atPath: out) { throw DataError.invalid("--out \(out) is not a directory") }
            return
        }
        let others = entries.filter { $0 != Manifest.fileName && !($0.hasPrefix("shard-") && $0.hasSuffix(".pspc")) }
        if !others.isEmpty {
            throw DataError.invalid(
                "--out \(out) holds files other than a dataset (\(others.sorted().prefix(3).joined(separator: ", "))): use a new or empty folder")
        }
    }

    /// Moves `staging` to `out`, replacing an existing dataset there only once the new one is complete.
    static func swapIn(_ staging: String, at out: String) throws {
        if !FileManager.default.fileExists(atPath: out) || rmdir(out) == 0 {
            guard rename(staging, out) == 0 else {
                throw DataError.io(path: out, reason: "cannot move the new dataset into place: \(SystemError.describe(errno: errno))")
            }
            return
        }
        let old = sibling(out, "replaced")
        guard rename(out, old) == 0 else {
            throw DataError.io(path: out, reason: "cannot move the old dataset aside: \(SystemError.describe(errno: errno))")
        }
        guard rename(staging, out) == 0 else {
            let reason = SystemError.describe(errno: errno)
            _ = rename(old, out)
            throw DataError.io(path: out, reason: "cannot move the new dataset into place: \(reason)")
        }
        try? FileManager.default.removeItem(atPath: old)
    }
}
