import Foundation
import PSPCData
import XCTest

final class ZipArchiveTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = try DataTestSupport.makeTemporaryDirectory()
        // Python's zipfile writes the ordinary and the streamed (data-descriptor) archives; the zip64 one
        // is put together with struct, and zipfile checks that it reads it back.
        try DataTestSupport.runPython(
            """
            import sys, zipfile, struct, zlib
            d = sys.argv[1]
            with zipfile.ZipFile(d + '/a.zip', 'w') as z:
                z.writestr(zipfile.ZipInfo('dir/'), b'')
                z.writestr('stored.bin', bytes(range(256)) * 3, compress_type=zipfile.ZIP_STORED)
                z.writestr('deflated.txt', ('pspc ' * 500).encode(), compress_type=zipfile.ZIP_DEFLATED)
                z.writestr('empty', b'', compress_type=zipfile.ZIP_DEFLATED)
                z.writestr('\\u00fcn\\u00efcode.bin', b'\\x00\\x01', compress_type=zipfile.ZIP_DEFLATED)
                z.comment = b'a comment the EOCD search must skip'

            class Unseekable:
                def __init__(self, f): self.f = f
                def write(self, b): return self.f.write(b)
                def flush(self): self.f.flush()
            with open(d + '/streamed.zip', 'wb') as f:
                with zipfile.ZipFile(Unseekable(f), 'w', zipfile.ZIP_DEFLATED) as z:
                    with z.open('s.bin', 'w') as e:
                        e.write(bytes(range(200)) * 5)

            data = b'zip64 payload ' * 10
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            cdata = c.compress(data) + c.flush()
            name, crc, big = b'big.bin', zlib.crc32(data), 0xffffffff
            lextra = struct.pack('<HHQQ', 1, 16, len(data), len(cdata))
            local = struct.pack('<IHHHHHIIIHH', 0x04034b50, 45, 0, 8, 0, 0, crc, big, big, len(name), len(lextra))
            cextra = struct.pack('<HHQQQ', 1, 24, len(data), len(cdata), 0)
            central = struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, 45, 45, 0, 8, 0, 0, crc, big, big,
                                  len(name), len(cextra), 0, 0, 0, 0, big) + name + cextra
            cd = len(local) + len(name) + len(lextra) + len(cdata)
            z64 = struct.pack('<IQHHIIQQQQ', 0x06064b50, 44, 45, 45, 0, 0, 1, 1, len(central), cd)
            locator = struct.pack('<IIQI', 0x07064b50, 0, cd + len(central), 1)
            eocd = struct.pack('<IHHHHIIH', 0x06054b50, 0, 0, 0xffff, 0xffff, big, big, 0)
            with open(d + '/zip64.zip', 'wb') as f:
                f.write(local + name + lextra + cdata + central + z64 + locator + eocd)
            with zipfile.ZipFile(d + '/zip64.zip') as z:
                assert z.read('big.bin') == data and z.testzip() is None
            """, arguments: [directory])
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func testReadsEntriesWrittenByPython() throws {
        let archive = try ZipArchive(path: directory + "/a.zip")
        XCTAssertEqual(archive.entries.map(\.name), ["dir/", "stored.bin", "deflated.txt", "empty", "ünïcode.bin"])
        XCTAssertEqual(archive.entries.map(\.method), [0, 0, 8, 8, 8])
        let contents = try Dictionary(uniqueKeysWithValues: archive.entries.map { ($0.name, try archive.read($0)) })
        XCTAssertEqual(contents["stored.bin"], Array(repeating: Array(0...255), count: 3).flatMap { $0 })
        XCTAssertEqual(contents["deflated.txt"], Array(String(repeating: "pspc ", count: 500).utf8))
        XCTAssertEqual(contents["empty"], [])
        XCTAssertEqual(contents["dir/"], [])
        XCTAssertEqual(contents["ünïcode.bin"], [0, 1])
        let deflated = archive.entries[2]
        XCTAssertEqual(deflated.uncompressedSize, 2500)
        XCTAssertLessThan(deflated.compressedSize, 100)
    }

    func testReadsStreamedEntriesWithDataDescriptors() throws {
        let archive = try ZipArchive(path: directory + "/streamed.zip")
        XCTAssertEqual(archive.entries.map(\.name), ["s.bin"])
        XCTAssertEqual(try archive.read(archive.entries[0]), Array(repeating: Array(0..<200), count: 5).flatMap { $0 })
    }

    func testReadsZip64Records() throws {
        let archive = try ZipArchive(path: directory + "/zip64.zip")
        XCTAssertEqual(archive.entries.count, 1)
        let entry = archive.entries[0]
        XCTAssertEqual(entry.name, "big.bin")
        XCTAssertEqual(entry.uncompressedSize, 140)
        XCTAssertEqual(entry.localHeaderOffset, 0)
        XCTAssertEqual(try archive.read(entry), Array(String(repeating: "zip64 payload ", count: 10).utf8))
    }

    func testTruncatedZipThrowsNamingTheFile() throws {
        let bytes = try FileIO.read(directory + "/a.zip")
        for cut in [bytes.count - 30, bytes.count / 2, 21, 0] {
            let path = directory + "/cut\(cut).zip"
            try FileIO.writeAtomically(Array(bytes.prefix(cut)), to: path)
            DataTestSupport.assertThrows(
                try ZipArchive(path: path), .corrupt, mentioning: [path, "end-of-central-directory"])
        }
        // Middle cut out, end record kept: the central directory now lies outside the file.
        let tail = 22 + "a comment the EOCD search must skip".utf8.count
        let path = directory + "/hollow.zip"
        try FileIO.writeAtomically(Array(bytes.prefix(100) + bytes.suffix(tail)), to: path)
        DataTestSupport.assertThrows(try ZipArchive(path: path), .corrupt, mentioning: [path, "central directory"])
    }

    func testWrongCRCThrowsNamingTheEntry() throws {
        let path = directory + "/a.zip"
        var bytes = try FileIO.read(path)
        let stored = try ZipArchive(bytes: bytes, name: path).entries[1]
        let dataStart =
            stored.localHeaderOffset + 30 + Int(bytes[stored.localHeaderOffset + 26])
            + Int(bytes[stored.localHeaderOffset + 28])
        bytes[dataStart + 100] ^= 1
        let archive = try ZipArchive(bytes: bytes, name: path)
        DataTestSupport.assertThrows(
            try archive.read(archive.entries[1]), .corrupt, mentioning: [path, "'stored.bin'", "CRC-32 mismatch"])
        XCTAssertEqual(try archive.read(archive.entries[2]).count, 2500, "other entries still read")

        var badCRC = try FileIO.read(path)
        badCRC[try centralRecord(named: "deflated.txt", in: badCRC) + 16] ^= 0x80
        let patched = try ZipArchive(bytes: badCRC, name: path)
        DataTestSupport.assertThrows(
            try patched.read(patched.entries[2]), .corrupt, mentioning: [path, "'deflated.txt'", "CRC-32"])
    }

    func testUnsupportedMethodAndEncryption() throws {
        let path = directory + "/a.zip"
        var bytes = try FileIO.read(path)
        let record = try centralRecord(named: "deflated.txt", in: bytes)
        bytes[record + 10] = 12  // bzip2
        var archive = try ZipArchive(bytes: bytes, name: path)
        DataTestSupport.assertThrows(
            try archive.read(archive.entries[2]), .unsupported, mentioning: [path, "deflated.txt", "method 12"])
        bytes[record + 10] = 8
        bytes[record + 8] |= 1
        archive = try ZipArchive(bytes: bytes, name: path)
        DataTestSupport.assertThrows(
            try archive.read(archive.entries[2]), .unsupported, mentioning: [path, "encrypted"])
    }

    func testEveryPrefixAndByteFlipFailsCleanly() throws {
        let bytes = try FileIO.read(directory + "/streamed.zip")
        for length in 0..<bytes.count {
            XCTAssertThrowsError(try ZipArchive(bytes: Array(bytes.prefix(length)), name: "p"))
        }
        for index in 0..<bytes.count {
            var flipped = bytes
            flipped[index] ^= 0xA5
            guard let archive = try? ZipArchive(bytes: flipped, name: "f") else { continue }
            for entry in archive.entries { _ = try? archive.read(entry) }
        }
    }

    /// Offset of the central directory record of `name`.
    private func centralRecord(named name: String, in bytes: [UInt8]) throws -> Int {
        let nameBytes = Array(name.utf8)
        for offset in 0..<(bytes.count - 46 - nameBytes.count)
        where bytes[offset..<(offset + 4)] == [0x50, 0x4B, 0x01, 0x02]
            && Array(bytes[(offset + 46)..<(offset + 46 + nameBytes.count)]) == nameBytes
        {
            return offset
        }
        throw DataError.invalid("no central record for \(name)")
    }
}
