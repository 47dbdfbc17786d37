import Foundation

/// Whole-file reads and atomic writes with errors that name the file and the operating system's cause
/// ("out.npy: cannot write: No space left on device (ENOSPC)").
public enum FileIO {
    public static func read(_ path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw DataError.io(path: path, reason: "no such file") }
            throw DataError.io(path: path, reason: "cannot open for reading: \(SystemError.describe(errno: code))")
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var info = stat()
        if fstat(fd, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG { bytes.reserveCapacity(Int(info.st_size)) }
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { Foundation.read(fd, $0.baseAddress, $0.count) }
            if n == 0 { break }
            if n < 0 {
                if errno == EINTR { continue }
                throw DataError.io(path: path, reason: "cannot read: \(SystemError.describe(errno: errno))")
            }
            bytes += chunk[0..<n]
        }
        return bytes
    }

    /// Writes to a temporary file beside `path`, then renames it over `path`, so a reader never sees half a file.
    /// Refuses a `path` that exists and is not a regular file (a device such as /dev/full, a directory, a fifo):
    /// the rename would replace it with a file.
    public static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        try writeAtomically([(bytes, path)])
    }

    /// Writes several files so that either all of them are replaced or, when one fails, none of the new files is
    /// left: each goes to a temporary file first, and the renames come only once every temporary is complete. A
    /// rename failing half way removes the files of the set already renamed and the rest of the set, so a
    /// reader never finds a new file beside an old one of the same set (a pair of queries and clean images).
    public static func writeAtomically(_ files: [(bytes: [UInt8], path: String)]) throws {
        for file in files { try checkRegularOutput(file.path) }
        var temporaries: [String] = []
        func removeTemporaries() { for temporary in temporaries { unlink(temporary) } }
        do {
            for file in files {
                let directory = (file.path as NSString).deletingLastPathComponent
                if !directory.isEmpty { try createDirectory(directory) }
                let temporary = file.path + ".tmp-\(getpid())"
                temporaries.append(temporary)
                try write(file.bytes, to: temporary, naming: file.path)
            }
        } catch {
            removeTemporaries()
            throw error
        }
        for (k, file) in files.enumerated() where rename(temporaries[k], file.path) != 0 {
            let reason = SystemError.describe(errno: errno)
            removeTemporaries()
            for other in files where other.path != file.path { unlink(other.path) }
            let others = files.count > 1 ? " (the other files of its set were removed, none was kept half written)" : ""
            throw DataError.io(path: file.path, reason: "cannot rename into place: \(reason)\(others)")
        }
    }

    /// Writes `bytes` to `path` itself (created or truncated), naming `shown` in errors (the destination, when
    /// `path` is its temporary file). Every failing call says why: ENOSPC, EROFS, EACCES, EIO, ...
    public static func write(_ bytes: [UInt8], to path: String, naming shown: String? = nil) throws {
        let shown = shown ?? path
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o666)
        guard fd >= 0 else {
            throw DataError.io(path: shown, reason: "cannot write: \(SystemError.describe(errno: errno))")
        }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                close(fd)
                throw DataError.io(path: shown, reason: "cannot write: \(SystemError.describe(errno: code))")
            }
            written += n
        }
        // Some file systems (NFS, quotas) report a failed write only when the file is closed.
        if close(fd) != 0 {
            throw DataError.io(path: shown, reason: "cannot write: \(SystemError.describe(errno: errno))")
        }
    }

    /// `path` split at its last slash (trailing slashes dropped): the folder, with its slash ("" for a bare
    /// name), and the name. NSString's path methods crash on one-character paths in swift-corelibs-foundation
    /// ("x".deletingLastPathComponent), so pspc splits paths itself.
    public static func splitPath(_ path: String) -> (folder: String, name: String) {
        var trimmed = Substring(path)
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return ("", String(trimmed)) }
        return (String(trimmed[...slash]), String(trimmed[trimmed.index(after: slash)...]))
    }

    /// Creates `path` and its parents when missing (mkdir -p), with an error that names the folder and the cause.
    public static func createDirectory(_ path: String) throws {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += (prefix.isEmpty || prefix.hasSuffix("/") ? "" : "/") + component
            var info = stat()
            if stat(prefix, &info) == 0 {
                guard (info.st_mode & S_IFMT) == S_IFDIR else {
                    throw DataError.io(
                        path: prefix, reason: "cannot create directory \(path): \(prefix) exists and is not a directory")
                }
                continue
            }
            if mkdir(prefix, 0o777) != 0 && errno != EEXIST {
                let reason = SystemError.describe(errno: errno)
                throw DataError.io(path: prefix, reason: "cannot create directory: \(reason)")
            }
        }
    }

    /// What kind of file system object `path` is, when it exists and is not a regular file ("a directory",
    /// "a character device", ...); nil for a regular file (symbolic links followed) or nothing at all.
    public static func nonRegularKind(_ path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        switch info.st_mode & S_IFMT {
        case S_IFREG: return nil
        case S_IFDIR: return "a directory"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFIFO: return "a fifo"
        case S_IFSOCK: return "a socket"
        default: return "not a regular file"
        }
    }

    /// Refuses an output path that exists and is not a regular file: outputs are regular files only, and
    /// writing one by rename would replace a device node or fail obscurely on a directory.
    public static func checkRegularOutput(_ path: String) throws {
        if let kind = nonRegularKind(path) {
            throw DataError.invalid("\(path) is \(kind), not a regular file: pspc writes its outputs to regular files only")
        }
    }

    /// Whether two paths name the same file (same device and inode), through any links or spellings.
    public static func isSameFile(_ a: String, _ b: String) -> Bool {
        var sa = stat(), sb = stat()
        guard stat(a, &sa) == 0, stat(b, &sb) == 0 else { return false }
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
    }

    /// Checks an output path before a command computes: a regular file (or new), and none of `inputs`,
    /// since the result would replace what it is computed from.
    public static func checkOutput(_ output: String, option: String = "--output", inputs: [(option: String, path: String)])
        throws
    {
        try checkRegularOutput(output)
        for input in inputs where isSameFile(output, input.path) {
            throw DataError.invalid(
                "\(option) \(output) is the same file as \(input.option) \(input.path): write the result to another file")
        }
    }
}

/// A file opened for reading at offsets (pread), so a large archive or array is read piece by piece instead
/// of whole. Safe to share between threads: every read names its own offset.
public final class ReadableFile: @unchecked Sendable {
    public let path: String
    /// Size in bytes when opened.
    public let size: Int
    private let fd: Int32

    /// Opens `path`; errors match `FileIO.read`'s ("no such file", "cannot open for reading: ...").
    public init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw DataError.io(path: path, reason: "no such file") }
            throw DataError.io(path: path, reason: "cannot open for reading: \(SystemError.describe(errno: code))")
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let reason = SystemError.describe(errno: errno)
            close(fd)
            throw DataError.io(path: path, reason: "cannot read: \(reason)")
        }
        self.fd = fd
        self.path = path
        self.size = Int(info.st_size)
    }

    deinit { close(fd) }

    /// Exactly `count` bytes from `offset`; reading past the end is an error naming the file.
    public func read(at offset: Int, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try read(at: offset, into: &bytes, from: 0, count: count)
        return bytes
    }

    /// Reads `count` bytes from file `offset` into `buffer[start...]`.
    public func read(at offset: Int, into buffer: inout [UInt8], from start: Int, count: Int) throws {
        precondition(start >= 0 && count >= 0 && start + count <= buffer.count)
        var done = 0
        while done < count {
            let n = buffer.withUnsafeMutableBytes {
                pread(fd, $0.baseAddress! + start + done, count - done, off_t(offset + done))
            }
            if n == 0 {
                throw DataError.corrupt(
                    path: path, reason: "truncated: needs \(count) bytes at offset \(offset), the file has \(size)")
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw DataError.io(path: path, reason: "cannot read: \(SystemError.describe(errno: errno))")
            }
            done += n
        }
    }
}

/// A file written front to back through a buffer, to a temporary file beside `path` that `commit` renames
/// into place: a reader never sees half a file, and one dropped without `commit` is removed.
public final class OutputFile {
    public let path: String
    /// Bytes written so far (the offset of the next byte).
    public private(set) var offset = 0
    private let temporary: String
    private var fd: Int32
    private var buffer: [UInt8] = []
    private static let bufferSize = 1 << 20

    public init(path: String) throws {
        try FileIO.checkRegularOutput(path)
        let directory = FileIO.splitPath(path).folder
        if !directory.isEmpty { try FileIO.createDirectory(directory) }
        self.path = path
        self.temporary = path + ".tmp-\(getpid())"
        fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o666)
        guard fd >= 0 else {
            throw DataError.io(path: path, reason: "cannot write: \(SystemError.describe(errno: errno))")
        }
        buffer.reserveCapacity(Self.bufferSize)
    }

    deinit {
        if fd >= 0 {
            close(fd)
            unlink(temporary)
        }
    }

    public func write<Bytes: Collection>(_ bytes: Bytes) throws where Bytes.Element == UInt8 {
        buffer += bytes
        offset += bytes.count
        if buffer.count >= Self.bufferSize { try flush() }
    }

    /// Writes what is buffered, closes the file and renames it to `path`.
    public func commit() throws {
        try flush()
        let status = close(fd)
        fd = -1
        guard status == 0 else {
            let reason = SystemError.describe(errno: errno)
            unlink(temporary)
            throw DataError.io(path: path, reason: "cannot write: \(reason)")
        }
        guard rename(temporary, path) == 0 else {
            let reason = SystemError.describe(errno: errno)
            unlink(temporary)
            throw DataError.io(path: path, reason: "cannot rename into place: \(reason)")
        }
    }

    private func flush() throws {
        var done = 0
        while done < buffer.count {
            let n = buffer.withUnsafeBytes { Foundation.write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw DataError.io(path: path, reason: "cannot write: \(SystemError.describe(errno: errno))")
            }
            done += n
        }
        buffer.removeAll(keepingCapacity: true)
    }
}
