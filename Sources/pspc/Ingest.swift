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
        let dataset = try DatasetSource(parsing: source, channelsLast: channelsLast)
        let reading = ProgressBar("read \(dataset)", total: 1, unit: " files")
        let images = try dataset.load(limit: limit) { done, total in
            reading.update(done, total: total)
        }
        note("read \(images.count) images of \(images.shape) from \(dataset)")
        let writing = ProgressBar("write shards", total: shards)
        let manifest = try ShardStore.write(images, shards: shards, to: out, source: dataset.description) { done, _ in
            writing.update(done)
        }
        let bytes = manifest.shards.reduce(0) { $0 + $1.bytes }
        note(
            "wrote \(manifest.shards.count) shards (\(bytes) bytes, \(String(format: "%.2f", Double(bytes) / Double(max(1, images.pixels.count)))) of raw) and manifest.json to \(out)"
        )
    }
}
