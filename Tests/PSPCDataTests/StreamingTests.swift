import Foundation
import PSPCCore
import PSPCData
import XCTest

/// The streaming writers and readers: shards written block by block are the bytes `ShardFile.encode` gives,
/// zips of any size (zip64 included) read back, and the synthetic images are pinned bit for bit.
final class StreamingTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws { directory = try DataTestSupport.makeTemporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: directory) }

    private func images(count: Int, shape: ImageShape) -> ImageArray {
        var state: UInt32 = 12345
        let pixels = (0..<(count * shape.dimension)).map { index -> UInt8 in
            state = state &* 1_664_525 &+ 1_013_904_223
            // Smooth in part, so blocks compress to different sizes.
            return index % 3 == 0 ? UInt8(truncatingIfNeeded: index / 7) : UInt8(truncatingIfNeeded: state >> 24)
        }
        return ImageArray(pixels: pixels, count: count, shape: shape)
    }

    func testStreamedShardsAreTheBytesOfEncode() throws {
        let shape = ImageShape(channels: 3, height: 64, width: 64)
        let all = images(count: 301, shape: shape)  // 85 images a 1 MiB block: several blocks a shard
        let manifest = try ShardStore.write(all, shards: 2, to: directory, source: "test")
        for (k, shard) in manifest.shards.enumerated() {
            let bytes = try FileIO.read(directory + "/" + shard.file)
            let expected = try ShardFile.encode(
                all.slice(shard.first..<(shard.first + shard.count)), firstIndex: shard.first)
            XCTAssertEqual(bytes, expected, "shard \(k)")
            XCTAssertEqual(shard.sha256, Manifest.sha256Hex(expected))
            XCTAssertEqual(shard.bytes, expected.count)
        }
        let (_, parts) = try ShardStore.readAll(directory: directory)
        XCTAssertEqual(parts.flatMap(\.pixels), all.pixels)
        let small = ImageShape(channels: 1, height: 2, width: 3)
        let few = images(count: 7, shape: small)
        let path = directory + "/blocks.pspc"
        let writer = try ShardWriter(path: path, shape: small, count: 7, firstIndex: 4, imagesPerBlock: 3)
        let stream = ImageStream(few)
        for _ in 0..<7 { try writer.append(from: stream) }
        _ = try writer.finish()
        XCTAssertEqual(try FileIO.read(path), try ShardFile.encode(few, firstIndex: 4, imagesPerBlock: 3))
        XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".tmp-\(getpid())"))
    }

    /// 70,000 entries: more than a zip without zip64 records can count.
    func testZip64ArchiveOfManyEntriesReadsBack() throws {
        let path = directory + "/many.zip"
        let zip = try ZipWriter(path: path)
        for i in 0..<70_000 { try zip.add(name: "e/\(i).bin", bytes: [UInt8(i & 255), UInt8(i >> 8 & 255)]) }
        try zip.add(name: "empty", bytes: [])
        try zip.finish()
        let archive = try ZipArchive(path: path)
        XCTAssertEqual(archive.entries.count, 70_001)
        for i in [0, 65_535, 69_999] {
            XCTAssertEqual(try archive.read(archive.entries[i]), [UInt8(i & 255), UInt8(i >> 8 & 255)])
        }
        XCTAssertEqual(try archive.read(archive.entries[70_000]), [])
        try DataTestSupport.runPython(
            """
            import sys, zipfile
            with zipfile.ZipFile(sys.argv[1]) as z:
                assert len(z.infolist()) == 70001 and z.testzip() is None
                assert z.read('e/256.bin') == bytes([0, 1]) and z.read('e/69999.bin') == bytes([111, 17])
            """, arguments: [path])
        // Reading from the file at offsets and from memory index the same entries.
        XCTAssertEqual(try ZipArchive(bytes: try FileIO.read(path), name: path).entries, archive.entries)
    }

    func testStreamsReadWhatTheWholeReadersRead() throws {
        let shape = ImageShape(channels: 3, height: 4, width: 5)
        let all = images(count: 9, shape: shape)
        let zip = try ZipWriter(path: directory + "/d.zip")
        for i in 0..<9 {
            var hwc = [UInt8](repeating: 0, count: shape.dimension)
            for c in 0..<3 { for p in 0..<20 { hwc[p * 3 + c] = all.pixels[i * 60 + c * 20 + p] } }
            try zip.add(
                name: SyntheticWriter.zipEntryName(i),
                bytes: try PNG.encode(pixels: hwc, width: 5, height: 4, channels: 3))
        }
        try zip.finish()
        let stream = try EDMZipReader.open(path: directory + "/d.zip", limit: 7)
        XCTAssertEqual(stream.count, 7)
        XCTAssertEqual(stream.shape, shape)
        XCTAssertEqual(try stream.readAll(), all.prefix(7))
        XCTAssertEqual(try EDMZipReader.read(path: directory + "/d.zip"), all)

        try NPY.write(NPYArray(shape: [9, 3, 4, 5], data: .uint8(all.pixels)), to: directory + "/d.npy")
        XCTAssertEqual(
            try DatasetSource.npy(path: directory + "/d.npy", channelsLast: false).open(limit: 4).readAll(),
            all.prefix(4))
        var truncated = try FileIO.read(directory + "/d.npy")
        truncated.removeLast()
        try FileIO.writeAtomically(truncated, to: directory + "/t.npy")
        DataTestSupport.assertThrows(
            try DatasetSource.npy(path: directory + "/t.npy", channelsLast: false).open(), .corrupt,
            mentioning: ["t.npy", "truncated"])
    }

    /// Image i follows from the seed and i alone: pinned here, so a change to the generator shows.
    func testSyntheticImagesArePinned() throws {
        let items = images(count: 5, shape: ImageShape(channels: 1, height: 28, width: 28))
        let labels: [UInt8] = [0, 1, 2, 3, 4]
        for shape in [ImageShape(channels: 3, height: 32, width: 32), ImageShape(channels: 1, height: 28, width: 28)] {
            let a = try SyntheticImages(shape: shape, seed: 3, items: items, labels: labels)
            let b = try SyntheticImages(shape: shape, seed: 3, items: items, labels: labels)
            let c = try SyntheticImages(shape: shape, seed: 4, items: items, labels: labels)
            XCTAssertEqual(a.image(17).pixels, b.image(17).pixels)
            XCTAssertNotEqual(a.image(17).pixels, c.image(17).pixels)
            XCTAssertNotEqual(a.image(17).pixels, a.image(18).pixels)
            XCTAssertEqual(a.image(17).pixels.count, shape.dimension)
        }
        let pinned = try SyntheticImages(
            shape: ImageShape(channels: 3, height: 64, width: 64), seed: 1, items: items, labels: labels)
        let bytes = (0..<8).flatMap { pinned.image($0).pixels } + (0..<8).map { pinned.image($0).label }
        XCTAssertEqual(Manifest.sha256Hex(bytes), "9a2badd96661bcefb0584a7fcdfe9eb59a9329ffd1e9c41d3ec2927f1ad2db77")
    }

    func testSplitPathHandlesOneCharacterNames() {
        XCTAssertEqual(FileIO.splitPath("s").folder, "")
        XCTAssertEqual(FileIO.splitPath("s").name, "s")
        XCTAssertEqual(FileIO.splitPath("a/b/").folder, "a/")
        XCTAssertEqual(FileIO.splitPath("a/b/").name, "b")
        XCTAssertEqual(FileIO.splitPath("/x").folder, "/")
        XCTAssertEqual(FileIO.splitPath("/x").name, "x")
    }
}
