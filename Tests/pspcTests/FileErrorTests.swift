import Foundation
import PSPCTestSupport
import XCTest

import PSPCData

/// Every failed write says why (ENOSPC, EROFS, EACCES, ...), Foundation's errors are put in words, and outputs go
/// to regular files only.
final class FileErrorTests: XCTestCase {
    var work = ""

    override func setUpWithError() throws { work = try CommandRunner.temporaryDirectory("files") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: work) }

    func message(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            try body()
            XCTFail("no error", file: file, line: line)
            return ""
        } catch {
            return "\(error)"
        }
    }

    func testErrnoNamesAndText() {
        XCTAssertEqual(SystemError.describe(errno: ENOSPC), "No space left on device (ENOSPC)")
        XCTAssertEqual(SystemError.describe(errno: EROFS), "Read-only file system (EROFS)")
        XCTAssertEqual(SystemError.describe(errno: EACCES), "Permission denied (EACCES)")
        XCTAssertEqual(SystemError.describe(errno: EADDRINUSE), "Address already in use (EADDRINUSE)")
    }

    /// /dev/full fails every write with ENOSPC: the message names the file and the cause.
    func testWriteToDevFullSaysNoSpace() {
        let text = message { try FileIO.write([1, 2, 3], to: "/dev/full") }
        XCTAssertEqual(text, "/dev/full: cannot write: No space left on device (ENOSPC)")
    }

    /// A full file system: the atomic write names the destination (not its temporary) and ENOSPC, and leaves
    /// no temporary behind.
    func testAtomicWriteOnAFullVolumeSaysNoSpace() throws {
        let volume = try SmallVolume(kilobytes: 16)
        defer { volume.remove() }
        let text = message { try FileIO.writeAtomically([UInt8](repeating: 7, count: 64 << 10), to: "\(volume.path)/out.npy") }
        XCTAssertEqual(text, "\(volume.path)/out.npy: cannot write: No space left on device (ENOSPC)")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: volume.path), [])
    }

    func testAtomicWriteOnAReadOnlyVolumeSaysEROFS() throws {
        let volume = try SmallVolume(kilobytes: 16)
        defer { volume.remove() }
        try volume.makeReadOnly()
        let text = message { try FileIO.writeAtomically([1], to: "\(volume.path)/out.npy") }
        XCTAssertEqual(text, "\(volume.path)/out.npy: cannot write: Read-only file system (EROFS)")
        let folder = message { try FileIO.writeAtomically([1], to: "\(volume.path)/new/out.npy") }
        XCTAssertEqual(folder, "\(volume.path)/new: cannot create directory: Read-only file system (EROFS)")
    }

    /// Foundation's CocoaError becomes "cannot write PATH: cause (ERRNO)" (or read, or access when Foundation
    /// does not say which).
    func testCocoaErrorsInWords() {
        do {
            try Data([1]).write(to: URL(fileURLWithPath: "\(work)/absent/x.bin"))
            XCTFail("wrote into a missing folder")
        } catch {
            XCTAssertEqual(
                SystemError.describe(error), "cannot access \(work)/absent/x.bin: No such file or directory (ENOENT)")
        }
        let readOnly = CocoaError(.fileWriteVolumeReadOnly, userInfo: [NSFilePathErrorKey: "/mnt/out.npy"])
        XCTAssertEqual(SystemError.describe(readOnly), "cannot write /mnt/out.npy: Read-only file system (EROFS)")
        let denied = CocoaError(.fileReadNoPermission, userInfo: [NSFilePathErrorKey: "/root/z.npy"])
        XCTAssertEqual(SystemError.describe(denied), "cannot read /root/z.npy: Permission denied (EACCES)")
        XCTAssertNil(SystemError.describe(DataError.invalid("not a file error")))
    }

    /// An existing fifo or directory is refused as an output and left as it was (rename would replace it).
    func testOutputsGoToRegularFilesOnly() throws {
        let fifo = "\(work)/pipe"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        let text = message { try FileIO.writeAtomically([1], to: fifo) }
        XCTAssertEqual(text, "\(fifo) is a fifo, not a regular file: pspc writes its outputs to regular files only")
        XCTAssertEqual(FileIO.nonRegularKind(fifo), "a fifo")
        XCTAssertEqual(FileIO.nonRegularKind("/dev/full"), "a character device")
        try FileManager.default.createDirectory(atPath: "\(work)/folder", withIntermediateDirectories: false)
        XCTAssertTrue(message { try FileIO.writeAtomically([1], to: "\(work)/folder") }.contains("is a directory"))
        XCTAssertTrue(message { try FileIO.writeAtomically([1], to: "/dev/full") }.contains("is a character device"))
        XCTAssertEqual(FileIO.nonRegularKind("/dev/full"), "a character device")
    }

    /// A set of files is written whole or not at all: the second failing leaves no new first file.
    func testASetOfFilesIsAllOrNothing() throws {
        try FileIO.writeAtomically([9], to: "\(work)/blocker")
        let text = message {
            try FileIO.writeAtomically([([1], "\(work)/z.npy"), ([2], "\(work)/blocker/x0.npy")])
        }
        XCTAssertTrue(text.contains("blocker exists and is not a directory"), text)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(work)/z.npy"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: work), ["blocker"])
    }

    func testSameFileThroughAnotherPath() throws {
        try FileIO.writeAtomically([1], to: "\(work)/z.npy")
        try FileManager.default.createSymbolicLink(atPath: "\(work)/link.npy", withDestinationPath: "\(work)/z.npy")
        XCTAssertTrue(FileIO.isSameFile("\(work)/z.npy", "\(work)/./link.npy"))
        XCTAssertFalse(FileIO.isSameFile("\(work)/z.npy", "\(work)/other.npy"))
        let text = message {
            try FileIO.checkOutput("\(work)/link.npy", inputs: [("--input", "\(work)/z.npy")])
        }
        XCTAssertTrue(text.contains("is the same file as --input"), text)
    }
}
