import Foundation
import PSPCCore
import PSPCData
import XCTest

final class EDMZipReaderTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = try DataTestSupport.makeTemporaryDirectory()
        // Zips laid out as EDM's dataset_tool writes them, PNGs made with zlib + struct. Pixel value of
        // image i, channel c, row y, column x: (31 i + 13 y + 3 x + 50 c) % 256, so tests can recompute it.
        try DataTestSupport.runPython(
            """
            import sys, zipfile, zlib, struct, json
            d = sys.argv[1]
            def chunk(t, data):
                return struct.pack('>I', len(data)) + t + data + struct.pack('>I', zlib.crc32(t + data) & 0xffffffff)
            def png(i, w, h, ctype, spp, extra=b''):
                px = lambda c, y, x: (31 * i + 13 * y + 3 * x + 50 * c) % 256
                if ctype == 3:
                    rows = [bytes([0] + [(y + x) % 4 for x in range(w)]) for y in range(h)]
                else:
                    rows = [bytes([0] + [px(c, y, x) for x in range(w) for c in range(spp)]) for y in range(h)]
                return (b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, ctype, 0, 0, 0))
                        + extra + chunk(b'IDAT', zlib.compress(b''.join(rows))) + chunk(b'IEND', b''))
            def make(name, images):
                with zipfile.ZipFile(d + '/' + name, 'w', zipfile.ZIP_DEFLATED) as z:
                    labels = []
                    # Written out of order: the reader must sort by name.
                    for i in reversed(range(len(images))):
                        fname = '%05d/img%08d.png' % (i // 3, i)
                        z.writestr(fname, images[i])
                        labels.append([fname, i % 10])
                    z.writestr('dataset.json', json.dumps({'labels': labels}))
            make('rgb.zip', [png(i, 6, 4, 2, 3) for i in range(5)])
            make('rgba.zip', [png(i, 3, 2, 6, 4) for i in range(2)])
            make('gray.zip', [png(i, 5, 3, 0, 1) for i in range(4)])
            make('gray_alpha.zip', [png(i, 5, 3, 4, 2) for i in range(2)])
            make('palette.zip', [png(i, 4, 2, 3, 1, chunk(b'PLTE', bytes(range(12)))) for i in range(2)])
            make('mixed.zip', [png(0, 6, 4, 2, 3), png(1, 6, 4, 2, 3), png(2, 6, 5, 2, 3), png(3, 6, 4, 2, 3)])
            make('mixed_channels.zip', [png(0, 6, 4, 2, 3), png(1, 6, 4, 0, 1)])
            with zipfile.ZipFile(d + '/nopng.zip', 'w') as z:
                z.writestr('dataset.json', '{}')
            bad = png(1, 6, 4, 2, 3)
            bad = bad[:45] + bytes([bad[45] ^ 1]) + bad[46:]
            make('badpng.zip', [png(0, 6, 4, 2, 3), bad])
            """, arguments: [directory])
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The planar `[count, C, H, W]` pixels the Python script wrote.
    private func expected(count: Int, channels: Int, height: Int, width: Int) -> [UInt8] {
        var pixels: [UInt8] = []
        for i in 0..<count {
            for c in 0..<channels {
                for y in 0..<height {
                    for x in 0..<width { pixels.append(UInt8((31 * i + 13 * y + 3 * x + 50 * c) % 256)) }
                }
            }
        }
        return pixels
    }

    func testReadsRGBImagesSortedByName() throws {
        var calls: [(Int, Int)] = []
        let images = try EDMZipReader.read(path: directory + "/rgb.zip", progress: { calls.append(($0, $1)) })
        XCTAssertEqual(images.count, 5)
        XCTAssertEqual(images.shape, ImageShape(channels: 3, height: 4, width: 6))
        XCTAssertEqual(images.pixels, expected(count: 5, channels: 3, height: 4, width: 6))
        XCTAssertEqual(calls.map(\.0), [1, 2, 3, 4, 5])
        XCTAssertTrue(calls.allSatisfy { $0.1 == 5 })
    }

    func testLimitKeepsTheFirstImages() throws {
        let images = try EDMZipReader.read(path: directory + "/rgb.zip", limit: 2)
        XCTAssertEqual(images.count, 2)
        XCTAssertEqual(images.pixels, expected(count: 2, channels: 3, height: 4, width: 6))
        XCTAssertEqual(try EDMZipReader.read(path: directory + "/rgb.zip", limit: 50).count, 5)
        DataTestSupport.assertThrows(
            try EDMZipReader.read(path: directory + "/rgb.zip", limit: 0), .invalid, mentioning: ["rgb.zip"])
    }

    func testAlphaIsDroppedAndGrayKeepsOnePlane() throws {
        let rgba = try EDMZipReader.read(path: directory + "/rgba.zip")
        XCTAssertEqual(rgba.shape, ImageShape(channels: 3, height: 2, width: 3))
        XCTAssertEqual(rgba.pixels, expected(count: 2, channels: 3, height: 2, width: 3))
        let gray = try EDMZipReader.read(path: directory + "/gray.zip")
        XCTAssertEqual(gray.shape, ImageShape(channels: 1, height: 3, width: 5))
        XCTAssertEqual(gray.pixels, expected(count: 4, channels: 1, height: 3, width: 5))
        let grayAlpha = try EDMZipReader.read(path: directory + "/gray_alpha.zip")
        XCTAssertEqual(grayAlpha.shape, ImageShape(channels: 1, height: 3, width: 5))
        XCTAssertEqual(grayAlpha.pixels, expected(count: 2, channels: 1, height: 3, width: 5))
    }

    func testPaletteImagesBecomeRGB() throws {
        // Palette entry k is (3k, 3k+1, 3k+2); pixel (y, x) uses entry (y + x) % 4.
        let images = try EDMZipReader.read(path: directory + "/palette.zip")
        XCTAssertEqual(images.shape, ImageShape(channels: 3, height: 2, width: 4))
        var one: [UInt8] = []
        for c in 0..<3 {
            for y in 0..<2 {
                for x in 0..<4 { one.append(UInt8(3 * ((y + x) % 4) + c)) }
            }
        }
        XCTAssertEqual(images.pixels, one + one)
    }

    func testMismatchedImagesAndEmptyZipsThrow() throws {
        let mixed = directory + "/mixed.zip"
        DataTestSupport.assertThrows(
            try EDMZipReader.read(path: mixed), .unsupported, mentioning: [mixed, "00000/img00000002.png", "3x5x6"])
        XCTAssertEqual(try EDMZipReader.read(path: mixed, limit: 2).count, 2, "the mismatch lies past the limit")
        let channels = directory + "/mixed_channels.zip"
        DataTestSupport.assertThrows(
            try EDMZipReader.read(path: channels), .unsupported, mentioning: [channels, "img00000001.png", "1x4x6"])
        let empty = directory + "/nopng.zip"
        DataTestSupport.assertThrows(try EDMZipReader.read(path: empty), .invalid, mentioning: [empty, "no .png"])
        let bad = directory + "/badpng.zip"
        DataTestSupport.assertThrows(
            try EDMZipReader.read(path: bad), .corrupt, mentioning: [bad, "img00000001.png", "CRC"])
        let missing = directory + "/missing.zip"
        DataTestSupport.assertThrows(try EDMZipReader.read(path: missing), .io, mentioning: [missing])
    }
}
