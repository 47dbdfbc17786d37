import Foundation
import XCTest

/// A tiny tmpfs mounted for one test, to meet real ENOSPC and EROFS: tests run as root, so file permissions
/// cannot make a write fail, but a full or read-only file system can. Where mounting is not allowed (not root,
/// no CAP_SYS_ADMIN) it throws `VolumeError`, so the test fails instead of passing without its check.
public final class SmallVolume {
    public let path: String

    /// Mounts a tmpfs of `kilobytes` at a fresh folder.
    public init(kilobytes: Int) throws {
        path = try CommandRunner.temporaryDirectory("volume")
        guard Self.mount(["-t", "tmpfs", "-o", "size=\(kilobytes)k", "tmpfs", path]) else {
            try? FileManager.default.removeItem(atPath: path)
            throw VolumeError(reason: "cannot mount a tmpfs (the file-system tests need root)")
        }
    }

    /// Remounts the volume read-only (EROFS for every write).
    public func makeReadOnly() throws {
        guard Self.mount(["-o", "remount,ro", path]) else { throw VolumeError(reason: "cannot remount the tmpfs read-only") }
    }

    /// Unmounts and removes the folder.
    public func remove() {
        _ = Self.run("/bin/umount", [path])
        try? FileManager.default.removeItem(atPath: path)
    }

    static func mount(_ arguments: [String]) -> Bool { run("/bin/mount", arguments) }

    static func run(_ tool: String, _ arguments: [String]) -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }
}

/// Why a test volume could not be made: the test fails with it (it does not skip).
public struct VolumeError: Error, CustomStringConvertible {
    public var reason: String
    public var description: String { reason }
}
