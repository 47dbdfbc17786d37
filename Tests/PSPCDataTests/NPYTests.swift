import Foundation
import PSPCData
import XCTest

final class NPYTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = try DataTestSupport.makeTemporaryDirectory()
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func testRoundTripOfEachDtype() throws {
        let arrays = [
            NPYArray(shape: [2, 3, 5], data: .uint8((0..<30).map { UInt8($0 * 7 % 256) })),
            NPYArray(shape: [7], data: .float32((0..<7).map { Float($0) * -0.25 + 1e-7 })),
            NPYArray(shape: [3, 1], data: .float64([.pi, -0.0, 1e300])),
            NPYArray(shape: [], data: .float64([42.5])),
            NPYArray(shape: [0, 4], data: .float32([])),
        ]
        for array in arrays {
            let bytes = NPY.encode(array)
            let headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            XCTAssertEqual(bytes[6], 1, "writes version 1.0")
            XCTAssertEqual((10 + headerLength) % 64, 0, "data is 64-byte aligned")
            XCTAssertEqual(bytes[10 + headerLength - 1], 0x0A, "header ends in a newline")
            XCTAssertEqual(try NPY.decode(bytes, name: "memory.npy"), array)
        }
        let path = directory + "/round.npy"
        try NPY.write(arrays[1], to: path)
        XCTAssertEqual(try NPY.read(path: path), arrays[1])
        XCTAssertEqual(arrays[2].asDoubles(), [.pi, -0.0, 1e300])
        XCTAssertEqual(arrays[0].asDoubles()[1], 7)
        XCTAssertEqual(arrays[0].elementCount, 30)
    }

    func testWriteRefusesShapeThatDoesNotMatchValues() {
        let path = directory + "/bad.npy"
        DataTestSupport.assertThrows(
            try NPY.write(NPYArray(shape: [2, 2], data: .uint8([1, 2, 3])), to: path), .invalid, mentioning: [path])
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
    }

    func testReadsFilesWrittenByNumpy() throws {
        try DataTestSupport.requireNumpy()
        try DataTestSupport.runPython(
            """
            import sys, numpy as np
            d = sys.argv[1]
            base = np.arange(24, dtype=np.float64).reshape(2, 3, 4) * 0.5 - 3
            np.save(d + '/u1.npy', (np.arange(60) * 5 % 256).astype(np.uint8).reshape(3, 4, 5))
            np.save(d + '/f4.npy', base.astype('<f4'))
            np.save(d + '/f4be.npy', base.astype('>f4'))
            np.save(d + '/f8.npy', base)
            np.save(d + '/f8be.npy', base.astype('>f8'))
            np.save(d + '/scalar.npy', np.float32(2.5))
            np.save(d + '/fortran.npy', np.asfortranarray(base[0]))
            np.save(d + '/int32.npy', np.arange(3, dtype='<i4'))
            for version in [(2, 0), (3, 0)]:
                with open(d + '/v%d.npy' % version[0], 'wb') as f:
                    np.lib.format.write_array(f, base.astype('<f4'), version=version)
            """, arguments: [directory])
        let expected = (0..<24).map { Double($0) * 0.5 - 3 }

        let u1 = try NPY.read(path: directory + "/u1.npy")
        XCTAssertEqual(u1.shape, [3, 4, 5])
        XCTAssertEqual(u1.data, .uint8((0..<60).map { UInt8($0 * 5 % 256) }))
        for file in ["f4", "f4be", "v2", "v3"] {
            let array = try NPY.read(path: directory + "/\(file).npy")
            XCTAssertEqual(array.shape, [2, 3, 4], file)
            XCTAssertEqual(array.data, .float32(expected.map(Float.init)), file)
        }
        for file in ["f8", "f8be"] {
            let array = try NPY.read(path: directory + "/\(file).npy")
            XCTAssertEqual(array, NPYArray(shape: [2, 3, 4], data: .float64(expected)), file)
        }
        XCTAssertEqual(try NPY.read(path: directory + "/scalar.npy"), NPYArray(shape: [], data: .float32([2.5])))

        let fortran = directory + "/fortran.npy"
        DataTestSupport.assertThrows(try NPY.read(path: fortran), .unsupported, mentioning: [fortran, "fortran"])
        let int32 = directory + "/int32.npy"
        DataTestSupport.assertThrows(try NPY.read(path: int32), .unsupported, mentioning: [int32, "<i4"])
    }

    func testNumpyReadsWhatWeWrite() throws {
        try DataTestSupport.requireNumpy()
        try NPY.write(
            NPYArray(shape: [2, 3], data: .float32([1, -2, 3.5, 4, 5, 6e-3])), to: directory + "/ours_f4.npy")
        try NPY.write(NPYArray(shape: [4], data: .uint8([0, 1, 254, 255])), to: directory + "/ours_u1.npy")
        try NPY.write(NPYArray(shape: [], data: .float64([-7.25])), to: directory + "/ours_f8.npy")
        try DataTestSupport.runPython(
            """
            import sys, numpy as np
            d = sys.argv[1]
            a = np.load(d + '/ours_f4.npy')
            assert a.dtype == np.float32 and a.shape == (2, 3), (a.dtype, a.shape)
            assert (a == np.array([[1, -2, 3.5], [4, 5, 6e-3]], dtype=np.float32)).all(), a
            b = np.load(d + '/ours_u1.npy')
            assert b.dtype == np.uint8 and list(b) == [0, 1, 254, 255], b
            c = np.load(d + '/ours_f8.npy')
            assert c.dtype == np.float64 and c.shape == () and c == -7.25, c
            """, arguments: [directory])
    }

    func testTruncatedAndMalformedInputsThrowNamingTheFile() throws {
        let valid = NPY.encode(NPYArray(shape: [4, 4], data: .float32((0..<16).map(Float.init))))
        let name = "cut.npy"
        DataTestSupport.assertThrows(
            try NPY.decode(Array(valid.dropLast(3)), name: name), .corrupt,
            mentioning: [name, "needs 64 data bytes", "has 61", "truncated"])
        DataTestSupport.assertThrows(
            try NPY.decode(valid + [0], name: name), .corrupt, mentioning: [name, "has 65"])
        DataTestSupport.assertThrows(try NPY.decode(Array(valid.prefix(40)), name: name), .corrupt, mentioning: [name])
        var badMagic = valid
        badMagic[1] = UInt8(ascii: "X")
        DataTestSupport.assertThrows(try NPY.decode(badMagic, name: name), .corrupt, mentioning: [name, "magic"])
        var badVersion = valid
        badVersion[6] = 9
        DataTestSupport.assertThrows(try NPY.decode(badVersion, name: name), .unsupported, mentioning: [name, "9.0"])

        let path = directory + "/cut.npy"
        try FileIO.writeAtomically(Array(valid.dropLast(1)), to: path)
        DataTestSupport.assertThrows(try NPY.read(path: path), .corrupt, mentioning: [path, "truncated"])
        let missing = directory + "/missing.npy"
        DataTestSupport.assertThrows(try NPY.read(path: missing), .io, mentioning: [missing])
    }

    func testMalformedHeadersThrow() {
        func file(_ header: String) -> [UInt8] {
            let text = Array(header.utf8)
            return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(text.count & 0xFF), UInt8(text.count >> 8)] + text
        }
        let headers = [
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4)}",
            "['descr']",
            "{'descr: '<f4'}",
            String(repeating: "(", count: 1000),
            "",
        ]
        for header in headers {
            DataTestSupport.assertThrows(try NPY.decode(file(header), name: "h.npy"), .corrupt, mentioning: ["h.npy"])
        }
        // Python 2 headers write longs with an L suffix.
        XCTAssertEqual(
            try NPY.decode(file("{'descr': '|u1', 'fortran_order': False, 'shape': (2L,), }") + [7, 8], name: "p2"),
            NPYArray(shape: [2], data: .uint8([7, 8])))
    }

    func testEveryPrefixAndByteFlipFailsCleanly() {
        let valid = NPY.encode(NPYArray(shape: [3], data: .float64([1, 2, 3])))
        for length in 0..<valid.count {
            XCTAssertThrowsError(try NPY.decode(Array(valid.prefix(length)), name: "p"))
        }
        for index in 0..<80 {
            var flipped = valid
            flipped[index] ^= 0x5A
            _ = try? NPY.decode(flipped, name: "f")
        }
    }
}

// MARK: - Helpers shared by the PSPCDataTests files
