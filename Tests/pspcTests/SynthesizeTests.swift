import Foundation
import PSPCCore
import PSPCData
import PSPCTestSupport
import XCTest

/// `pspc synthesize`: the same seed gives the same bytes (for any thread count), each format ingests back
/// to the same pixels, and the zip is one Python's zipfile reads.
final class SynthesizeTests: XCTestCase {
    var work = ""

    override func setUpWithError() throws { work = try CommandRunner.temporaryDirectory("synthesize") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: work) }

    @discardableResult
    func synthesize(
        _ shape: String, _ format: String, to out: String, count: Int = 200, seed: Int = 7, extra: [String] = []
    )
        throws -> CommandRunner.Result
    {
        try CommandRunner.succeed(
            [
                "synthesize", "--shape", shape, "--count", "\(count)", "--seed", "\(seed)", "--format", format, "--out",
                out, "--source", "fashion-mnist:test",
            ]
                + extra)
    }

    /// Ingests `source` into 3 shards and returns every image the store reads back.
    func ingest(_ source: String) throws -> ImageArray {
        let out = "\(work)/shards-\(UUID().uuidString)"
        try CommandRunner.succeed(["ingest", "--source", source, "--shards", "3", "--out", out])
        let (manifest, parts) = try ShardStore.readAll(directory: out)
        return ImageArray(pixels: parts.flatMap(\.pixels), count: manifest.count, shape: manifest.shape)
    }

    func testSameSeedSameBytesForAnyThreadCountOtherSeedDiffers() throws {
        try synthesize("3x32x32", "zip", to: "\(work)/a.zip", extra: ["--threads", "1"])
        try synthesize("3x32x32", "zip", to: "\(work)/b.zip", extra: ["--threads", "3"])
        try synthesize("3x32x32", "zip", to: "\(work)/c.zip", seed: 8)
        let a = try FileIO.read("\(work)/a.zip"), b = try FileIO.read("\(work)/b.zip")
        XCTAssertEqual(a, b, "one seed, two thread counts, two zips")
        XCTAssertNotEqual(a, try FileIO.read("\(work)/c.zip"))

        try synthesize("1x28x28", "npy", to: "\(work)/a.npy", extra: ["--threads", "2"])
        try synthesize("1x28x28", "npy", to: "\(work)/b.npy", extra: ["--threads", "1"])
        XCTAssertEqual(try FileIO.read("\(work)/a.npy"), try FileIO.read("\(work)/b.npy"))
        XCTAssertEqual(try FileIO.read("\(work)/a.labels.npy"), try FileIO.read("\(work)/b.labels.npy"))
    }

    /// The npy array is the reference: the zip's PNGs and the CIFAR batches of the same seed hold its pixels.
    func testEveryFormatIngestsToTheSamePixels() throws {
        for shape in ["3x32x32", "3x64x64", "1x28x28"] {
            try synthesize(shape, "npy", to: "\(work)/\(shape).npy")
            try synthesize(shape, "zip", to: "\(work)/\(shape).zip")
            let array = try NPY.read(path: "\(work)/\(shape).npy")
            let parts = shape.split(separator: "x").map { Int($0)! }
            XCTAssertEqual(array.shape, [200] + parts)
            guard case .uint8(let reference) = array.data else { return XCTFail("npy of \(shape) is not uint8") }
            let fromNPY = try ingest("npy:\(work)/\(shape).npy")
            XCTAssertEqual(fromNPY.shape, ImageShape(channels: parts[0], height: parts[1], width: parts[2]))
            XCTAssertEqual(fromNPY.pixels, reference, shape)
            XCTAssertEqual(try ingest("edm-zip:\(work)/\(shape).zip").pixels, reference, shape)
            // Structured, not constant: images differ from each other and use much of the range.
            let dimension = parts.reduce(1, *)
            XCTAssertNotEqual(Array(reference[0..<dimension]), Array(reference[dimension..<(2 * dimension)]))
            XCTAssertGreaterThan(Set(reference).count, 200, shape)
        }
        try synthesize("3x32x32", "cifar", to: "\(work)/cifar")
        XCTAssertEqual(
            try ingest("cifar10:\(work)/cifar").pixels,
            try FileIO.read("\(work)/3x32x32.npy").suffix(200 * 3072).map { $0 })
    }

    /// Labels agree across formats: dataset.json in the zip, the label byte of each CIFAR record, the labels npy.
    func testLabelsAreTheItemsClasses() throws {
        try synthesize("3x32x32", "npy", to: "\(work)/s.npy", count: 50)
        try synthesize("3x32x32", "cifar", to: "\(work)/cifar", count: 50)
        try synthesize("3x32x32", "zip", to: "\(work)/s.zip", count: 50)
        guard case .uint8(let labels) = try NPY.read(path: "\(work)/s.labels.npy").data else {
            return XCTFail("labels are not uint8")
        }
        XCTAssertEqual(labels.count, 50)
        XCTAssertTrue(labels.allSatisfy { $0 < 10 })
        XCTAssertGreaterThan(Set(labels).count, 3)
        var cifar: [UInt8] = []
        for b in 1...5 {
            let bytes = try FileIO.read("\(work)/cifar/data_batch_\(b).bin")
            XCTAssertEqual(bytes.count, 10 * 3073, "50 images over 5 batches")
            cifar += stride(from: 0, to: bytes.count, by: 3073).map { bytes[$0] }
        }
        XCTAssertEqual(cifar, labels)
        let archive = try ZipArchive(path: "\(work)/s.zip")
        let json = try archive.read(archive.entries.first { $0.name == "dataset.json" }!)
        let decoded = try JSONSerialization.jsonObject(with: Data(json)) as! [String: [[Any]]]
        let pairs = decoded["labels"]!
        XCTAssertEqual(pairs.map { $0[0] as! String }, (0..<50).map(SyntheticWriter.zipEntryName))
        XCTAssertEqual(pairs.map { UInt8($0[1] as! Int) }, labels)
    }

    /// Python's zipfile, an independent reader, finds EDM's layout and every CRC right.
    func testZipIsWhatPythonReads() throws {
        try synthesize("3x64x64", "zip", to: "\(work)/s.zip", count: 30)
        try CommandRunner.python(
            """
            import zipfile, json
            with zipfile.ZipFile('\(work)/s.zip') as z:
                assert z.testzip() is None
                names = z.namelist()
                assert names[:2] == ['00000/img00000000.png', '00000/img00000001.png'], names[:2]
                assert len(names) == 31 and names[-1] == 'dataset.json'
                assert all(z.read(n)[:8] == b'\\x89PNG\\r\\n\\x1a\\n' for n in names[:-1])
                assert len(json.loads(z.read('dataset.json'))['labels']) == 30
            """)
    }

    func testRefusesWhatItCannotWrite() throws {
        for (arguments, message) in [
            (["--shape", "3x64x64", "--format", "cifar"], "3x32x32"),
            (["--shape", "2x32x32", "--format", "npy"], "1 or 3 channels"),
            (["--shape", "3x32", "--format", "npy"], "CxHxW"),
            (["--shape", "3x32x32", "--format", "tiff"], "zip, npy or cifar"),
        ] {
            let result = try CommandRunner.run(
                ["synthesize", "--count", "10", "--out", "\(work)/x"] + arguments)
            XCTAssertNotEqual(result.status, 0, "\(arguments)")
            XCTAssertTrue(result.stderr.contains(message), "\(arguments): \(result.stderr)")
            XCTAssertFalse(result.crashed)
        }
    }

    /// Ingest streams: 40,000 images of 3x64x64 (491 MB of pixels, one shard) go through in far less memory
    /// than the pixels (measured: about 85 MB). The zip repeats a few PNGs so that it is quick to make.
    func testIngestOfALargeZipStaysFarBelowTheDatasetSize() throws {
        let count = 40_000, side = 64
        let pngs = try (0..<7).map { k in
            try PNG.encode(
                pixels: (0..<(side * side * 3)).map { UInt8(truncatingIfNeeded: $0 * (k + 3) / 5) }, width: side,
                height: side, channels: 3)
        }
        let zip = try ZipWriter(path: "\(work)/large.zip")
        for i in 0..<count { try zip.add(name: SyntheticWriter.zipEntryName(i), bytes: pngs[i % 7]) }
        try zip.finish()
        let (status, peakKiB) = try Self.runMeasuringPeakMemory(
            ["ingest", "--source", "edm-zip:\(work)/large.zip", "--out", "\(work)/large"])
        XCTAssertEqual(status, 0)
        let pixelsKiB = count * 3 * side * side / 1024
        print("ingest of \(count) 3x\(side)x\(side) images: peak RSS \(peakKiB) KiB for \(pixelsKiB) KiB of pixels")
        XCTAssertLessThan(peakKiB, 300 * 1024, "peak \(peakKiB) KiB ingesting \(pixelsKiB) KiB of pixels")
        let manifest = try Manifest.read(directory: "\(work)/large")
        XCTAssertEqual(manifest.count, count)
        XCTAssertEqual(manifest.shards.count, 1)
    }

    /// Runs pspc (output discarded) and returns its exit status and peak resident set size in KiB.
    static func runMeasuringPeakMemory(_ arguments: [String]) throws -> (status: Int32, peakKiB: Int) {
        let argv: [UnsafeMutablePointer<CChar>?] = ([CommandRunner.binary.path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var pid = pid_t()
        let binary = CommandRunner.binary.path
        guard posix_spawn(&pid, binary, &actions, nil, argv, environ) == 0 else {
            throw DataError.io(path: binary, reason: "cannot start")
        }
        // The peak is read from the child's own /proc status (VmHWM, the high-water mark of its memory since
        // exec), not from wait4's rusage: a child spawned with vfork carries the parent's high-water mark into its
        // ru_maxrss, so a test process that has grown (other tests ran before) would be measured instead.
        var status: Int32 = 0
        var peak = 0
        while true {
            if let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
                let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
                let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true)[1])
            {
                peak = max(peak, kib)
            }
            let done = waitpid(pid, &status, WNOHANG)
            if done == pid || (done < 0 && errno != EINTR) { break }
            usleep(20_000)
        }
        let exited = status & 0x7F == 0
        return (exited ? (status >> 8) & 0xFF : -1, peak)
    }
}
