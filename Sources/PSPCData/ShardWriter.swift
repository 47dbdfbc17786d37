import Foundation
import PSPCCore

/// Writes one shard file image by image: each block is compressed and written as soon as it fills, so
/// memory holds one block, never the shard. The bytes are those of `ShardFile.encode` for the same images
/// (block table and header are written last, at the front of the file, then the file is hashed).
public final class ShardWriter {
    public let path: String
    public let shape: ImageShape
    public let count: Int
    public let firstIndex: Int
    private let perBlock: Int
    private let blocks: Int
    private let temporary: String
    private let fd: Int32
    private var block: [UInt8] = []
    private var table: [UInt8] = []
    private var written = 0
    private var offset: Int
    private var finished = false

    /// Starts the shard of `count` images of `shape` (dataset indices from `firstIndex`) at `path`, written
    /// to a temporary file beside it until `finish`.
    public init(path: String, shape: ImageShape, count: Int, firstIndex: Int, imagesPerBlock: Int? = nil) throws {
        try FileIO.checkRegularOutput(path)
        self.path = path
        self.shape = shape
        self.count = count
        self.firstIndex = firstIndex
        self.perBlock = ShardFile.imagesPerBlock(imagesPerBlock, shape: shape)
        self.blocks = (count + perBlock - 1) / perBlock
        self.temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o666)
        guard fd >= 0 else {
            throw DataError.io(path: path, reason: "cannot write: \(SystemError.describe(errno: errno))")
        }
        self.fd = fd
        self.offset = ShardFile.headerSize + blocks * ShardFile.tableEntrySize
        block.reserveCapacity(perBlock * shape.dimension)
    }

    deinit {
        close(fd)
        if !finished { unlink(temporary) }
    }

    /// Appends the next image from `stream`.
    public func append(from stream: ImageStream) throws {
        precondition(written < count, "more images than the shard holds")
        try stream.next(into: &block)
        written += 1
        if written % perBlock == 0 || written == count { try flushBlock() }
    }

    /// Writes the header and table, renames the file into place and returns its size and SHA-256.
    public func finish() throws -> (bytes: Int, sha256: String) {
        precondition(written == count && block.isEmpty, "the shard is not complete")
        let header = ShardFile.header(
            shape: shape, count: count, firstIndex: firstIndex, perBlock: perBlock, table: table)
        try write(header + table, at: 0)
        if close(fd) != 0 {
            throw DataError.io(path: path, reason: "cannot write: \(SystemError.describe(errno: errno))")
        }
        let file = try ReadableFile(path: temporary)
        let sha256 = try Manifest.sha256Hex(file)
        guard rename(temporary, path) == 0 else {
            throw DataError.io(path: path, reason: "cannot rename into place: \(SystemError.describe(errno: errno))")
        }
        finished = true
        return (file.size, sha256)
    }

    private func flushBlock() throws {
        let entry = try ShardFile.compressBlock(block[...], at: offset, into: &table)
        try write(entry, at: offset)
        offset += entry.count
        block.removeAll(keepingCapacity: true)
    }

    private func write(_ bytes: [UInt8], at position: Int) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes {
                pwrite(fd, $0.baseAddress! + done, $0.count - done, off_t(position + done))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw DataError.io(path: path, reason: "cannot write: \(SystemError.describe(errno: errno))")
            }
            done += n
        }
    }
}
