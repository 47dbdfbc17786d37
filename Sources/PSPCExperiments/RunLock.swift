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
