import Foundation
import PSPCCore
import PSPCData
import XCTest

final class CIFAR10ReaderTests: XCTestCase {
    private var directory = ""
    private static let recordSize = 3073

    override func setUpWithError() throws {
        directory = try DataTestSupport.makeTemporaryDirectory()
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Pixel bytes of image `index`: every byte derived from the index, so order mistakes show.
    private func image(_ index: Int) -> [UInt8] {
        (0..<3072).map { UInt8(truncatingIfNeeded: index * 37 + $0 * 7 + $0 / 1024) }
    }

    /// Writes `file` with records for the images `indices` (label byte = index % 10).
    private func writeBatch(_ file: String, _ indices: Range<Int>, in folder: String? = nil) throws {
        var bytes: [UInt8] = []
        for index in indices { bytes += [UInt8(index % 10)] + image(index) }
        try FileIO.writeAtomically(bytes, to: (folder ?? directory) + "/" + file)
    }

    private func writeTrainSplit(in folder: String? = nil) throws {
        for batch in 1...5 {
            try writeBatch("data_batch_\(batch).bin", ((batch - 1) * 3)..<(batch * 3), in: folder)
        }
    }

    func testReadsTrainBatchesInOrderWithoutLabels() throws {
        try writeTrainSplit()
        let images = try CIFAR10Reader.read(directory: directory, split: .train)
        XCTAssertEqual(images.count, 15)
        XCTAssertEqual(images.shape, ImageShape(channels: 3, height: 32, width: 32))
        XCTAssertEqual(images.pixels, (0..<15).flatMap(image))
    }

    func testReadsTestSplitAndNestedFolder() throws {
        let nested = directory + "/cifar-10-batches-bin"
        try writeBatch("test_batch.bin", 100..<104, in: nested)
        let images = try CIFAR10Reader.read(directory: directory, split: .test)
        XCTAssertEqual(images.count, 4)
        XCTAssertEqual(images.pixels, (100..<104).flatMap(image))
    }

    func testLimitStopsEarly() throws {
        try writeTrainSplit()
        // A broken last batch is never opened when the limit is met before it.
        try FileIO.writeAtomically([1, 2, 3], to: directory + "/data_batch_5.bin")
        let images = try CIFAR10Reader.read(directory: directory, split: .train, limit: 7)
        XCTAssertEqual(images.count, 7)
        XCTAssertEqual(images.pixels, (0..<7).flatMap(image))
        DataTestSupport.assertThrows(
            try CIFAR10Reader.read(directory: directory, split: .train, limit: 0), .invalid, mentioning: [directory])
    }

    func testMissingOrMisSizedBatchThrowsNamingTheFile() throws {
        try writeTrainSplit()
        let fourth = directory + "/data_batch_4.bin"
        var bytes = try FileIO.read(fourth)
        bytes.removeLast()
        try FileIO.writeAtomically(bytes, to: fourth)
        DataTestSupport.assertThrows(
            try CIFAR10Reader.read(directory: directory, split: .train), .corrupt,
            mentioning: [fourth, "\(3 * Self.recordSize - 1) bytes", "3073"])

        try FileIO.writeAtomically([], to: fourth)
        DataTestSupport.assertThrows(
            try CIFAR10Reader.read(directory: directory, split: .train), .corrupt, mentioning: [fourth])

        try FileManager.default.removeItem(atPath: fourth)
        DataTestSupport.assertThrows(
            try CIFAR10Reader.read(directory: directory, split: .train), .io, mentioning: [fourth, "no such file"])
        let test = directory + "/test_batch.bin"
        DataTestSupport.assertThrows(
            try CIFAR10Reader.read(directory: directory, split: .test), .io, mentioning: [test])
    }
}
