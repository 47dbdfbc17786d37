/// A zip file indexed by its central directory: how pspc opens the EDM dataset zips (up to many GB of
/// PNGs) without unpacking them to disk. A zip opened by path is read at offsets: only its tail, its
/// central directory and the entry asked for are ever in memory.
///
/// ```
///  [local header 1][data 1] ... [local header n][data n][central directory][zip64 EOCD + locator]?[EOCD]
///  EOCD (22 bytes + comment): 50 4B 05 06 | disk u16 | cd disk u16 | entries on disk u16 |
///                             entries u16 | cd size u32 | cd offset u32 | comment length u16
///  central entry (46 + n + m + k): 50 4B 01 02 | ... method u16 @10 | crc u32 @16 | csize u32 @20 |
///                             usize u32 @24 | n @28 | m @30 | k @32 | local offset u32 @42 | name | extra | comment
///  local header (30 + n + m): 50 4B 03 04 | ... n u16 @26 | m u16 @28 | name | extra | data
/// ```
/// Sizes and offsets of 0xFFFFFFFF (and counts of 0xFFFF) are taken from the zip64 records. Entries
/// stored (method 0) or deflated (method 8) are read, and their CRC-32 is checked.
public struct ZipArchive: Sendable {
    /// One file in the archive, as its central directory describes it.
    public struct Entry: Sendable, Equatable {
        public let name: String
        public let compressedSize: Int
        public let uncompressedSize: Int
        /// Compression method: 0 stored, 8 deflate (others are refused by `read`).
        public let method: Int
        public let crc32: UInt32
        public let localHeaderOffset: Int
        /// General-purpose flags; bit 0 marks an encrypted entry.
        let flags: UInt16
    }

    /// The file the archive was read from (labels errors).
    public let path: String
    public let entries: [Entry]
    private let storage: Storage

    /// Where the archive's bytes are: in memory, or in a file read at offsets.
    private enum Storage: Sendable {
        case memory([UInt8])
        case file(ReadableFile)

        var size: Int {
            switch self {
            case .memory(let bytes): return bytes.count
            case .file(let file): return file.size
            }
        }

        /// `count` bytes from `offset`; callers have checked that they lie inside the archive.
        func read(_ offset: Int, _ count: Int) throws -> [UInt8] {
            switch self {
            case .memory(let bytes): return Array(bytes[offset..<(offset + count)])
            case .file(let file): return try file.read(at: offset, count: count)
            }
        }
    }

    /// Opens `path` and indexes its central directory; entries are read from the file when asked for.
    public init(path: String) throws {
        self.path = path
        self.storage = .file(try ReadableFile(path: path))
        self.entries = try Self.readCentralDirectory(storage, name: path)
    }

    /// Indexes an archive already in memory; `name` labels errors.
    public init(bytes: [UInt8], name: String) throws {
        self.path = name
        self.storage = .memory(bytes)
        self.entries = try Self.readCentralDirectory(storage, name: name)
    }

    /// The uncompressed contents of `entry`, checked against its CRC-32.
    public func read(_ entry: Entry) throws -> [UInt8] {
        let label = "\(path):\(entry.name)"
        if entry.flags & 1 != 0 {
            throw DataError.unsupported(path: path, reason: "entry '\(entry.name)' is encrypted")
        }
        guard entry.method == 0 || entry.method == 8 else {
            throw DataError.unsupported(
                path: path, reason: "entry '\(entry.name)' uses compression method \(entry.method) (pspc reads 0 and 8)"
            )
        }
        let offset = entry.localHeaderOffset
        let size = storage.size
        let local = try offset >= 0 && offset <= size - 30 ? storage.read(offset, 30) : []
        guard local.count == 30, Self.u32(local, 0) == 0x0403_4B50 else {
            throw DataError.corrupt(path: path, reason: "entry '\(entry.name)': no local header at offset \(offset)")
        }
        let dataStart = offset + 30 + Int(Self.u16(local, 26)) + Int(Self.u16(local, 28))
        guard entry.compressedSize >= 0, dataStart <= size, entry.compressedSize <= size - dataStart
        else {
            throw DataError.corrupt(
                path: path,
                reason: "entry '\(entry.name)': \(entry.compressedSize) compressed bytes run past the end of the file")
        }
        let payload = try storage.read(dataStart, entry.compressedSize)
        let contents: [UInt8]
        if entry.method == 0 {
            guard entry.compressedSize == entry.uncompressedSize else {
                throw DataError.corrupt(
                    path: path,
                    reason:
                        "stored entry '\(entry.name)' has sizes \(entry.compressedSize) and \(entry.uncompressedSize)")
            }
            contents = payload
        } else {
            // Deflate expands at most ~1032:1; a larger declared size is a lie that would allocate too much.
            guard entry.uncompressedSize <= entry.compressedSize * 1100 + 1024 else {
                throw DataError.corrupt(
                    path: path,
                    reason: "entry '\(entry.name)' claims \(entry.uncompressedSize) bytes from \(entry.compressedSize)")
            }
            contents = try Zlib.inflate(
                payload, container: .raw, expectedSize: entry.uncompressedSize, name: label)
        }
        let computed = Zlib.crc32(contents)
        guard computed == entry.crc32 else {
            throw DataError.corrupt(
                path: path,
                reason: "entry '\(entry.name)': CRC-32 mismatch (stored \(hex(entry.crc32)), computed \(hex(computed)))"
            )
        }
        return contents
    }

    // MARK: - Implementation details

    private static func readCentralDirectory(_ storage: Storage, name: String) throws -> [Entry] {
        // The EOCD is the last 22 bytes plus a comment of at most 65535 bytes: search back that far.
        let size = storage.size
        let tailStart = max(0, size - 22 - 0xFFFF)
        let tail = try storage.read(tailStart, size - tailStart)
        var eocd: Int?
        if tail.count >= 22 {
            var candidate = tail.count - 22
            while candidate >= 0 {
                if u32(tail, candidate) == 0x0605_4B50
                    && candidate + 22 + Int(u16(tail, candidate + 20)) <= tail.count
                {
                    eocd = candidate
                    break
                }
                candidate -= 1
            }
        }
        guard let eocd else {
            throw DataError.corrupt(path: name, reason: "no end-of-central-directory record (truncated or not a zip)")
        }
        guard u16(tail, eocd + 4) == 0 || u16(tail, eocd + 4) == 0xFFFF,
            u16(tail, eocd + 6) == 0 || u16(tail, eocd + 6) == 0xFFFF
        else {
            throw DataError.unsupported(path: name, reason: "multi-disk (split) zip archive")
        }
        var count = Int(u16(tail, eocd + 10))
        var directorySize = Int(u32(tail, eocd + 12))
        var directoryOffset = Int(u32(tail, eocd + 16))

        // A zip64 locator (20 bytes) sits right before the EOCD when any field overflowed.
        let eocdOffset = tailStart + eocd
        if eocdOffset >= 20, case let locator = try storage.read(eocdOffset - 20, 20), u32(locator, 0) == 0x0706_4B50 {
            let recordOffset = u64(locator, 8)
            guard recordOffset <= UInt64(size), Int(recordOffset) <= size - 56,
                case let record = try storage.read(Int(recordOffset), 56), u32(record, 0) == 0x0606_4B50
            else {
                throw DataError.corrupt(path: name, reason: "zip64 locator points at no zip64 end record")
            }
            let values = [u64(record, 32), u64(record, 40), u64(record, 48)]
            guard values.allSatisfy({ $0 <= UInt64(Int.max) }) else {
                throw DataError.corrupt(path: name, reason: "zip64 end record holds impossible sizes")
            }
            count = Int(values[0])
            directorySize = Int(values[1])
            directoryOffset = Int(values[2])
        }
        guard directoryOffset <= size, directorySize <= size - directoryOffset,
            count <= directorySize / 46
        else {
            throw DataError.corrupt(
                path: name,
                reason: "central directory (\(count) entries, \(directorySize) bytes at \(directoryOffset)) "
                    + "lies outside the \(size)-byte file (truncated?)")
        }
        let bytes = try storage.read(directoryOffset, directorySize)

        var entries: [Entry] = []
        entries.reserveCapacity(count)
        var position = 0
        let end = directorySize
        for index in 0..<count {
            guard end - position >= 46, u32(bytes, position) == 0x0201_4B50 else {
                throw DataError.corrupt(path: name, reason: "central directory entry \(index) is malformed")
            }
            let nameLength = Int(u16(bytes, position + 28))
            let extraLength = Int(u16(bytes, position + 30))
            let commentLength = Int(u16(bytes, position + 32))
            let next = position + 46 + nameLength + extraLength + commentLength
            guard next <= end else {
                throw DataError.corrupt(path: name, reason: "central directory entry \(index) runs past its end")
            }
            let entryName = String(decoding: bytes[(position + 46)..<(position + 46 + nameLength)], as: UTF8.self)
            var compressed = UInt64(u32(bytes, position + 20))
            var uncompressed = UInt64(u32(bytes, position + 24))
            var localOffset = UInt64(u32(bytes, position + 42))
            // Zip64 extended information (extra id 1) holds, in this order, only the fields that overflowed.
            var extra = position + 46 + nameLength
            let extraEnd = extra + extraLength
            while extraEnd - extra >= 4 {
                let id = u16(bytes, extra)
                let size = Int(u16(bytes, extra + 2))
                guard size <= extraEnd - extra - 4 else { break }
                if id == 1 {
                    var field = extra + 4
                    let fieldEnd = field + size
                    func nextField() throws -> UInt64 {
                        guard fieldEnd - field >= 8 else {
                            throw DataError.corrupt(path: name, reason: "entry '\(entryName)': short zip64 extra field")
                        }
                        defer { field += 8 }
                        return u64(bytes, field)
                    }
                    if uncompressed == 0xFFFF_FFFF { uncompressed = try nextField() }
                    if compressed == 0xFFFF_FFFF { compressed = try nextField() }
                    if localOffset == 0xFFFF_FFFF { localOffset = try nextField() }
                }
                extra += 4 + size
            }
            guard compressed <= UInt64(size), uncompressed <= UInt64(Int.max), localOffset <= UInt64(size)
            else {
                throw DataError.corrupt(path: name, reason: "entry '\(entryName)' has sizes or offset beyond the file")
            }
            entries.append(
                Entry(
                    name: entryName, compressedSize: Int(compressed), uncompressedSize: Int(uncompressed),
                    method: Int(u16(bytes, position + 10)), crc32: u32(bytes, position + 16),
                    localHeaderOffset: Int(localOffset), flags: u16(bytes, position + 8)))
            position = next
        }
        return entries
    }

    // Little-endian reads; every caller has checked that the bytes are there.
    private static func u16(_ bytes: [UInt8], _ offset: Int) -> UInt16 {
        UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
    }

    private static func u32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) }
    }

    private static func u64(_ bytes: [UInt8], _ offset: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
    }
}

private func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
}
