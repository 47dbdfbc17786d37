import Foundation
import PSPCCore

/// One shard: a contiguous range of a dataset's images, zstd-compressed in blocks, each block checked by
/// CRC-32 before and after decompression (docs/design.md section 4). Layout (little-endian):
///
/// ```
///  0        8        12   16   20   24          32          40     44      48      52       56
///  +--------+--------+----+----+----+-----------+-----------+------+-------+-------+--------+
///  | magic  |version | C  | H  | W  |  count    |firstIndex |per   |blocks |hdrCRC | 0      |
///  |PSPCSHRD|  = 1   |    |    |    |  UInt64   |  UInt64   |block |       |       |        |
///  +--------+--------+----+----+----+-----------+-----------+------+-------+-------+--------+
///  block table, `blocks` entries of 32 bytes:
///  +-----------+-----------+-----------+---------------+--------------+
///  | offset u64| stored u64| raw u64   | storedCRC u32 | rawCRC u32   |
///  +-----------+-----------+-----------+---------------+--------------+
///  block data: zstd frames of uint8 images [n, C, H, W]
/// ```
/// hdrCRC is the CRC-32 of bytes 0..<48 followed by the block table.
public enum ShardFile {
    public static let magic: [UInt8] = Array("PSPCSHRD".utf8)
    public static let version: UInt32 = 1
    static let headerSize = 56
    static let tableEntrySize = 32

    public struct Header: Sendable, Equatable {
        public var shape: ImageShape
        public var count: Int
        public var firstIndex: Int
        public var imagesPerBlock: Int
    }

    /// Encodes `images` (which start at dataset index `firstIndex`) as a shard file.
    public static func encode(_ images: ImageArray, firstIndex: Int, imagesPerBlock: Int? = nil, level: Int32 = 3)
        throws -> [UInt8]
    {
        let dim = images.shape.dimension
        let perBlock = Self.imagesPerBlock(imagesPerBlock, shape: images.shape)
        let blocks = (images.count + perBlock - 1) / perBlock
        var payload: [UInt8] = []
        var table: [UInt8] = []
        let dataStart = headerSize + blocks * tableEntrySize
        for b in 0..<blocks {
            let lo = b * perBlock * dim, hi = min(images.count, (b + 1) * perBlock) * dim
            payload += try compressBlock(images.pixels[lo..<hi], at: dataStart + payload.count, into: &table)
        }
        let header = Self.header(
            shape: images.shape, count: images.count, firstIndex: firstIndex, perBlock: perBlock, table: table)
        return header + table + payload
    }

    /// Images per block: the given number, or as many as fit in 1 MiB (at least one).
    static func imagesPerBlock(_ requested: Int?, shape: ImageShape) -> Int {
        max(1, requested ?? max(1, (1 << 20) / max(1, shape.dimension)))
    }

    /// Compresses one block of raw images stored at file `offset`, appends its table entry, returns its bytes.
    static func compressBlock(_ raw: ArraySlice<UInt8>, at offset: Int, into table: inout [UInt8]) throws -> [UInt8] {
        let compressed = try Zstd.compress(raw)
        append(&table, UInt64(offset))
        append(&table, UInt64(compressed.count))
        append(&table, UInt64(raw.count))
        append(&table, Zlib.crc32(compressed))
        append(&table, Zlib.crc32(raw))
        return compressed
    }

    /// The 56-byte header of a shard whose block table is `table`.
    static func header(shape: ImageShape, count: Int, firstIndex: Int, perBlock: Int, table: [UInt8]) -> [UInt8] {
        var header: [UInt8] = magic
        append(&header, version)
        append(&header, UInt32(shape.channels))
        append(&header, UInt32(shape.height))
        append(&header, UInt32(shape.width))
        append(&header, UInt64(count))
        append(&header, UInt64(firstIndex))
        append(&header, UInt32(perBlock))
        append(&header, UInt32(table.count / tableEntrySize))
        append(&header, Zlib.crc32(table, initial: Zlib.crc32(header)))
        append(&header, UInt32(0))
        return header
    }

    /// Decodes and verifies a shard file. `name` labels errors (the shard's file name).
    public static func decode(_ bytes: [UInt8], name: String) throws -> (header: Header, images: ImageArray) {
        try decode(size: bytes.count, name: name) { offset, count in bytes[offset..<(offset + count)] }
    }

    /// Decodes and verifies the shard file `file`, reading it block by block: memory holds the images and
    /// one block, never the whole file.
    public static func decode(_ file: ReadableFile) throws -> (header: Header, images: ImageArray) {
        try decode(size: file.size, name: file.path) { offset, count in try file.read(at: offset, count: count)[...] }
    }

    /// Decodes a shard of `size` bytes that `read(offset, count)` returns parts of (always inside the file).
    private static func decode(size: Int, name: String, read: (Int, Int) throws -> ArraySlice<UInt8>) throws -> (
        header: Header, images: ImageArray
    ) {
        guard size >= headerSize else {
            throw DataError.corrupt(
                path: name, reason: "truncated: \(size) bytes, shorter than the \(headerSize)-byte header")
        }
        let bytes = Array(try read(0, headerSize))
        guard Array(bytes[0..<8]) == magic else {
            throw DataError.corrupt(path: name, reason: "not a pspc shard (bad magic)")
        }
        let fileVersion = readU32(bytes, 8)
        guard fileVersion == version else {
            throw DataError.unsupported(
                path: name, reason: "shard format version \(fileVersion); this pspc reads version \(version)")
        }
        let shape = ImageShape(
            channels: Int(readU32(bytes, 12)), height: Int(readU32(bytes, 16)), width: Int(readU32(bytes, 20)))
        let count = Int(clamping: readU64(bytes, 24)), firstIndex = Int(clamping: readU64(bytes, 32))
        let perBlock = Int(readU32(bytes, 40)), blocks = Int(readU32(bytes, 44))
        let tableEnd = headerSize + blocks * tableEntrySize
        guard size >= tableEnd else {
            throw DataError.corrupt(
                path: name, reason: "truncated: the block table needs \(tableEnd) bytes, the file has \(size)")
        }
        let table = Array(try read(headerSize, tableEnd - headerSize))
        let storedCRC = readU32(bytes, 48)
        let crc = Zlib.crc32(table, initial: Zlib.crc32(bytes[0..<48]))
        guard crc == storedCRC else { throw DataError.corrupt(path: name, reason: "header checksum mismatch") }
        let dim = shape.dimension
        guard dim > 0, perBlock > 0, blocks == (count + perBlock - 1) / perBlock else {
            throw DataError.corrupt(
                path: name, reason: "inconsistent header (\(count) images, \(blocks) blocks of \(perBlock))")
        }
        var pixels = [UInt8]()
        pixels.reserveCapacity(count * dim)
        for b in 0..<blocks {
            let e = b * tableEntrySize
            let offset = Int(clamping: readU64(table, e)), stored = Int(clamping: readU64(table, e + 8))
            let rawSize = Int(clamping: readU64(table, e + 16))
            let storedCRC = readU32(table, e + 24), rawCRC = readU32(table, e + 28)
            let expectedRaw = (min(count, (b + 1) * perBlock) - b * perBlock) * dim
            guard rawSize == expectedRaw else {
                throw DataError.corrupt(
                    path: name, reason: "block \(b) announces \(rawSize) bytes, expected \(expectedRaw)")
            }
            guard offset >= tableEnd, stored >= 0, offset <= size, stored <= size - offset else {
                throw DataError.corrupt(path: name, reason: "truncated: block \(b) lies past the end of the file")
            }
            let block = try read(offset, stored)
            let actual = Zlib.crc32(block)
            guard actual == storedCRC else {
                throw DataError.corrupt(
                    path: name,
                    reason:
                        "block \(b) checksum mismatch (stored 0x\(String(storedCRC, radix: 16)), computed 0x\(String(actual, radix: 16)))"
                )
            }
            let raw = try Zstd.decompress(block, rawSize: rawSize, name: name, what: "block \(b)")
            guard Zlib.crc32(raw) == rawCRC else {
                throw DataError.corrupt(
                    path: name, reason: "block \(b) decompressed to the wrong content (checksum mismatch)")
            }
            pixels += raw
        }
        let header = Header(shape: shape, count: count, firstIndex: firstIndex, imagesPerBlock: perBlock)
        return (header, ImageArray(pixels: pixels, count: count, shape: shape))
    }

    // MARK: - Implementation details

    private static func append<T: FixedWidthInteger>(_ bytes: inout [UInt8], _ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
    }

    private static func readU32(_ b: [UInt8], _ o: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[o + $1]) << (8 * UInt32($1)) }
    }

    private static func readU64(_ b: [UInt8], _ o: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) }
    }
}
