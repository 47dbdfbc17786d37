import Foundation
import PSPCCore
import PSPCData
import PSPCTestSupport
import XCTest

/// `pspc ingest` from every kind of source, read back through the shard store.
final class IngestTests: XCTestCase {
    var work = ""

    override func setUpWithError() throws { work = try CommandRunner.temporaryDirectory("ingest") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: work) }

    /// Ingests `source` into 2 shards and returns what the store reads back.
    func ingest(_ source: String, extra: [String] = []) throws -> (Manifest, ImageArray) {
        let out = "\(work)/shards-\(UUID().uuidString)"
        let result = try CommandRunner.succeed(["ingest", "--source", source, "--shards", "2", "--out", out] + extra)
        XCTAssertTrue(
            result.stderr.contains("write shards: 100%"),
            "plain progress lines expected off a terminal: \(result.stderr)")
        let (manifest, parts) = try ShardStore.readAll(directory: out)
        let pixels = parts.flatMap { $0.pixels }
        return (manifest, ImageArray(pixels: pixels, count: manifest.count, shape: manifest.shape))
    }

    func testFashionMNISTAndLimit() throws {
        let (manifest, images) = try ingest("fashion-mnist:test", extra: ["--limit", "50"])
        XCTAssertEqual(manifest.count, 50)
        XCTAssertEqual(manifest.shape, ImageShape(channels: 1, height: 28, width: 28))
        let direct = try IDXReader.read(path: "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", limit: 50)
        XCTAssertEqual(images, direct)
    }

    func testPlainIDX() throws {
        var bytes: [UInt8] = [0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 5]
        let pixels = (0..<30).map { UInt8($0 * 7) }
        bytes += pixels
        try FileIO.writeAtomically(bytes, to: "\(work)/images.idx")
        let (manifest, images) = try ingest("idx:\(work)/images.idx")
        XCTAssertEqual(manifest.shape, ImageShape(channels: 1, height: 2, width: 5))
        XCTAssertEqual(images.pixels, pixels)
    }

    func testNPYChannelsLast() throws {
        let n = 3, h = 4, w = 5, c = 3
        let hwc = (0..<(n * h * w * c)).map { UInt8($0 % 251) }
        try NPY.write(NPYArray(shape: [n, h, w, c], data: .uint8(hwc)), to: "\(work)/hwc.npy")
        let (manifest, images) = try ingest("npy:\(work)/hwc.npy", extra: ["--channels-last"])
        XCTAssertEqual(manifest.shape, ImageShape(channels: c, height: h, width: w))
        for i in 0..<n {
            for k in 0..<c {
                for p in 0..<(h * w) {
                    XCTAssertEqual(images.pixels[(i * c + k) * h * w + p], hwc[(i * h * w + p) * c + k])
                }
            }
        }
    }

    func testCIFAR10Batches() throws {
        func batch(_ first: Int, count: Int) -> [UInt8] {
            var bytes: [UInt8] = []
            for i in 0..<count {
                bytes.append(UInt8(i % 10))
                for j in 0..<3072 { bytes.append(UInt8((first + i + j) % 256)) }
            }
            return bytes
        }
        for b in 1...5 { try FileIO.writeAtomically(batch(b * 100, count: 2), to: "\(work)/cifar/data_batch_\(b).bin") }
        try FileIO.writeAtomically(batch(7, count: 3), to: "\(work)/cifar/test_batch.bin")
        let (train, trainImages) = try ingest("cifar10:\(work)/cifar")
        XCTAssertEqual(train.count, 10)
        XCTAssertEqual(train.shape, ImageShape(channels: 3, height: 32, width: 32))
        XCTAssertEqual(Array(trainImages.pixels[0..<3072]), Array(batch(100, count: 2)[1..<3073]))
        let (test, _) = try ingest("cifar10:\(work)/cifar:test")
        XCTAssertEqual(test.count, 3)
    }

    func testEDMZipOfPNGs() throws {
        let h = 6, w = 7
        var expected: [UInt8] = []
        try FileManager.default.createDirectory(atPath: "\(work)/png/00000", withIntermediateDirectories: true)
        for i in 0..<4 {
            let hwc = (0..<(h * w * 3)).map { UInt8(($0 * 13 + i * 31) % 256) }
            try FileIO.writeAtomically(
                try PNG.encode(pixels: hwc, width: w, height: h, channels: 3),
                to: "\(work)/png/00000/img0000000\(i).png")
            for k in 0..<3 { for p in 0..<(h * w) { expected.append(hwc[p * 3 + k]) } }
        }
        // The zip is made by Python's zipfile, an independent writer.
        try CommandRunner.python(
            """
            import zipfile, os
            with zipfile.ZipFile('\(work)/dataset.zip', 'w', zipfile.ZIP_DEFLATED) as z:
                z.writestr('dataset.json', '{"labels": null}')
                for name in sorted(os.listdir('\(work)/png/00000')):
                    z.write('\(work)/png/00000/' + name, '00000/' + name)
            """)
        let (manifest, images) = try ingest("edm-zip:\(work)/dataset.zip")
        XCTAssertEqual(manifest.shape, ImageShape(channels: 3, height: h, width: w))
        XCTAssertEqual(images.pixels, expected)
    }
}
