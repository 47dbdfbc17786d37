import Foundation
import PSPCCore

/// Where `pspc ingest` reads images from, parsed from `KIND:ARGUMENT` (see `pspc ingest --help`).
public enum DatasetSource: Sendable, Equatable, CustomStringConvertible {
    /// Debian's dataset-fashion-mnist package: /usr/share/datasets/fashion-mnist.
    case fashionMNIST(train: Bool)
    case idx(path: String)
    case cifar10(directory: String, split: CIFAR10Reader.Split)
    case npy(path: String, channelsLast: Bool)
    case edmZip(path: String)

    public static let fashionMNISTDirectory = "/usr/share/datasets/fashion-mnist"

    public init(parsing text: String, channelsLast: Bool = false) throws {
        let (kind, argument) = text.split(separator: ":", maxSplits: 1).map(String.init).pair
        switch kind {
        case "fashion-mnist":
            switch argument {
            case nil, "train": self = .fashionMNIST(train: true)
            case "test": self = .fashionMNIST(train: false)
            default: throw DataError.invalid("fashion-mnist takes :train or :test, not :\(argument!)")
            }
        case "idx":
            self = .idx(path: try Self.required(argument, kind))
        case "cifar10":
            let value = try Self.required(argument, kind)
            if value.hasSuffix(":test") {
                self = .cifar10(directory: String(value.dropLast(5)), split: .test)
            } else if value.hasSuffix(":train") {
                self = .cifar10(directory: String(value.dropLast(6)), split: .train)
            } else {
                self = .cifar10(directory: value, split: .train)
            }
        case "npy":
            self = .npy(path: try Self.required(argument, kind), channelsLast: channelsLast)
        case "edm-zip":
            self = .edmZip(path: try Self.required(argument, kind))
        default:
            throw DataError.invalid(
                "unknown source '\(text)': use fashion-mnist[:train|:test], idx:PATH, cifar10:DIR[:train|:test], npy:PATH or edm-zip:PATH"
            )
        }
    }

    public var description: String {
        switch self {
        case .fashionMNIST(let train): return "fashion-mnist:\(train ? "train" : "test")"
        case .idx(let path): return "idx:\(path)"
        case .cifar10(let directory, let split): return "cifar10:\(directory):\(split.rawValue)"
        case .npy(let path, let channelsLast): return "npy:\(path)\(channelsLast ? " (channels last)" : "")"
        case .edmZip(let path): return "edm-zip:\(path)"
        }
    }

    /// Reads the images (the first `limit` when given).
    public func load(limit: Int? = nil, progress: ((Int, Int) -> Void)? = nil) throws -> ImageArray {
        switch self {
        case .fashionMNIST(let train):
            let file = train ? "train-images-idx3-ubyte.gz" : "t10k-images-idx3-ubyte.gz"
            let path = (Self.fashionMNISTDirectory as NSString).appendingPathComponent(file)
            guard FileManager.default.fileExists(atPath: path) else {
                throw DataError.io(
                    path: path, reason: "no such file: install Debian's dataset-fashion-mnist (scripts/setup.sh does)")
            }
            return try IDXReader.read(path: path, limit: limit)
        case .idx(let path):
            return try IDXReader.read(path: path, limit: limit)
        case .cifar10(let directory, let split):
            return try CIFAR10Reader.read(directory: directory, split: split, limit: limit)
        case .npy(let path, let channelsLast):
            return try Self.images(fromNPY: path, channelsLast: channelsLast, limit: limit).readAll()
        case .edmZip(let path):
            return try EDMZipReader.read(path: path, limit: limit, progress: progress)
        }
    }

    /// The images (the first `limit` when given) as a stream: zips, npy files and CIFAR-10 batches are
    /// read image by image from disk, never whole; IDX files (gzipped, small) are read whole first.
    public func open(limit: Int? = nil) throws -> ImageStream {
        switch self {
        case .fashionMNIST, .idx:
            return ImageStream(try load(limit: limit))
        case .cifar10(let directory, let split):
            return try CIFAR10Reader.open(directory: directory, split: split, limit: limit)
        case .npy(let path, let channelsLast):
            return try Self.images(fromNPY: path, channelsLast: channelsLast, limit: limit)
        case .edmZip(let path):
            return try EDMZipReader.open(path: path, limit: limit)
        }
    }

    /// uint8 `[N, C, H, W]`, `[N, H, W, C]` (channelsLast) or `[N, H, W]` arrays, read image by image.
    static func images(fromNPY path: String, channelsLast: Bool, limit: Int?) throws -> ImageStream {
        let (s, file, dataOffset) = try NPY.openUInt8(path: path)
        let shape: ImageShape
        switch s.count {
        case 3: shape = ImageShape(channels: 1, height: s[1], width: s[2])
        case 4 where channelsLast: shape = ImageShape(channels: s[3], height: s[1], width: s[2])
        case 4: shape = ImageShape(channels: s[1], height: s[2], width: s[3])
        default:
            throw DataError.unsupported(
                path: path, reason: "image arrays are [N, C, H, W], [N, H, W, C] or [N, H, W]; this one is \(s)")
        }
        let n = min(s[0], limit ?? s[0])
        let dimension = shape.dimension
        let c = shape.channels, hw = shape.pixelCount
        var interleaved = [UInt8](repeating: 0, count: channelsLast && c > 1 ? dimension : 0)
        return ImageStream(shape: shape, count: n) { index, buffer in
            let start = buffer.count
            buffer += repeatElement(0, count: dimension)
            guard channelsLast && c > 1 else {
                try file.read(at: dataOffset + index * dimension, into: &buffer, from: start, count: dimension)
                return
            }
            try file.read(at: dataOffset + index * dimension, into: &interleaved, from: 0, count: dimension)
            for p in 0..<hw {
                for k in 0..<c { buffer[start + k * hw + p] = interleaved[p * c + k] }
            }
        }
    }

    private static func required(_ argument: String?, _ kind: String) throws -> String {
        guard let argument, !argument.isEmpty else {
            throw DataError.invalid("source \(kind) needs a path: \(kind):PATH")
        }
        return argument
    }
}

extension Array where Element == String {
    fileprivate var pair: (String, String?) { (self.first ?? "", self.count > 1 ? self[1] : nil) }
}
