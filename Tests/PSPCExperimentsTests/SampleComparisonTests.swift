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
        let (pearson, l2) = try comparison.perSample()
        let summary = try comparison.similarity()
        for a in 0..<3 {
            for i in 0..<4 {
                XCTAssertEqual(pearson[a][a][i], 1, accuracy: 1e-12)
                XCTAssertEqual(l2[a][a][i], 0)
            }
            for b in 0..<3 {
                for i in 0..<4 { XCTAssertEqual(pearson[a][b][i], pearson[b][a][i], accuracy: 1e-15) }
                let s = summary[a][b]
                let sorted = pearson[a][b].sorted()
                XCTAssertEqual(s.medianPearson, (sorted[1] + sorted[2]) / 2, accuracy: 1e-15)
                XCTAssertEqual(s.meanPearson, pearson[a][b].reduce(0, +) / 4, accuracy: 1e-15)
                // A bootstrap interval of a median lies within the smallest and largest sample.
                XCTAssertGreaterThanOrEqual(s.medianPearsonInterval.low, sorted[0] - 1e-15)
                XCTAssertLessThanOrEqual(s.medianPearsonInterval.high, sorted[3] + 1e-15)
                XCTAssertTrue(s.meanL2Interval.contains(s.meanL2) || a == b)
            }
        }
        XCTAssertLessThan(summary[1][2].medianPearson, 1)
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
        XCTAssertTrue(csv.hasPrefix(SampleComparison.similarityHeader.joined(separator: ",") + "\n"))
        // Per-sample rows for each unordered pair, the values the summary was computed from.
        let perSample = try CSVText.records(
            String(decoding: try FileIO.read(RunDirectory(dir).file("similarity-per-sample.csv")), as: UTF8.self))
        XCTAssertEqual(perSample.first, ["method_a", "method_b", "sample", "pearson", "l2"])
        XCTAssertEqual(perSample.count, 1 + 3 * 4)
        let row = perSample[1 + 4 + 2]  // network vs gaussian, sample 2
        XCTAssertEqual(row[0...2], ["network", "gaussian", "2"])
        XCTAssertEqual(Double(row[3])!, pearson[0][2][2], accuracy: 1e-12 * abs(pearson[0][2][2]))
    }

    func testHeunComparisonEvaluatesTwiceButTheLastStep() async throws {
        let dir = try Fixture.temporaryDirectory("compare-heun")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let variants = [Variant(method: "gaussian", engineMethod: .gaussian)]
        let heun = try SampleComparison(
            run: RunDirectory(dir), shape: Fixture.shape, count: 2, seed: 2, steps: 6, solver: .heun, variants: variants)
        XCTAssertEqual(heun.evaluations, 11)
        let engine = try Fixture.engine()
        let reported = ProgressLog()
        try await heun.draw(engine: engine, network: nil) { done, total in reported.append(done, total) }
        XCTAssertEqual(reported.last?.done, 11 * 2)
        XCTAssertEqual(reported.last?.total, 11 * 2)
        // The same samples as EDM.sample with Heun, one batch of both.
        let z = heun.initialNoise()
        let expected = try await EDM.sample(
            from: z, grid: EDM.grid(steps: 6), solver: .heun,
            denoise: { z, t in try await engine.denoise(z, t: t, method: .gaussian).values })
        let stored = try Sweep.readImages(RunDirectory(dir).file("samples/gaussian.npy"), shape: Fixture.shape)
        XCTAssertEqual(stored, Metrics.storable(expected))
    }

    func testBootstrapIntervalsAreSeededPercentilesOfResamples() {
        XCTAssertEqual(Bootstrap.quantile(sorted: [1, 2, 3, 4], 0.5), 2.5)
        XCTAssertEqual(Bootstrap.quantile(sorted: [1, 2, 3, 4], 0.25), 1.75)
        XCTAssertEqual(Bootstrap.median([5, 1, 3]), 3)
        let constant = Bootstrap().median([0.7, 0.7, 0.7])
        XCTAssertEqual(constant, Bootstrap.Interval(low: 0.7, high: 0.7))
        let x = (0..<200).map { Double($0 % 17) + 0.01 * Double($0) }
        let a = Bootstrap(seed: 1).mean(x), b = Bootstrap(seed: 1).mean(x), c = Bootstrap(seed: 2).mean(x)
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a, c)
        // The percentile interval of a mean is close to mean +- 1.96 sd / sqrt(n).
        let mean = Bootstrap.mean(x)
        let sd = (x.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(x.count - 1)).squareRoot()
        let half = 1.96 * sd / Double(x.count).squareRoot()
        XCTAssertEqual(a.low, mean - half, accuracy: 0.15 * half)
        XCTAssertEqual(a.high, mean + half, accuracy: 0.15 * half)
        // Paired: a ratio of two errors that move together is tight although each mean is not.
        let y = x.map { 2 * $0 + 0.001 }
        let ratio = Bootstrap().ratioOfMeans(y, x)
        XCTAssertLessThan(ratio.high - ratio.low, 1e-4)
        XCTAssertTrue(ratio.contains(Bootstrap.mean(y) / mean))
        XCTAssertTrue(Bootstrap().mean([]).low.isNaN)
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

/// Records progress callbacks from concurrent code.
final class ProgressLog: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [(done: Int, total: Int)] = []

    func append(_ done: Int, _ total: Int) {
        lock.lock()
        entries.append((done, total))
        lock.unlock()
    }

    var last: (done: Int, total: Int)? {
        lock.lock()
        defer { lock.unlock() }
        return entries.last
    }
}
