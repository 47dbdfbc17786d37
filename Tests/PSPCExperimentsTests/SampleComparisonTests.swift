import Foundation
import PSPCCore
import PSPCData
import PSPCExperiments
import XCTest

final class SampleComparisonTests: XCTestCase {
    func testSimilarityOfSharedNoiseSamples() async throws {
        let dir = try Fixture.temporaryDirectory("compare")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let variants = [
            Variant.network, Variant(method: "empirical", engineMethod: .empirical),
            Variant(method: "gaussian", engineMethod: .gaussian),
        ]
        let comparison = try SampleComparison(
            run: RunDirectory(dir), shape: Fixture.shape, count: 4, seed: 2, steps: 6, variants: variants)
        let engine = try Fixture.engine()
        try await comparison.draw(engine: engine, network: Fixture.network) { _, _ in }
        try comparison.writeResults()
        let (pearson, l2) = try comparison.similarity()
        for a in 0..<3 {
            XCTAssertEqual(pearson[a][a], 1, accuracy: 1e-12)
            XCTAssertEqual(l2[a][a], 0)
            for b in 0..<3 { XCTAssertEqual(pearson[a][b], pearson[b][a], accuracy: 1e-15) }
        }
        // The empirical denoiser's Euler samples land on training images (t_min = 0.002 is far below their spacing).
        let samples = try Sweep.readImages(RunDirectory(dir).file("samples/empirical.npy"), shape: Fixture.shape)
        let train = Fixture.images().pixels.map { Double($0) / 127.5 - 1 }
        let d = Fixture.shape.dimension
        for i in 0..<4 {
            let nearest = (0..<60).map { j in
                Metrics.l2(samples[(i * d)..<((i + 1) * d)], train[(j * d)..<((j + 1) * d)])
            }.min()!
            var mirrored = Double.infinity
            for j in 0..<60 {
                var flipped: [Double] = []
                for row in 0..<8 {
                    let start = j * d + row * 8
                    flipped += train[start..<(start + 8)].reversed()
                }
                mirrored = min(mirrored, Metrics.l2(samples[(i * d)..<((i + 1) * d)], flipped[...]))
            }
            XCTAssertLessThan(min(nearest, mirrored), 1e-3)
        }
        // The same seed gives the same noise as `pspc sample`, and each row of samples.png is a method.
        let png = try PNG.decode(try FileIO.read(RunDirectory(dir).file("samples.png")), name: "samples.png")
        XCTAssertGreaterThan(png.height, png.width / 2)
        let csv = String(decoding: try FileIO.read(RunDirectory(dir).file("similarity.csv")), as: UTF8.self)
        XCTAssertEqual(csv.split(separator: "\n").count, 1 + 9)
    }

    func testTrainingDrawIsDistinctSeededAndMirrored() throws {
        let a = SeededDraw.distinct(50, from: 60, seed: 1)
        XCTAssertEqual(Set(a).count, 50)
        XCTAssertTrue(a.allSatisfy { $0 >= 0 && $0 < 60 })
        XCTAssertEqual(a, SeededDraw.distinct(50, from: 60, seed: 1))
        XCTAssertNotEqual(a, SeededDraw.distinct(50, from: 60, seed: 2))
        XCTAssertEqual(Set(SeededDraw.distinct(60, from: 60, seed: 3)).count, 60)
        XCTAssertEqual(try TimeGrid.parse("edm:18"), EDM.grid(steps: 18))
        let log = try TimeGrid.parse("log:3:0.01:100")
        XCTAssertEqual(log[0], 100)
        XCTAssertEqual(log[1], 1, accuracy: 1e-12)
        XCTAssertEqual(log[2], 0.01, accuracy: 1e-15)
        XCTAssertThrowsError(try TimeGrid.parse("log:3:1:0.1"))
    }
}
