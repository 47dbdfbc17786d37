import Foundation
import PSPCData
import PSPCTestSupport
import XCTest

/// An ingest into a folder that holds a dataset, failing midway (the disk fills), leaves the old dataset whole.
final class IngestReplaceTests: XCTestCase {
    func testFailedIngestKeepsTheOldDataset() throws {
        let volume = try SmallVolume(kilobytes: 160)
        defer { volume.remove() }
        let out = "\(volume.path)/data"
        try CommandRunner.succeed(["ingest", "--source", "fashion-mnist:train", "--limit", "40", "--shards", "2", "--out", out])
        let result = try CommandRunner.run(
            ["ingest", "--source", "fashion-mnist:test", "--limit", "2000", "--shards", "2", "--out", out])
        XCTAssertNotEqual(result.status, 0, "the bigger ingest fit: \(result.stderr)")
        XCTAssertTrue(result.stderr.contains("No space left on device (ENOSPC)"), result.stderr)
        let (manifest, parts) = try ShardStore.readAll(directory: out)
        XCTAssertEqual(manifest.count, 40)
        XCTAssertEqual(parts.count, 2)
        // A successful ingest replaces it.
        try CommandRunner.succeed(["ingest", "--source", "fashion-mnist:test", "--limit", "10", "--out", out])
        XCTAssertEqual(try ShardStore.readAll(directory: out).0.count, 10)
    }
}
