import PSPCExperiments
import XCTest

final class PairedRatiosTests: XCTestCase {
    /// Three methods and the network at one t, on 40 queries whose difficulty varies by a factor of 100.
    static func fixture() -> (rows: [SweepRow], perQuery: [(network: [Double], x0: [Double])]) {
        let difficulty = (0..<40).map { q in pow(10, 2 * Double((q * 17) % 40) / 39) }
        // Square's error to the network is exactly 1.5x the empirical denoiser's on every query; flex's wobbles.
        let empirical = difficulty.map { 2 * $0 }
        let square = empirical.map { 1.5 * $0 }
        let flex = empirical.enumerated().map { q, e in e * (q % 2 == 0 ? 0.9 : 1.0) }
        let networkToX0 = difficulty.map { 0.97 * $0 }
        let specs: [(String, Variant.Param, String, [Double], [Double])] = [
            ("network", .none, "network", Array(repeating: 0, count: 40), networkToX0),
            ("empirical", .none, "empirical", empirical, difficulty),
            ("pspc-square", .patchSize(7), "pspc-square s=7", square, difficulty.map { 1.2 * $0 }),
            ("pspc-flex", .lambda(0.5), "pspc-flex lambda=0.5", flex, difficulty.map { 1.1 * $0 }),
        ]
        var rows: [SweepRow] = [], perQuery: [(network: [Double], x0: [Double])] = []
        for (method, param, label, toNetwork, toX0) in specs {
            rows.append(
                SweepRow(
                    tIndex: 3, t: 1.09, method: method, param: param, label: label,
                    mseToNetwork: toNetwork.reduce(0, +) / 40, mseToX0: toX0.reduce(0, +) / 40, queries: 40))
            perQuery.append((toNetwork, toX0))
        }
        return (rows, perQuery)
    }

    func testRatiosArePairedOverTheSameQueries() throws {
        let (rows, perQuery) = Self.fixture()
        let ratios = PairedRatios.compute(rows: rows, perQuery: perQuery)
        func find(_ label: String, _ target: String, _ role: String) throws -> PairedRatio {
            try XCTUnwrap(ratios.first { $0.label == label && $0.target == target && $0.baselineRole == role })
        }
        // A constant per-query ratio has a zero-width paired interval, however wide the MSE intervals are.
        let square = try find("pspc-square s=7", "network", "optimal")
        XCTAssertEqual(square.baseline, "empirical")
        XCTAssertEqual(square.ratio, 1.5, accuracy: 1e-14)
        XCTAssertEqual(square.interval.low, 1.5, accuracy: 1e-14)
        XCTAssertEqual(square.interval.high, 1.5, accuracy: 1e-14)
        XCTAssertEqual(square.queries, 40)
        let unpaired = Bootstrap().mean(perQuery[2].network)
        XCTAssertGreaterThan(unpaired.high / unpaired.low, 1.5, "the fixture's MSE intervals are wide")
        // Flex is closest to the network: the closest baseline, and its own ratio there is 1.
        let flex = try find("pspc-flex lambda=0.5", "network", "closest")
        XCTAssertEqual(flex.baseline, "pspc-flex lambda=0.5")
        XCTAssertEqual(flex.ratio, 1)
        XCTAssertEqual(flex.interval, Bootstrap.Interval(low: 1, high: 1))
        let empiricalVsFlex = try find("empirical", "network", "closest")
        XCTAssertGreaterThan(empiricalVsFlex.interval.low, 1, "empirical is significantly farther than flex")
        XCTAssertTrue(empiricalVsFlex.interval.contains(empiricalVsFlex.ratio))
        // Against the network's output the network's own row is left out; against x0 it is a row, never a baseline.
        XCTAssertNil(ratios.first { $0.label == "network" && $0.target == "network" })
        let network = try find("network", "x0", "optimal")
        XCTAssertEqual(network.ratio, 0.97, accuracy: 1e-14)
        XCTAssertEqual(try find("network", "x0", "closest").baseline, "empirical")
        // Two targets x two baselines x (3 methods, + the network against x0).
        XCTAssertEqual(ratios.count, 3 + 3 + 4 + 4)
    }

    /// The interval is the 2.5 / 97.5 % percentile interval of the ratio of sums over the bootstrap's resampled
    /// query lists, one list for both methods.
    func testIntervalIsThePercentileOfResampledRatios() throws {
        let (rows, perQuery) = Self.fixture()
        let ratios = PairedRatios.compute(rows: rows, perQuery: perQuery, bootstrap: Bootstrap(resamples: 500))
        let flex = try XCTUnwrap(ratios.first { $0.label == "pspc-flex lambda=0.5" && $0.baselineRole == "optimal" && $0.target == "network" })
        var resampled: [Double] = []
        Bootstrap(resamples: 500).forEachResample(count: 40) { _, indices in
            resampled.append(indices.reduce(0) { $0 + perQuery[3].network[$1] } / indices.reduce(0) { $0 + perQuery[1].network[$1] })
        }
        resampled.sort()
        XCTAssertEqual(flex.interval.low, Bootstrap.quantile(sorted: resampled, 0.025))
        XCTAssertEqual(flex.interval.high, Bootstrap.quantile(sorted: resampled, 0.975))
        XCTAssertLessThan(flex.interval.low, flex.ratio)
        XCTAssertGreaterThan(flex.interval.high, flex.ratio)
        XCTAssertEqual(flex.ratio, 0.95, accuracy: 0.05)
    }

    /// A baseline with zero error on some queries (the optimal denoiser on training queries at small t) gives
    /// +inf on resamples of only those queries, never NaN, so the interval's ends stay ordered.
    func testABaselineWithZeroErrorsGivesInfiniteNotNaNRatios() throws {
        let rows = [
            SweepRow(tIndex: 0, t: 0.002, method: "empirical", param: .none, label: "empirical", mseToNetwork: 1, mseToX0: 0, queries: 3),
            SweepRow(tIndex: 0, t: 0.002, method: "network", param: .none, label: "network", mseToNetwork: 0, mseToX0: 1, queries: 3),
        ]
        let perQuery: [(network: [Double], x0: [Double])] = [([1, 1, 1], [0, 0, 1e-30]), ([0, 0, 0], [1, 2, 0])]
        let ratios = PairedRatios.compute(rows: rows, perQuery: perQuery)
        let network = try XCTUnwrap(ratios.first { $0.label == "network" && $0.baselineRole == "optimal" })
        XCTAssertEqual(network.ratio, 3e30)
        XCTAssertEqual(network.interval.high, .infinity)
        XCTAssertFalse(network.interval.low.isNaN)
        // The empirical row against itself: every resample is 1, the all-zero ones included.
        let itself = try XCTUnwrap(ratios.first { $0.label == "empirical" && $0.target == "x0" && $0.baselineRole == "optimal" })
        XCTAssertEqual(itself.interval, Bootstrap.Interval(low: 1, high: 1))
        XCTAssertTrue(PairedRatios.csv(ratios).contains(",inf,"))
    }

    func testCSVNamesEveryColumn() {
        let (rows, perQuery) = Self.fixture()
        let text = PairedRatios.csv(PairedRatios.compute(rows: rows, perQuery: perQuery))
        let lines = text.split(separator: "\n")
        XCTAssertEqual(String(lines[0]), "t_index,t,label,target,baseline_role,baseline,ratio,ci_low,ci_high,queries")
        XCTAssertEqual(lines.count, 1 + 14)
        XCTAssertTrue(lines[1].hasPrefix("3,1.09,empirical,network,optimal,empirical,1.0,1.0,1.0,40"), String(lines[1]))
    }
}
