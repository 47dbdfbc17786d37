import Foundation
import PSPCData
import PSPCTestSupport
import XCTest

/// Valid JSON with a value of the wrong type names the key and the value, instead of "not valid JSON".
final class ManifestTypeTests: XCTestCase {
    func testWrongTypedCountNamesTheKey() throws {
        let work = try CommandRunner.temporaryDirectory("manifest")
        defer { try? FileManager.default.removeItem(atPath: work) }
        try CommandRunner.succeed(["ingest", "--source", "fashion-mnist:train", "--limit", "20", "--out", "\(work)/data"])
        let manifest = "\(work)/data/manifest.json"
        let good = String(decoding: try FileIO.read(manifest), as: UTF8.self)
        XCTAssertTrue(good.contains("\"count\" : 20,"))
        for (value, shown) in [("1.5", "1.5"), ("\"3\"", "\"3\"")] {
            try FileIO.writeAtomically(Array(good.replacingOccurrences(of: "\"count\" : 20,", with: "\"count\" : \(value),").utf8), to: manifest)
            let result = try CommandRunner.run(["info", "--data", "\(work)/data"])
            XCTAssertNotEqual(result.status, 0)
            XCTAssertTrue(
                result.stderr.contains("manifest.json: corrupt: not a valid manifest: key 'count' must be an integer, got \(shown)"),
                result.stderr)
            XCTAssertFalse(result.stderr.contains("not valid JSON"), result.stderr)
        }
    }
}
