/// Writes a zip archive entry by entry (stored, method 0: PNG entries are compressed already, as EDM's
/// `dataset_tool.py` stores them), so an archive of any size is never held in memory: only its central
/// directory is, about 60 bytes an entry. Zip64 records are written when the archive needs them (more than
/// 65,534 entries, or offsets past 4 GiB), in the layout `ZipArchive` and Python's zipfile read.
public final class ZipWriter {
    private let file: OutputFile
    private var central: [UInt8] = []
    private var count = 0
    /// 1980-01-01 00:00 (the earliest MS-DOS date): a fixed time keeps archives byte-identical.
    private static let dosTime: UInt16 = 0, dosDate: UInt16 = (0 << 9) | (1 << 5) | 1

    public init(path: String) throws { file = try OutputFile(path: path) }

    /// Appends an entry holding `bytes` (below 4 GiB).
    public func add(name: String, bytes: [UInt8]) throws {
        let nameBytes = Array(name.utf8)
        guard bytes.count < 0xFFFF_FFFF, nameBytes.count <= 0xFFFF else {
            throw DataError.invalid("\(file.path): entry '\(name)' is too large for a stored zip entry")
        }
        let crc = Zlib.crc32(bytes)
        let offset = file.offset
        var local: [UInt8] = []
        put(&local, UInt32(0x0403_4B50))
        putShared(&local, needed: 20, crc: crc, size: bytes.count, nameLength: nameBytes.count, extraLength: 0)
        try file.write(local + nameBytes)
        try file.write(bytes)

        let zip64 = offset >= 0xFFFF_FFFF
        put(&central, UInt32(0x0201_4B50))
        put(&central, UInt16(3 << 8 | 45))  // made by: Unix, 4.5
        putShared(
            &central, needed: zip64 ? 45 : 20, crc: crc, size: bytes.count, nameLength: nameBytes.count,
            extraLength: zip64 ? 12 : 0)
        put(&central, UInt16(0))  // comment
        put(&central, UInt16(0))  // disk
        put(&central, UInt16(0))  // internal attributes
        put(&central, UInt32(0o100644) << 16)  // external: a regular file, rw-r--r--
        put(&central, zip64 ? UInt32(0xFFFF_FFFF) : UInt32(offset))
        central += nameBytes
        if zip64 {
            put(&central, UInt16(1))
            put(&central, UInt16(8))
            put(&central, UInt64(offset))
        }
        count += 1
    }

    /// Writes the central directory and end records, and renames the archive into place.
    public func finish() throws {
        let directoryOffset = file.offset
        try file.write(central)
        let directorySize = central.count
        central = []
        let zip64 = count >= 0xFFFF || directoryOffset >= 0xFFFF_FFFF || directorySize >= 0xFFFF_FFFF
        var end: [UInt8] = []
        if zip64 {
            let recordOffset = file.offset
            put(&end, UInt32(0x0606_4B50))
            put(&end, UInt64(44))
            put(&end, UInt16(3 << 8 | 45))
            put(&end, UInt16(45))
            put(&end, UInt32(0))
            put(&end, UInt32(0))
            put(&end, UInt64(count))
            put(&end, UInt64(count))
            put(&end, UInt64(directorySize))
            put(&end, UInt64(directoryOffset))
            put(&end, UInt32(0x0706_4B50))
            put(&end, UInt32(0))
            put(&end, UInt64(recordOffset))
            put(&end, UInt32(1))
        }
        put(&end, UInt32(0x0605_4B50))
        put(&end, UInt16(0))
        put(&end, UInt16(0))
        put(&end, UInt16(min(count, 0xFFFF)))
        put(&end, UInt16(min(count, 0xFFFF)))
        put(&end, UInt32(min(directorySize, 0xFFFF_FFFF)))
        put(&end, UInt32(min(directoryOffset, 0xFFFF_FFFF)))
        put(&end, UInt16(0))
        try file.write(end)
        try file.commit()
    }

    /// The fields a local header and a central directory entry share, from "version needed" to the extra
    /// field's length (a stored entry: both sizes are `size`).
    private func putShared(
        _ bytes: inout [UInt8], needed: UInt16, crc: UInt32, size: Int, nameLength: Int, extraLength: Int
    ) {
        put(&bytes, needed)
        put(&bytes, UInt16(0))  // flags
        put(&bytes, UInt16(0))  // method: stored
        put(&bytes, Self.dosTime)
        put(&bytes, Self.dosDate)
        put(&bytes, crc)
        put(&bytes, UInt32(size))
        put(&bytes, UInt32(size))
        put(&bytes, UInt16(nameLength))
        put(&bytes, UInt16(extraLength))
    }

    private func put<T: FixedWidthInteger>(_ bytes: inout [UInt8], _ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
    }
}
