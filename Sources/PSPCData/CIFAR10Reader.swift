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
        if let limit, limit < 1 {
            throw DataError.invalid("\(directory): image limit \(limit) must be at least 1")
        }
        var folder = directory
        let nested = (directory as NSString).appendingPathComponent("cifar-10-batches-bin")
        let first = (directory as NSString).appendingPathComponent(split.fileNames[0])
        if !FileManager.default.fileExists(atPath: first) && FileManager.default.fileExists(atPath: nested) {
            folder = nested
        }
        let dimension = shape.dimension
        var pixels: [UInt8] = []
        var count = 0
        for fileName in split.fileNames {
            if let limit, count >= limit { break }
            let path = (folder as NSString).appendingPathComponent(fileName)
            let bytes = try FileIO.read(path)
            guard !bytes.isEmpty, bytes.count % recordSize == 0 else {
                throw DataError.corrupt(
                    path: path,
                    reason: "\(bytes.count) bytes is not a whole number of \(recordSize)-byte CIFAR-10 records")
            }
            var records = bytes.count / recordSize
            if let limit { records = min(records, limit - count) }
            pixels.reserveCapacity((count + records) * dimension)
            for record in 0..<records {
                let start = record * recordSize + 1
                pixels += bytes[start..<(start + dimension)]
            }
            count += records
        }
        return ImageArray(pixels: pixels, count: count, shape: shape)
    }
}
