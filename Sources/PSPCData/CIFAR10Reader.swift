import Foundation
import PSPCCore

/// Reads CIFAR-10's binary version (`cifar-10-binary.tar.gz`, unpacked): batches of records
/// `label u8 | 3072 pixel bytes` where the pixels are 3x32x32 planar (CHW), red plane first.
public enum CIFAR10Reader {
    public enum Split: String, Sendable, CaseIterable {
        case train
        case test

        /// The batch files of this split, in order.
        public var fileNames: [String] {
            switch self {
            case .train: return (1...5).map { "data_batch_\($0).bin" }
            case .test: return ["test_batch.bin"]
            }
        }
    }

    public static let shape = ImageShape(channels: 3, height: 32, width: 32)
    private static let recordSize = 1 + 3 * 32 * 32

    /// The images of `split` as uint8 `[count, 3, 32, 32]` (labels dropped), from `directory` or its
    /// `cifar-10-batches-bin` subfolder (where the tarball unpacks). `limit` keeps the first N and
    /// stops reading batches once it has them.
    public static func read(directory: String, split: Split, limit: Int? = nil) throws -> ImageArray {
        try open(directory: directory, split: split, limit: limit).readAll()
    }

    /// The same images as `read`, read record by record from the batch files as the stream is read.
    /// Every batch needed is opened and its size checked first; none is read whole.
    public static func open(directory: String, split: Split, limit: Int? = nil) throws -> ImageStream {
        if let limit, limit < 1 {
            throw DataError.invalid("\(directory): image limit \(limit) must be at least 1")
        }
        var folder = directory
        let nested = (directory as NSString).appendingPathComponent("cifar-10-batches-bin")
        let first = (directory as NSString).appendingPathComponent(split.fileNames[0])
        if !FileManager.default.fileExists(atPath: first) && FileManager.default.fileExists(atPath: nested) {
            folder = nested
        }
        var batches: [(file: ReadableFile, records: Int)] = []
        var count = 0
        for fileName in split.fileNames {
            if let limit, count >= limit { break }
            let file = try ReadableFile(path: (folder as NSString).appendingPathComponent(fileName))
            guard file.size > 0, file.size % recordSize == 0 else {
                throw DataError.corrupt(
                    path: file.path,
                    reason: "\(file.size) bytes is not a whole number of \(recordSize)-byte CIFAR-10 records")
            }
            var records = file.size / recordSize
            if let limit { records = min(records, limit - count) }
            batches.append((file, records))
            count += records
        }
        var batch = 0, record = 0
        return ImageStream(shape: shape, count: count) { _, buffer in
            while record == batches[batch].records {
                batch += 1
                record = 0
            }
            let start = buffer.count
            buffer += repeatElement(0, count: shape.dimension)
            try batches[batch].file.read(
                at: record * recordSize + 1, into: &buffer, from: start, count: shape.dimension)
            record += 1
        }
    }
}
