import Foundation
import PSPCData
import XCTest

import PSPCExperiments

/// A run folder is locked by its writer: a second writer is refused while the first holds it.
final class RunLockTests: XCTestCase {
    func testSecondWriterIsRefusedUntilTheFirstReleases() throws {
        let path = NSTemporaryDirectory() + "pspc-lock-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let run = RunDirectory(path)
        var first: RunLock? = try run.lock()
        XCTAssertThrowsError(try run.lock()) { error in
            XCTAssertEqual("\(error)", "run folder \(path) is in use by another pspc process (pid \(getpid()))")
        }
        first?.release()
        first = nil
        let second = try run.lock()
        second.release()
    }
}
