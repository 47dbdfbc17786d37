import Dispatch
import Foundation
import PSPCCore

/// Writes `SyntheticImages` in the formats users bring, streaming: images are made in batches on several
/// threads and written in index order, so memory holds one batch, never the dataset (1M images of 3x64x64
/// are 12 GB), and the bytes do not depend on the number of threads.
public enum SyntheticWriter {
    public enum Format: String, Sendable, CaseIterable {
        /// EDM's dataset_tool layout: `00000/img00000000.png` ... (stored) and `dataset.json` with the labels.
        case zip
        /// One uint8 `[N, C, H, W]` array at PATH, and the labels as uint8 `[N]` at `PATH.labels.npy`
        /// (`.npy` replaced).
        case npy
        /// CIFAR-10's binary training split in folder PATH: `data_batch_1.bin` ... `data_batch_5.bin`, records
        /// `label byte | 3072 bytes` (3x32x32 only); image i goes to batch i * 5 / N, so N = 50,000 gives
        /// CIFAR-10's 10,000 records a batch.
        case cifar
    }

    /// Images per batch made in parallel.
    static let batchSize = 512

    /// Writes images 0..<count of `images` as `format` to `path`; `progress(done, count)` after each batch.
    public static func write(
        _ images: SyntheticImages, count: Int, format: Format, to path: String, threads: Int,
        progress: ((Int, Int) -> Void)? = nil
    ) throws {
        guard count >= 1 else { throw DataError.invalid("--count must be at least 1") }
        switch format {
        case .zip: try writeZip(images, count: count, to: path, threads: threads, progress: progress)
        case .npy: try writeNPY(images, count: count, to: path, threads: threads, progress: progress)
        case .cifar: try writeCIFAR(images, count: count, to: path, threads: threads, progress: progress)
        }
    }

    /// EDM's name for image `index`: the first five of its eight digits as the folder.
    public static func zipEntryName(_ index: Int) -> String {
        let digits = String(format: "%08d", index)
        return "\(digits.prefix(5))/img\(digits).png"
    }

    /// The labels file written beside an npy array at `path`.
    public static func labelsPath(forNPY path: String) -> String {
        (path.hasSuffix(".npy") ? String(path.dropLast(4)) : path) + ".labels.npy"
    }

    // MARK: - Implementation details

    private static func writeZip(
        _ images: SyntheticImages, count: Int, to path: String, threads: Int, progress: ((Int, Int) -> Void)?
    ) throws {
        let zip = try ZipWriter(path: path)
        let shape = images.shape
        var labels = "{\"labels\": ["
        try batches(images, count: count, threads: threads, progress: progress) { image in
            // Planar CHW -> interleaved HWC for PNG.
            let plane = shape.pixelCount, c = shape.channels
            var interleaved = [UInt8](repeating: 0, count: shape.dimension)
            for k in 0..<c { for p in 0..<plane { interleaved[p * c + k] = image.pixels[k * plane + p] } }
            return try PNG.encode(pixels: interleaved, width: shape.width, height: shape.height, channels: c)
        } write: { index, png, label in
            let name = zipEntryName(index)
            try zip.add(name: name, bytes: png)
            labels += (index == 0 ? "" : ", ") + "[\"\(name)\", \(label)]"
        }
        try zip.add(name: "dataset.json", bytes: Array((labels + "]}").utf8))
        try zip.finish()
    }

    private static func writeNPY(
        _ images: SyntheticImages, count: Int, to path: String, threads: Int, progress: ((Int, Int) -> Void)?
    ) throws {
        let shape = images.shape
        let labelsPath = labelsPath(forNPY: path)
        let file = try OutputFile(path: path)
        let labelFile = try OutputFile(path: labelsPath)
        try file.write(NPY.header(shape: [count, shape.channels, shape.height, shape.width], descr: "|u1"))
        try labelFile.write(NPY.header(shape: [count], descr: "|u1"))
        try batches(images, count: count, threads: threads, progress: progress) {
            $0.pixels
        } write: {
            _, pixels, label in
            try file.write(pixels)
            try labelFile.write(CollectionOfOne(label))
        }
        try file.commit()
        try labelFile.commit()
    }

    private static func writeCIFAR(
        _ images: SyntheticImages, count: Int, to path: String, threads: Int, progress: ((Int, Int) -> Void)?
    ) throws {
        guard images.shape == CIFAR10Reader.shape else {
            throw DataError.invalid("CIFAR-10 batches hold 3x32x32 images, not \(images.shape)")
        }
        let split = CIFAR10Reader.Split.train.fileNames
        guard count >= split.count else {
            throw DataError.invalid(
                "CIFAR-10's training split is \(split.count) batches: --count must be at least \(split.count)")
        }
        try FileIO.createDirectory(path)
        var files: [OutputFile] = []
        for name in split { files.append(try OutputFile(path: path + (path.hasSuffix("/") ? "" : "/") + name)) }
        try batches(images, count: count, threads: threads, progress: progress) {
            $0.pixels
        } write: {
            index, pixels, label in
            let file = files[index * split.count / count]
            try file.write(CollectionOfOne(label))
            try file.write(pixels)
        }
        for file in files { try file.commit() }
    }

    /// Makes images 0..<count in batches, `encode` on up to `threads` threads, then hands each to `write` in
    /// index order.
    private static func batches<Encoded>(
        _ images: SyntheticImages, count: Int, threads: Int, progress: ((Int, Int) -> Void)?,
        encode: @escaping @Sendable ((pixels: [UInt8], label: UInt8)) throws -> Encoded,
        write: (Int, Encoded, UInt8) throws -> Void
    ) throws {
        let slots = Slots<(Encoded, UInt8)>(count: batchSize)
        defer { slots.free() }
        var start = 0
        while start < count {
            let n = min(batchSize, count - start)
            let workers = max(1, min(threads, n))
            let first = start
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
                var i = worker
                while i < n {
                    let made = images.image(first + i)
                    slots.put(i, Result { (try encode(made), made.label) })
                    i += workers
                }
            }
            for i in 0..<n {
                let (encoded, label) = try slots.take(i).get()
                try write(first + i, encoded, label)
            }
            start += n
            progress?(start, count)
        }
    }

    /// Result slots that parallel workers fill at distinct indices.
    private final class Slots<Value>: @unchecked Sendable {
        private let base: UnsafeMutablePointer<Result<Value, Error>?>
        private let count: Int

        init(count: Int) {
            self.count = count
            base = .allocate(capacity: count)
            base.initialize(repeating: nil, count: count)
        }

        func put(_ index: Int, _ value: Result<Value, Error>) { base[index] = value }

        func take(_ index: Int) -> Result<Value, Error> {
            defer { base[index] = nil }
            return base[index]!
        }

        func free() {
            base.deinitialize(count: count)
            base.deallocate()
        }
    }
}
