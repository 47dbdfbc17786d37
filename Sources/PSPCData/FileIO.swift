import Foundation

/// Whole-file reads and atomic writes with errors that name the file.
public enum FileIO {
    public static func read(_ path: String) throws -> [UInt8] {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            let exists = FileManager.default.fileExists(atPath: path)
            throw DataError.io(path: path, reason: exists ? "cannot be opened for reading" : "no such file")
        }
        defer { try? handle.close() }
        do {
            return [UInt8](try handle.readToEnd() ?? Data())
        } catch {
            throw DataError.io(path: path, reason: "read failed: \(error.localizedDescription)")
        }
    }

    /// Writes to a temporary file beside `path`, then renames it over `path`, so a reader never sees half a file.
    public static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent().path
        if !directory.isEmpty && !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw DataError.io(path: directory, reason: "cannot create directory: \(error.localizedDescription)")
            }
        }
        let temporary = path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(bytes)) else {
            throw DataError.io(path: path, reason: "cannot write")
        }
        if rename(temporary, path) != 0 {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw DataError.io(path: path, reason: "cannot rename into place: \(reason)")
        }
    }
}
