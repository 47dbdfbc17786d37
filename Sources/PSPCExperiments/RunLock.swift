import Foundation
import PSPCData

/// An exclusive advisory lock (flock) on a run directory's `.lock` file, held while a command writes the run,
/// so two commands on the same --out do not mix their results. The kernel releases it when the process ends,
/// even by SIGKILL, so a killed run can be resumed at once.
public final class RunLock: @unchecked Sendable {
    private var descriptor: Int32

    /// Takes the lock of the run at `path` (creating the folder), or throws naming the process that holds it.
    public init(_ path: String) throws {
        try FileIO.createDirectory(path)
        let file = (path as NSString).appendingPathComponent(".lock")
        descriptor = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw DataError.io(path: file, reason: "cannot open the run's lock: \(SystemError.describe(errno: errno))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? FileIO.read(file)).map { String(decoding: $0, as: UTF8.self) } ?? ""
            close(descriptor)
            let pid = holder.trimmingCharacters(in: .whitespacesAndNewlines)
            throw DataError.invalid(
                "run folder \(path) is in use by another pspc process\(pid.isEmpty ? "" : " (pid \(pid))")")
        }
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(descriptor, 0)
        _ = text.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) }
    }

    /// Releases the lock (also done when the lock is freed or the process ends).
    public func release() {
        guard descriptor >= 0 else { return }
        close(descriptor)
        descriptor = -1
    }

    deinit { release() }
}

/// The run-folder locks one command holds for the whole of its write: the folder it writes, when that is a run
/// (or becomes one), and the run folder directly enclosing it (a run's `calibration/` or `report/`), outer one
/// first. Taking them fails like `RunLock` when another process holds either, before anything is written.
public final class RunLocks: @unchecked Sendable {
    private var held: [(lock: RunLock, path: String, created: Bool)] = []

    /// Locks for writing into `path`; `makesRun` says the command turns `path` into a run folder (it is locked
    /// even when it does not exist yet).
    public init(writing path: String, makesRun: Bool) throws {
        let parent = (path as NSString).deletingLastPathComponent
        var folders: [String] = []
        if Self.isRun(parent.isEmpty ? "." : parent) { folders.append(parent.isEmpty ? "." : parent) }
        if makesRun || Self.isRun(path) { folders.append(path) }
        for folder in folders {
            let existed = FileManager.default.fileExists(atPath: folder)
            held.append((try RunLock(folder), folder, !existed))
        }
    }

    /// Whether `path` holds a run (a config.json naming its kind).
    static func isRun(_ path: String) -> Bool { (try? RunDirectory(path).kind()) != nil }

    /// Releases the locks, inner one first. A folder the lock created that still holds nothing but the lock
    /// (the command failed before writing) is removed again, so the corrected command starts afresh.
    public func release() {
        for entry in held.reversed() {
            entry.lock.release()
            guard entry.created,
                (try? FileManager.default.contentsOfDirectory(atPath: entry.path)) == [".lock"]
            else { continue }
            unlink((entry.path as NSString).appendingPathComponent(".lock"))
            rmdir(entry.path)
        }
        held.removeAll()
    }

    deinit { release() }
}
