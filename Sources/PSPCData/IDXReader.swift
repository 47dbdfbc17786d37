import PSPCCore

/// MNIST-style IDX files of unsigned bytes, gzipped or plain: magic 0x0000_08_0N (type 0x08 = ubyte, N dims),
/// then N big-endian UInt32 sizes, then the data. 3 dims read as [N, 1, H, W]; 4 dims as [N, C, H, W].
public enum IDXReader {
    public static func read(path: String, limit: Int? = nil) throws -> ImageArray {
        var bytes = try FileIO.read(path)
        if bytes.count >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b {
            bytes = try Zlib.inflate(bytes, container: .gzip, name: path)
        }
        return try decode(bytes, name: path, limit: limit)
    }

    public static func decode(_ bytes: [UInt8], name: String, limit: Int? = nil) throws -> ImageArray {
        guard bytes.count >= 4 else { throw DataError.corrupt(path: name, reason: "too short for an IDX header") }
        guard bytes[0] == 0, bytes[1] == 0 else {
            throw DataError.corrupt(path: name, reason: "not an IDX file (magic \(bytes[0...3].map { $0 }))")
        }
        guard bytes[2] == 0x08 else {
            throw DataError.unsupported(
                path: name, reason: "IDX element type 0x\(String(bytes[2], radix: 16)); only unsigned bytes (0x08)")
        }
        let dims = Int(bytes[3])
        guard dims == 3 || dims == 4 else {
            throw DataError.unsupported(
                path: name, reason: "IDX with \(dims) dimensions; images need 3 (N, H, W) or 4 (N, C, H, W)")
        }
        let headerSize = 4 + 4 * dims
        guard bytes.count >= headerSize else { throw DataError.corrupt(path: name, reason: "truncated IDX header") }
        var sizes: [Int] = []
        for i in 0..<dims {
            let o = 4 + 4 * i
            sizes.append(Int(bytes[o]) << 24 | Int(bytes[o + 1]) << 16 | Int(bytes[o + 2]) << 8 | Int(bytes[o + 3]))
        }
        let shape =
            dims == 3
            ? ImageShape(channels: 1, height: sizes[1], width: sizes[2])
            : ImageShape(channels: sizes[1], height: sizes[2], width: sizes[3])
        guard shape.dimension > 0 else { throw DataError.corrupt(path: name, reason: "IDX image size is zero") }
        let count = sizes[0]
        let expected = headerSize + count * shape.dimension
        guard bytes.count >= expected else {
            throw DataError.corrupt(
                path: name, reason: "truncated: \(bytes.count) bytes, the header announces \(expected)")
        }
        let kept = min(count, limit ?? count)
        return ImageArray(
            pixels: Array(bytes[headerSize..<(headerSize + kept * shape.dimension)]), count: kept, shape: shape)
    }
}

extension IDXReader {
    /// An IDX file of one dimension of unsigned bytes (magic 0x0000_08_01), gzipped or plain: MNIST-style
    /// labels. `limit` keeps the first N.
    public static func readLabels(path: String, limit: Int? = nil) throws -> [UInt8] {
        var bytes = try FileIO.read(path)
        if bytes.count >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b {
            bytes = try Zlib.inflate(bytes, container: .gzip, name: path)
        }
        guard bytes.count >= 8, bytes[0] == 0, bytes[1] == 0, bytes[2] == 0x08, bytes[3] == 1 else {
            throw DataError.corrupt(path: path, reason: "not an IDX file of unsigned-byte labels (magic 0x00000801)")
        }
        let count = Int(bytes[4]) << 24 | Int(bytes[5]) << 16 | Int(bytes[6]) << 8 | Int(bytes[7])
        guard bytes.count >= 8 + count else {
            throw DataError.corrupt(
                path: path, reason: "truncated: \(bytes.count) bytes, the header announces \(8 + count)")
        }
        return Array(bytes[8..<(8 + min(count, limit ?? count))])
    }
}
