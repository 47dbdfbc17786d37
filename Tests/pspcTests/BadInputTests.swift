import Foundation
import PSPCCore
import PSPCData
import PSPCTestSupport
import XCTest

/// Bad input gets one clear line on stderr and a non-zero exit, never a crash, and writes nothing.
final class BadInputTests: XCTestCase {
    static let work: String = try! CommandRunner.temporaryDirectory("bad")

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: work)
        super.tearDown()
    }

    static let prepared: Bool = {
        _ = try! CommandRunner.run([
            "ingest", "--source", "fashion-mnist:train", "--limit", "300", "--shards", "3", "--out", "\(work)/good",
        ])
        let z = [Float](repeating: 0.1, count: 2 * 784)
        try! NPY.write(NPYArray(shape: [2, 1, 28, 28], data: .float32(z)), to: "\(work)/z.npy")
        return true
    }()

    /// Copies the good dataset so a test can damage it.
    func copyOfData(_ name: String) throws -> String {
        XCTAssertTrue(Self.prepared)
        let path = "\(Self.work)/\(name)"
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.copyItem(atPath: "\(Self.work)/good", toPath: path)
        return path
    }

    /// Runs a denoise that must fail with a message containing `expected`, and must not write its output.
    func expectFailure(_ arguments: [String], _ expected: String, file: StaticString = #filePath, line: UInt = #line)
        throws
    {
        let output = "\(Self.work)/never-\(UUID().uuidString).npy"
        var args = arguments
        if args.first == "denoise" { args += ["--output", output] }
        let result = try CommandRunner.run(args)
        XCTAssertFalse(result.crashed, "crashed: \(result.stderr)", file: file, line: line)
        XCTAssertNotEqual(result.status, 0, "accepted: pspc \(args.joined(separator: " "))", file: file, line: line)
        XCTAssertTrue(result.stderr.contains(expected), "stderr was: \(result.stderr)", file: file, line: line)
        XCTAssertFalse(
            FileManager.default.fileExists(atPath: output), "wrote output despite the error", file: file, line: line)
    }

    func denoise(_ data: String, input: String? = nil, t: String = "1", method: [String] = ["--method", "empirical"])
        -> [String]
    {
        ["denoise", "--data", data, "--t=\(t)", "--input", input ?? "\(Self.work)/z.npy"] + method
    }

    func testTruncatedShard() throws {
        let data = try copyOfData("truncated")
        let shard = "\(data)/\(ShardStore.shardFileName(1, of: 3))"
        let bytes = try FileIO.read(shard)
        try FileIO.writeAtomically(Array(bytes[0..<(bytes.count / 2)]), to: shard)
        try expectFailure(denoise(data), "shard-00001-of-00003.pspc: corrupt:")
        try expectFailure(denoise(data), "truncated")
    }

    func testBitFlippedShardNamesShardAndBlock() throws {
        let data = try copyOfData("flipped")
        let shard = "\(data)/\(ShardStore.shardFileName(2, of: 3))"
        var bytes = try FileIO.read(shard)
        bytes[bytes.count - 100] ^= 0x10
        try FileIO.writeAtomically(bytes, to: shard)
        try expectFailure(denoise(data), "shard-00002-of-00003.pspc: corrupt: block 0 checksum mismatch")
    }

    func testManifestNamingAMissingFile() throws {
        let data = try copyOfData("missing")
        try FileManager.default.removeItem(atPath: "\(data)/\(ShardStore.shardFileName(0, of: 3))")
        try expectFailure(denoise(data), "shard named in the manifest is missing")
    }

    func testBadQueries() throws {
        XCTAssertTrue(Self.prepared)
        let good = "\(Self.work)/good", w = Self.work
        try NPY.write(
            NPYArray(shape: [2, 1, 27, 28], data: .float32(.init(repeating: 0, count: 2 * 27 * 28))),
            to: "\(w)/shape.npy")
        try expectFailure(denoise(good, input: "\(w)/shape.npy"), "queries are [2, 1, 27, 28], expected [B, 1, 28, 28]")
        try NPY.write(
            NPYArray(shape: [2, 1, 28, 28], data: .uint8(.init(repeating: 0, count: 2 * 784))), to: "\(w)/dtype.npy")
        try expectFailure(denoise(good, input: "\(w)/dtype.npy"), "must be float32 or float64")
        for (name, value) in [("nan", Float.nan), ("inf", Float.infinity)] {
            var z = [Float](repeating: 0, count: 2 * 784)
            z[900] = value
            try NPY.write(NPYArray(shape: [2, 1, 28, 28], data: .float32(z)), to: "\(w)/\(name).npy")
            try expectFailure(denoise(good, input: "\(w)/\(name).npy"), "query 1 holds a non-finite value")
        }
        try expectFailure(denoise(good, input: "\(w)/absent.npy"), "absent.npy: no such file")
    }

    func testBadArguments() throws {
        XCTAssertTrue(Self.prepared)
        let good = "\(Self.work)/good"
        try expectFailure(denoise(good, t: "0"), "--t must be positive")
        try expectFailure(denoise(good, t: "-1"), "--t must be positive")
        try expectFailure(
            denoise(good, method: ["--method", "pspc-square", "--patch-size", "29"]),
            "patch size 29 is larger than the 28x28 image")
        try expectFailure(denoise(good, method: ["--method", "magic"]), "unknown method 'magic'")
        for machine in ["ls", "els"] {
            for bad in ["4", "0", "-3"] {
                try expectFailure(
                    denoise(good, method: ["--method", machine, "--patch-size=\(bad)"]),
                    "\(machine): --patch-size must be odd and at least 1")
            }
            try expectFailure(
                denoise(good, method: ["--method", machine]), "\(machine) needs exactly one of --patch-size and --scale-schedule")
            try expectFailure(
                denoise(good, method: ["--method", machine, "--scale-schedule", "cifar10"]),
                "the LS / ELS window size must be odd and at least 1 (windows are centred on a pixel), got 32")
        }
        try expectFailure(["ingest", "--source", "nonsense:x", "--out", "\(Self.work)/x"], "unknown source")
        try expectFailure(
            ["ingest", "--source", "idx:\(Self.work)/z.npy", "--out", "\(Self.work)/x"], "not an IDX file")
    }
}
