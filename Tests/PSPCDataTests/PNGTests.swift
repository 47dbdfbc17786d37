import Foundation
import PSPCData
import XCTest

final class PNGTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = try DataTestSupport.makeTemporaryDirectory()
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Python's PNG writer: zlib + struct, a chosen filter per row, IDAT split in two, a tEXt chunk.
    private static let pythonWriter = """
        import sys, zlib, struct, random
        def chunk(t, data):
            return struct.pack('>I', len(data)) + t + data + struct.pack('>I', zlib.crc32(t + data) & 0xffffffff)
        def paeth(a, b, c):
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            if pa <= pb and pa <= pc: return a
            return b if pb <= pc else c
        def filt(f, row, prev, bpp):
            out = bytearray()
            for i, x in enumerate(row):
                a = row[i - bpp] if i >= bpp else 0
                b = prev[i] if prev is not None else 0
                c = prev[i - bpp] if prev is not None and i >= bpp else 0
                out.append((x - [0, a, b, (a + b) // 2, paeth(a, b, c)][f]) & 255)
            return bytes(out)
        def png(path, w, h, ctype, spp, samples, filters, expected, extra=b''):
            rows = []
            for y in range(h):
                row = samples[y * w * spp:(y + 1) * w * spp]
                prev = samples[(y - 1) * w * spp:y * w * spp] if y else None
                f = filters[y % len(filters)]
                rows.append(bytes([f]) + filt(f, row, prev, spp))
            z = zlib.compress(b''.join(rows), 9)
            body = chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, ctype, 0, 0, 0)) + extra
            body += chunk(b'tEXt', b'Comment\\x00pspc fixture')
            body += chunk(b'IDAT', z[:len(z) // 2]) + chunk(b'IDAT', z[len(z) // 2:]) + chunk(b'IEND', b'')
            open(path, 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n' + body)
            open(path + '.raw', 'wb').write(bytes(expected))
        """

    func testDecodesPNGsWrittenByPython() throws {
        try DataTestSupport.runPython(
            Self.pythonWriter + "\n" + """
                d = sys.argv[1]
                rng = random.Random(7)
                def noise(n): return bytes(rng.randrange(256) for _ in range(n))
                for f in range(5):
                    px = noise(7 * 5 * 3)
                    png(d + '/rgb_f%d.png' % f, 7, 5, 2, 3, px, [f], px)
                px = noise(9 * 6); png(d + '/gray.png', 9, 6, 0, 1, px, [0, 1, 2, 3, 4], px)
                px = noise(5 * 3 * 2); png(d + '/gray_alpha.png', 5, 3, 4, 2, px, [4, 3, 2, 1, 0], px)
                px = noise(3 * 4 * 4); png(d + '/rgba.png', 3, 4, 6, 4, px, [1, 4, 3, 2], px)
                pal = noise(5 * 3)
                idx = bytes(rng.randrange(5) for _ in range(6 * 5))
                rgb = b''.join(pal[3 * i:3 * i + 3] for i in idx)
                png(d + '/palette.png', 6, 5, 3, 1, idx, [0, 1, 2, 3, 4], rgb, chunk(b'PLTE', pal))
                trns = bytes([0, 128, 17])
                alpha = trns + b'\\xff\\xff'
                rgba = b''.join(pal[3 * i:3 * i + 3] + alpha[i:i + 1] for i in idx)
                png(d + '/palette_trns.png', 6, 5, 3, 1, idx, [4, 2], rgba, chunk(b'PLTE', pal) + chunk(b'tRNS', trns))
                """, arguments: [directory])
        let cases: [(String, Int, Int, Int)] = [
            ("rgb_f0", 7, 5, 3), ("rgb_f1", 7, 5, 3), ("rgb_f2", 7, 5, 3), ("rgb_f3", 7, 5, 3), ("rgb_f4", 7, 5, 3),
            ("gray", 9, 6, 1), ("gray_alpha", 5, 3, 2), ("rgba", 3, 4, 4), ("palette", 6, 5, 3),
            ("palette_trns", 6, 5, 4),
        ]
        for (file, width, height, channels) in cases {
            let path = directory + "/\(file).png"
            let decoded = try PNG.decode(try FileIO.read(path), name: path)
            XCTAssertEqual(decoded.width, width, file)
            XCTAssertEqual(decoded.height, height, file)
            XCTAssertEqual(decoded.channels, channels, file)
            XCTAssertEqual(decoded.pixels, try FileIO.read(path + ".raw"), file)
        }
    }

    func testRoundTripOddSizes() throws {
        var generator = SplitMix(seed: 3)
        for channels in [1, 3, 4] {
            for (width, height) in [(1, 1), (7, 5), (13, 3), (2, 17)] {
                // Half noise, half smooth gradient, so several filters win somewhere.
                let pixels = (0..<(width * height * channels)).map { index -> UInt8 in
                    index % 2 == 0 ? UInt8(truncatingIfNeeded: generator.next()) : UInt8((index / channels) % 256)
                }
                let bytes = try PNG.encode(pixels: pixels, width: width, height: height, channels: channels)
                let decoded = try PNG.decode(bytes, name: "round.png")
                XCTAssertEqual(decoded.pixels, pixels, "\(channels) channels, \(width)x\(height)")
                XCTAssertEqual([decoded.width, decoded.height, decoded.channels], [width, height, channels])
            }
        }
    }

    func testPythonDecodesWhatWeEncode() throws {
        var generator = SplitMix(seed: 11)
        var files: [(String, [UInt8])] = []
        for (channels, width, height) in [(1, 11, 4), (3, 5, 9), (4, 6, 6)] {
            let pixels = (0..<(width * height * channels)).map { index -> UInt8 in
                index % 3 == 0 ? UInt8(truncatingIfNeeded: generator.next()) : UInt8(index % 251)
            }
            let path = directory + "/ours_\(channels).png"
            try FileIO.writeAtomically(
                try PNG.encode(pixels: pixels, width: width, height: height, channels: channels), to: path)
            try FileIO.writeAtomically(pixels, to: path + ".raw")
            files.append((path, pixels))
        }
        try DataTestSupport.runPython(
            """
            import sys, zlib, struct
            def paeth(a, b, c):
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                if pa <= pb and pa <= pc: return a
                return b if pb <= pc else c
            for path in sys.argv[1:]:
                data = open(path, 'rb').read()
                assert data[:8] == b'\\x89PNG\\r\\n\\x1a\\n'
                pos, idat, types = 8, b'', []
                while pos < len(data):
                    n, t = struct.unpack('>I4s', data[pos:pos + 8])
                    body = data[pos + 8:pos + 8 + n]
                    crc, = struct.unpack('>I', data[pos + 8 + n:pos + 12 + n])
                    assert crc == zlib.crc32(t + body) & 0xffffffff, (path, t)
                    types.append(t)
                    if t == b'IHDR': w, h, depth, ctype, cm, fm, im = struct.unpack('>IIBBBBB', body)
                    if t == b'IDAT': idat += body
                    pos += 12 + n
                assert types[0] == b'IHDR' and types[-1] == b'IEND' and depth == 8 and im == 0, types
                bpp = {0: 1, 2: 3, 6: 4}[ctype]
                raw, stride, out = zlib.decompress(idat), w * bpp, bytearray()
                for y in range(h):
                    f, line = raw[y * (stride + 1)], raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)]
                    for i in range(stride):
                        a = out[-bpp] if i >= bpp else 0
                        b = out[-stride] if y else 0
                        c = out[-stride - bpp] if y and i >= bpp else 0
                        out.append((line[i] + [0, a, b, (a + b) // 2, paeth(a, b, c)][f]) & 255)
                assert bytes(out) == open(path + '.raw', 'rb').read(), path
            """, arguments: files.map(\.0))
    }

    func testCorruptAndUnsupportedInputs() throws {
        let name = "bad.png"
        let good = try PNG.encode(pixels: (0..<48).map { UInt8($0 * 5) }, width: 4, height: 4, channels: 3)

        var badSignature = good
        badSignature[1] = 0
        DataTestSupport.assertThrows(
            try PNG.decode(badSignature, name: name), .corrupt, mentioning: [name, "signature"])

        var badCRC = good
        badCRC[8 + 25 + 10] ^= 0xFF  // a byte inside IDAT's data
        DataTestSupport.assertThrows(try PNG.decode(badCRC, name: name), .corrupt, mentioning: [name, "CRC", "IDAT"])

        DataTestSupport.assertThrows(
            try PNG.decode(Array(good.dropLast(5)), name: name), .corrupt, mentioning: [name, "truncated"])
        DataTestSupport.assertThrows(
            try PNG.decode(Array(good.dropLast(12)), name: name), .corrupt, mentioning: [name, "IEND"])
        DataTestSupport.assertThrows(
            try PNG.decode(Array(good.prefix(40)), name: name), .corrupt, mentioning: [name, "truncated"])

        let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        let header = ihdr(width: 2, height: 2, depth: 8, colour: 0)
        let rows = try Zlib.deflate([0, 1, 2, 0, 3, 4])
        DataTestSupport.assertThrows(
            try PNG.decode(signature + header + chunk("IEND", []), name: name), .corrupt, mentioning: [name, "IDAT"])
        DataTestSupport.assertThrows(
            try PNG.decode(signature + chunk("IDAT", rows) + header + chunk("IEND", []), name: name), .corrupt,
            mentioning: [name, "IHDR"])
        XCTAssertEqual(
            try PNG.decode(signature + header + chunk("IDAT", rows) + chunk("IEND", []), name: name).pixels,
            [1, 2, 3, 4])

        let badFilter = try Zlib.deflate([0, 1, 2, 7, 3, 4])
        DataTestSupport.assertThrows(
            try PNG.decode(signature + header + chunk("IDAT", badFilter) + chunk("IEND", []), name: name), .corrupt,
            mentioning: [name, "filter type 7"])
        let short = try Zlib.deflate([0, 1, 2, 0])
        DataTestSupport.assertThrows(
            try PNG.decode(signature + header + chunk("IDAT", short) + chunk("IEND", []), name: name), .corrupt,
            mentioning: [name])
        let paletteHeader = ihdr(width: 2, height: 2, depth: 8, colour: 3)
        DataTestSupport.assertThrows(
            try PNG.decode(
                signature + paletteHeader + chunk("PLTE", [1, 2, 3, 4, 5, 6]) + chunk("IDAT", rows)
                    + chunk("IEND", []), name: name),
            .corrupt, mentioning: [name, "palette index"])
        DataTestSupport.assertThrows(
            try PNG.decode(
                signature + header + chunk("ABCD", []) + chunk("IDAT", rows) + chunk("IEND", []), name: name),
            .unsupported, mentioning: [name, "ABCD"])

        for (depth, colour, interlace, fragment) in [
            (16, 2, 0, "bit depth 16"), (4, 0, 0, "bit depth 4"), (8, 6, 1, "interlaced"),
        ] {
            let bytes =
                signature + ihdr(width: 2, height: 2, depth: depth, colour: colour, interlace: interlace)
                + chunk("IDAT", rows) + chunk("IEND", [])
            DataTestSupport.assertThrows(try PNG.decode(bytes, name: name), .unsupported, mentioning: [name, fragment])
        }
        DataTestSupport.assertThrows(
            try PNG.decode(signature + ihdr(width: 2, height: 2, depth: 8, colour: 5) + chunk("IEND", []), name: name),
            .corrupt, mentioning: [name, "colour type 5"])
    }

    func testEveryPrefixAndByteFlipFailsCleanly() throws {
        let good = try PNG.encode(pixels: (0..<24).map { UInt8($0 * 9) }, width: 4, height: 2, channels: 3)
        for length in 0..<good.count {
            XCTAssertThrowsError(try PNG.decode(Array(good.prefix(length)), name: "p"))
        }
        for index in 0..<good.count {
            var flipped = good
            flipped[index] ^= 0x21
            XCTAssertThrowsError(try PNG.decode(flipped, name: "f"), "flip at \(index) went unnoticed")
        }
    }

    func testEncodeRejectsBadArguments() {
        DataTestSupport.assertThrows(
            try PNG.encode(pixels: [1, 2], width: 1, height: 1, channels: 2), .invalid, mentioning: ["2 channels"])
        DataTestSupport.assertThrows(
            try PNG.encode(pixels: [1, 2], width: 1, height: 1, channels: 1), .invalid, mentioning: ["2 bytes"])
        DataTestSupport.assertThrows(
            try PNG.encode(pixels: [], width: 0, height: 1, channels: 1), .invalid, mentioning: ["0x1"])
    }

    func testGridLaysOutImagesWithWhitePadding() throws {
        // Three 2x3 gray images in two columns with padding 1: a 9x7 grid.
        let images = (0..<18).map { UInt8($0 * 10) }
        let png = try PNG.grid(images: images, count: 3, channels: 1, height: 2, width: 3, columns: 2, padding: 1)
        let decoded = try PNG.decode(png, name: "grid.png")
        XCTAssertEqual([decoded.width, decoded.height, decoded.channels], [9, 7, 1])
        var expected = [UInt8](repeating: 255, count: 9 * 7)
        for image in 0..<3 {
            let top = 1 + (image / 2) * 3
            let left = 1 + (image % 2) * 4
            for y in 0..<2 {
                for x in 0..<3 { expected[(top + y) * 9 + left + x] = images[image * 6 + y * 3 + x] }
            }
        }
        XCTAssertEqual(decoded.pixels, expected)

        // Colour: planar input comes out interleaved.
        let rgb: [UInt8] = [10, 11, 12, 13, 20, 21, 22, 23, 30, 31, 32, 33]  // one 2x2 image, R then G then B planes
        let colour = try PNG.decode(
            try PNG.grid(images: rgb, count: 1, channels: 3, height: 2, width: 2, columns: 4, padding: 0), name: "g")
        XCTAssertEqual(colour.pixels, [10, 20, 30, 11, 21, 31, 12, 22, 32, 13, 23, 33])
        XCTAssertEqual(colour.width, 2)

        DataTestSupport.assertThrows(
            try PNG.grid(images: rgb, count: 2, channels: 3, height: 2, width: 2, columns: 1), .invalid,
            mentioning: ["12 bytes"])
    }

    func testQuantizeMapsMinusOneToOneOntoBytes() {
        XCTAssertEqual(
            PNG.quantize([-1, 1, 0, -0.5, 2, -3, .nan, .infinity, -.infinity, 0.999]),
            [0, 255, 128, 64, 255, 0, 0, 255, 0, 255])
    }

    // MARK: - Helpers

    private func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let body = Array(type.utf8) + data
        return bigEndian(UInt32(data.count)) + body + bigEndian(Zlib.crc32(body))
    }

    private func ihdr(width: Int, height: Int, depth: Int, colour: Int, interlace: Int = 0) -> [UInt8] {
        chunk(
            "IHDR",
            bigEndian(UInt32(width)) + bigEndian(UInt32(height)) + [
                UInt8(depth), UInt8(colour), 0, 0, UInt8(interlace),
            ])
    }

    private func bigEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
    }
}

/// A small deterministic generator (SplitMix64) for test pixels.
private struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
