import ArgumentParser
import Foundation
import PSPCCore
import PSPCData
import PSPCExperiments

struct Synthesize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Write a deterministic synthetic colour dataset (Fashion-MNIST items on gradients) as a zip, npy or CIFAR-10 batches.",
        discussion: """
            Image i is a Fashion-MNIST item (picked, scaled to half to all of the shorter side, tinted per channel,
            maybe mirrored) placed at a random offset on a two-colour gradient; everything follows from --seed and i
            alone, in integer arithmetic, so the bytes are the same on every machine and for any --threads.
            Formats (each readable by `pspc ingest`):
              zip    EDM dataset_tool's zip: 00000/img00000000.png ... and dataset.json with the item labels
                     (ingest with --source edm-zip:PATH)
              npy    uint8 [N, C, H, W] at PATH, labels uint8 [N] at PATH.labels.npy (--source npy:PATH)
              cifar  CIFAR-10's training split in folder PATH: data_batch_1.bin ... data_batch_5.bin, records of
                     a label byte and 3072 pixel bytes; 3x32x32 only (--source cifar10:PATH)
            Images are made and written in batches: memory stays small for any --count.
            """)

    @Option(help: "Image shape CxHxW (C is 1 or 3), e.g. 3x64x64.") var shape: String
    @Option(help: "Number of images.") var count: Int
    @Option(help: "Seed: the same seed gives the same bytes.") var seed: UInt64 = 0
    @Option(help: "zip | npy | cifar") var format: String
    @Option(help: "File (zip, npy) or folder (cifar) to write.") var out: String
    @Option(help: "Items to place: fashion-mnist[:train|:test].") var source: String = "fashion-mnist:train"
    @Option(help: "Threads making images (default: all cores); the output does not depend on it.") var threads: Int?

    func validate() throws {
        if count < 1 { throw ValidationError("--count must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        _ = try parsedShape()
        guard SyntheticWriter.Format(rawValue: format) != nil else {
            throw ValidationError("unknown --format '\(format)': use zip, npy or cifar")
        }
    }

    func parsedShape() throws -> ImageShape {
        let parts = shape.split(separator: "x").map { Int($0) }
        guard parts.count == 3, let c = parts[0], let h = parts[1], let w = parts[2] else {
            throw ValidationError("--shape is CxHxW, e.g. 3x64x64, not '\(shape)'")
        }
        return ImageShape(channels: c, height: h, width: w)
    }

    func run() async throws {
        guard case .fashionMNIST(let train) = try DatasetSource(parsing: source) else {
            throw ValidationError("--source takes fashion-mnist[:train|:test], not '\(source)'")
        }
        let (items, labels) = try SyntheticImages.fashionMNIST(train: train)
        let images = try SyntheticImages(shape: try parsedShape(), seed: seed, items: items, labels: labels)
        let format = SyntheticWriter.Format(rawValue: self.format)!
        let making = ProgressBar("synthesize", total: count, unit: " images")
        try SyntheticWriter.write(
            images, count: count, format: format, to: out,
            threads: threads ?? ProcessInfo.processInfo.activeProcessorCount
        ) { done, _ in making.update(done) }
        note(
            "wrote \(count) images of \(images.shape) (seed \(seed), items from \(source)) as \(format.rawValue) to \(out)"
        )
    }
}
