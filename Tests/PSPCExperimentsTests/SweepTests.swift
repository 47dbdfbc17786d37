import Foundation
import PSPCCore
import PSPCData
import PSPCExperiments
import XCTest

final class SweepTests: XCTestCase {
    func forwardSweep(_ dir: String, engine: DenoisingEngine, network: @escaping BatchDenoiser = Fixture.network)
        async throws -> Sweep
    {
        let run = RunDirectory(dir)
        try run.prepare(config: .object([("kind", .string("sweep-forward")), ("grid", .doubles(Fixture.grid))]))
        let sweep = try Sweep(
            kind: .forward, run: run, shape: Fixture.shape, grid: Fixture.grid, variants: Fixture.variants)
        try sweep.writeForwardQueries(x0: Fixture.x0(count: 7), seed: 3)
        _ = try await sweep.evaluate(engine: engine, network: network) { _, _ in }
        try sweep.writeResults()
        return sweep
    }

    /// A second stand-in network: shrinks a little harder than `Fixture.network`.
    static let otherNetwork: BatchDenoiser = { z, t, progress in
        progress(z.count / Fixture.shape.dimension)
        return z.map { $0 / (1 + 1.2 * t * t) }
    }

    /// A study of two networks: each method is computed once (the engine's work does not grow with the networks)
    /// and its outputs and its errors to the first network are those of a one-network sweep, bit for bit;
    /// networks.csv holds every variant's MSE to each network it is not, the network-vs-network MSE included, and
    /// the report shows them beside the optimal denoiser's and the closest method's, every number from the file.
    func testSeveralNetworksAreComparedWithEachOtherAndEachMethodIsComputedOnce() async throws {
        let single = try Fixture.temporaryDirectory("sweep-one-network")
        let study = try Fixture.temporaryDirectory("sweep-two-networks")
        defer { for dir in [single, study] { try? FileManager.default.removeItem(atPath: dir) } }
        let one = try await forwardSweep(single, engine: try Fixture.engine())
        let run = RunDirectory(study)
        try run.prepare(config: .object([("kind", .string("sweep-forward")), ("grid", .doubles(Fixture.grid))]))
        let networks = [Variant.network(named: "unet"), Variant.network(named: "dit")]
        let methods = Array(Fixture.variants.dropFirst())
        let sweep = try Sweep(kind: .forward, run: run, shape: Fixture.shape, grid: Fixture.grid, variants: networks + methods)
        XCTAssertEqual(sweep.networks.map(\.label), ["network unet", "network dit"])
        XCTAssertEqual(sweep.networks.map(\.slug), ["network-unet", "network-dit"])
        try sweep.writeForwardQueries(x0: Fixture.x0(count: 7), seed: 3)
        let work = try await sweep.evaluate(
            engine: try Fixture.engine(), networks: [Fixture.network, Self.otherNetwork]) { _, _ in }
        XCTAssertEqual(work.queryMethods, Fixture.grid.count * methods.count * 7)
        let rows = try sweep.writeResults()
        let oneRows = try SweepResults.read(one.run)
        for i in Fixture.grid.indices {
            for method in methods {
                XCTAssertEqual(
                    try FileIO.read(run.file(sweep.outputFile(i, method))),
                    try FileIO.read(one.run.file(one.outputFile(i, method))), method.label)
                let row = try XCTUnwrap(rows.first { $0.tIndex == i && $0.label == method.label })
                let expected = try XCTUnwrap(oneRows.first { $0.tIndex == i && $0.label == method.label })
                XCTAssertEqual(row.mseToNetwork.bitPattern, expected.mseToNetwork.bitPattern, method.label)
                XCTAssertEqual(row.mseToX0.bitPattern, expected.mseToX0.bitPattern, method.label)
            }
        }
        XCTAssertEqual(try SweepResults.read(run), rows)
        XCTAssertEqual(rows.filter { $0.method == "network" }.map(\.param), Array(repeating: [.name("unet"), .name("dit")], count: 5).flatMap { $0 })

        let comparisons = try XCTUnwrap(try NetworkComparison.read(run))
        XCTAssertEqual(comparisons, try sweep.networkComparisons())
        XCTAssertEqual(comparisons.count, Fixture.grid.count * 2 * (sweep.variants.count - 1))
        for (i, t) in Fixture.grid.enumerated() {
            let unet = try Sweep.readImages(run.file(sweep.outputFile(i, networks[0])), shape: Fixture.shape)
            let dit = try Sweep.readImages(run.file(sweep.outputFile(i, networks[1])), shape: Fixture.shape)
            let z = try Sweep.readImages(run.file(sweep.queriesFile(i)), shape: Fixture.shape)
            // The stored outputs are the two networks' (float32) answers.
            XCTAssertEqual(dit, Metrics.storable(z.map { $0 / (1 + 1.2 * t * t) }))
            let between = comparisons.filter { $0.tIndex == i && $0.label.hasPrefix("network") }
            XCTAssertEqual(between.count, 2)
            for row in between {
                XCTAssertEqual(row.mse, Metrics.mse(dit, unet), accuracy: 1e-15 * max(1, row.mse))
                XCTAssertTrue(row.interval.contains(row.mse), "\(row)")
                XCTAssertEqual(row.queries, 7)
            }
            let empirical = try Sweep.readImages(run.file(sweep.outputFile(i, methods[0])), shape: Fixture.shape)
            let toDit = try XCTUnwrap(comparisons.first { $0.tIndex == i && $0.label == "empirical" && $0.network == "network dit" })
            XCTAssertEqual(toDit.mse, Metrics.mse(empirical, dit), accuracy: 1e-15 * max(1, toDit.mse))
        }
        // A one-network sweep writes no networks.csv.
        XCTAssertNil(try NetworkComparison.read(one.run))

        let path = try Report.write(runs: [run], to: study + "/report")
        let html = String(decoding: try FileIO.read(path), as: UTF8.self)
        XCTAssertTrue(html.contains("<h3>Networks against each other</h3>"))
        XCTAssertTrue(html.contains("MSE to network unet (the first of 2 networks)"))
        XCTAssertEqual(try ReportPage.mismatches(html), [])
        let cells = ReportPage.numberCells(html).filter { $0.csv == run.file("networks.csv") && $0.column == "mse" }
        let between = Set(comparisons.indices.filter { comparisons[$0].label.hasPrefix("network") })
        XCTAssertEqual(Set(cells.map(\.row)).intersection(between), between, "every network-vs-network MSE is shown")
    }

    /// Independent draws: every t has its own x0 (x0/tNN.npy) and eps; MSE to x0 is taken against that t's images.
    func testIndependentDrawsGiveEachTItsOwnImagesAndNoise() async throws {
        let dir = try Fixture.temporaryDirectory("sweep-independent")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let run = RunDirectory(dir)
        try run.prepare(config: .object([("kind", .string("sweep-forward")), ("grid", .doubles(Fixture.grid))]))
        let sweep = try Sweep(
            kind: .forward, run: run, shape: Fixture.shape, grid: Fixture.grid, variants: Fixture.variants)
        let pool = Fixture.x0(count: 40)
        let d = Fixture.shape.dimension
        // Per t a different subset of the pool, as TrainingDraw gives one draw per seed.
        let perT = Fixture.grid.indices.map { i in
            Array(pool[((i * 3) * d)..<((i * 3 + 7) * d)])
        }
        try sweep.writeIndependentForwardQueries(x0: perT, seed: 3)
        XCTAssertFalse(FileManager.default.fileExists(atPath: run.file("x0.npy")))
        var noises: [[Double]] = []
        for (i, t) in Fixture.grid.enumerated() {
            XCTAssertEqual(sweep.x0File(i), "x0/\(Sweep.tName(i)).npy")
            let x0 = try Sweep.readImages(run.file(sweep.x0File(i)), shape: Fixture.shape)
            XCTAssertEqual(x0, Metrics.storable(perT[i]))
            let z = try Sweep.readImages(run.file(sweep.queriesFile(i)), shape: Fixture.shape)
            noises.append(zip(z, x0).map { ($0 - $1) / t })
            XCTAssertEqual(Metrics.mse(z, x0).squareRoot() / t, 1, accuracy: 0.35, "t = \(t)")
        }
        // The eps of different t are different draws (shared draws would make them equal).
        for i in 1..<noises.count { XCTAssertGreaterThan(Metrics.mse(noises[i], noises[0]), 0.5) }
        _ = try await sweep.evaluate(engine: try Fixture.engine(), network: Fixture.network) { _, _ in }
        let rows = try sweep.writeResults()
        for (i, _) in Fixture.grid.enumerated() {
            let x0 = try Sweep.readImages(run.file(sweep.x0File(i)), shape: Fixture.shape)
            let network = try Sweep.readImages(run.file(sweep.outputFile(i, .network)), shape: Fixture.shape)
            let row = try XCTUnwrap(rows.first { $0.tIndex == i && $0.method == "network" })
            XCTAssertEqual(row.mseToX0, Metrics.mse(network, x0))
        }
        // Seeds per t: distinct, and a function of (seed, t index) alone.
        let seeds = (0..<18).map { Sweep.drawSeed(3, t: $0) }
        XCTAssertEqual(Set(seeds).count, 18)
        XCTAssertEqual(Sweep.drawSeed(3, t: 5), seeds[5])
    }

    /// The reported MSEs are those of the engine's outputs on the stored queries, rounded as stored.
    func testResultsAreTheErrorsOfTheEngineOutputs() async throws {
        let dir = try Fixture.temporaryDirectory("sweep")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let engine = try Fixture.engine()
        let sweep = try await forwardSweep(dir, engine: engine)
        let rows = try SweepResults.read(sweep.run)
        XCTAssertEqual(rows.count, Fixture.grid.count * Fixture.variants.count)
        let x0 = try Sweep.readImages(sweep.run.file("x0.npy"), shape: Fixture.shape)
        for (i, t) in Fixture.grid.enumerated() {
            let z = try Sweep.readImages(sweep.run.file(sweep.queriesFile(i)), shape: Fixture.shape)
            // z = x0 + t eps: the noise level is the one asked for.
            let residual = Metrics.mse(z, x0)
            XCTAssertEqual(residual.squareRoot() / t, 1, accuracy: 0.35, "t = \(t)")
            let network = Metrics.storable(try await Fixture.network(z, t) { _ in })
            for variant in Fixture.variants.dropFirst() {
                let output = Metrics.storable(try await engine.denoise(z, t: t, method: variant.engineMethod!).values)
                let row = rows.first { $0.tIndex == i && $0.label == variant.label }!
                XCTAssertEqual(row.mseToNetwork, Metrics.mse(output, network), "\(variant.label) t=\(t)")
                XCTAssertEqual(row.mseToX0, Metrics.mse(output, x0), "\(variant.label) t=\(t)")
                XCTAssertEqual(row.queries, 7)
                // The intervals are the bootstrap of the per-query errors, whose mean is the row's MSE.
                let d = Fixture.shape.dimension
                let perQuery = (0..<7).map { q in
                    Metrics.mse(Array(output[(q * d)..<((q + 1) * d)]), Array(x0[(q * d)..<((q + 1) * d)]))
                }
                XCTAssertEqual(perQuery.reduce(0, +) / 7, row.mseToX0, accuracy: 1e-12 * row.mseToX0)
                XCTAssertEqual(row.mseToX0Interval, Bootstrap().mean(perQuery))
                let interval = try XCTUnwrap(row.mseToNetworkInterval)
                XCTAssertTrue(interval.contains(row.mseToNetwork) && interval.low < interval.high, "\(variant.label)")
            }
            XCTAssertEqual(rows.first { $0.tIndex == i && $0.method == "network" }!.mseToNetwork, 0)
        }
        let json = try RunDirectory.readJSON(sweep.run.file("results.json"))
        XCTAssertEqual(json["rows"]?.array?.count, rows.count)
        XCTAssertEqual(json["rows"]?.array?[3]["mse_to_network"]?.double, rows[3].mseToNetwork)
        XCTAssertEqual(json["rows"]?.array?[3]["mse_to_x0_ci"]?.array?.count, 2)
        // per-query.csv: one line per (row, query), the values the intervals come from.
        let perQuery = try CSVText.records(String(decoding: try FileIO.read(sweep.run.file("per-query.csv")), as: UTF8.self))
        XCTAssertEqual(perQuery.first, ["t_index", "label", "query", "mse_to_network", "mse_to_x0"])
        XCTAssertEqual(perQuery.count, 1 + rows.count * 7)
        // ratios.csv: the paired ratios of those per-query errors, for every t.
        let ratios = try CSVText.records(String(decoding: try FileIO.read(sweep.run.file("ratios.csv")), as: UTF8.self))
        XCTAssertEqual(ratios.first, PairedRatios.header.split(separator: ",").map(String.init))
        XCTAssertEqual(Set(ratios.dropFirst().map { $0[0] }), Set(Fixture.grid.indices.map(String.init)))
        for line in ratios.dropFirst() where line[4] == "optimal" && line[3] == "x0" {
            let row = rows.first { String($0.tIndex) == line[0] && $0.label == line[2] }!
            let optimal = rows.first { String($0.tIndex) == line[0] && $0.method == "empirical" }!
            XCTAssertEqual(Double(line[6])!, row.mseToX0 / optimal.mseToX0, accuracy: 1e-12 * Double(line[6])!)
        }
    }

    /// Interrupted after some units and re-run: the results are the same bytes as an uninterrupted run.
    func testResumeAfterAnInterruptionGivesTheSameBytes() async throws {
        let whole = try Fixture.temporaryDirectory("whole"), broken = try Fixture.temporaryDirectory("broken")
        defer {
            try? FileManager.default.removeItem(atPath: whole)
            try? FileManager.default.removeItem(atPath: broken)
        }
        _ = try await forwardSweep(whole, engine: try Fixture.engine())
        // The network fails on its third call: t00 and t01 finish, the rest does not.
        final class Calls: @unchecked Sendable { var count = 0 }
        let calls = Calls()
        let failing: BatchDenoiser = { z, t, progress in
            calls.count += 1
            if calls.count == 3 { throw InjectedFailure() }
            return try await Fixture.network(z, t, progress)
        }
        do {
            _ = try await forwardSweep(broken, engine: try Fixture.engine(), network: failing)
            XCTFail("the injected failure did not stop the sweep")
        } catch is InjectedFailure {}
        XCTAssertTrue(FileManager.default.fileExists(atPath: broken + "/outputs/t01/cfdm.npy"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: broken + "/outputs/t02/network.npy"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: broken + "/results.csv"))
        _ = try await forwardSweep(broken, engine: try Fixture.engine())
        for file in ["results.csv", "results.json", "x0.npy", "z/t03.npy", "outputs/t04/pspc-square-s5.npy"] {
            XCTAssertEqual(try FileIO.read(whole + "/" + file), try FileIO.read(broken + "/" + file), file)
        }
    }

    /// The training set split into uneven shards gives the same figures (to float32 rounding of outputs).
    func testResultsDoNotDependOnSharding() async throws {
        let one = try Fixture.temporaryDirectory("one"), three = try Fixture.temporaryDirectory("three")
        defer {
            try? FileManager.default.removeItem(atPath: one)
            try? FileManager.default.removeItem(atPath: three)
        }
        let a = try SweepResults.read(try await forwardSweep(one, engine: try Fixture.engine()).run)
        let b = try SweepResults.read(
            try await forwardSweep(three, engine: try Fixture.engine(splits: [0, 1, 31, 60])).run)
        for (x, y) in zip(a, b) {
            XCTAssertEqual(x.label, y.label)
            XCTAssertEqual(x.mseToNetwork, y.mseToNetwork, accuracy: 1e-6 * max(x.mseToNetwork, 1e-3), x.label)
            XCTAssertEqual(x.mseToX0, y.mseToX0, accuracy: 1e-6 * max(x.mseToX0, 1e-3), x.label)
        }
    }

    /// Reverse sweeps evaluate on the network's Heun states: the first is t_max times the seeded noise, the
    /// last sample is the trajectory's end, and a re-run does not recompute the trajectories.
    func testReverseQueriesAreTheNetworksHeunStates() async throws {
        let dir = try Fixture.temporaryDirectory("reverse")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let grid = EDM.grid(steps: 5)
        let run = RunDirectory(dir)
        try run.prepare(config: .object([("kind", .string("sweep-reverse"))]))
        let sweep = try Sweep(kind: .reverse, run: run, shape: Fixture.shape, grid: grid, variants: Fixture.variants)
        final class Calls: @unchecked Sendable { var count = 0 }
        let calls = Calls()
        let counting: BatchDenoiser = { z, t, p in
            calls.count += 1
            return try await Fixture.network(z, t, p)
        }
        try await sweep.writeReverseQueries(count: 3, seed: 5, network: counting) { _ in }
        XCTAssertEqual(calls.count, sweep.reverseEvaluations)
        try await sweep.writeReverseQueries(count: 3, seed: 5, network: counting) { _ in }
        XCTAssertEqual(calls.count, sweep.reverseEvaluations, "trajectories were recomputed")
        let first = try Sweep.readImages(run.file(sweep.queriesFile(0)), shape: Fixture.shape)
        let noise = NormalNoise(seed: 5).normals(stream: 1, count: Fixture.shape.dimension)
        XCTAssertEqual(first[64], Double(Float(80 * noise[0])))
        // With D(z, t) = z / (1 + t^2), dz/dt = z t / (1 + t^2): each Heun step multiplies z by a factor.
        let last = try Sweep.readImages(run.file("x0.npy"), shape: Fixture.shape)
        var factor = 1.0
        let times = grid + [0]
        for i in 0..<grid.count {
            let t = times[i], tNext = times[i + 1]
            let d = t / (1 + t * t)
            if tNext > 0 {
                let zNext = 1 + (tNext - t) * d
                let dPrime = zNext * tNext / (1 + tNext * tNext)
                factor *= 1 + (tNext - t) * 0.5 * (d + dPrime)
            } else {
                factor *= 1 + (tNext - t) * d
            }
            let state = try Sweep.readImages(run.file(sweep.queriesFile(min(i + 1, grid.count - 1))), shape: Fixture.shape)
            if i + 1 < grid.count {
                XCTAssertEqual(state[7], first[7] * factor, accuracy: 1e-5 * abs(first[7] * factor) + 1e-6, "step \(i)")
            }
        }
        XCTAssertEqual(last[7], first[7] * factor, accuracy: 1e-5 * abs(first[7] * factor) + 1e-6)
        _ = try await sweep.evaluate(engine: try Fixture.engine(), network: Fixture.network) { _, _ in }
        let rows = try sweep.writeResults()
        XCTAssertEqual(rows.count, grid.count * Fixture.variants.count)
        XCTAssertTrue(rows.allSatisfy { $0.mseToX0.isFinite && $0.mseToNetwork.isFinite })
    }

    func testANonFiniteOutputIsAnErrorNotAResult() async throws {
        let dir = try Fixture.temporaryDirectory("nan")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let broken: BatchDenoiser = { z, _, _ in z.map { _ in .nan } }
        do {
            _ = try await forwardSweep(dir, engine: try Fixture.engine(), network: broken)
            XCTFail("a NaN network output was accepted")
        } catch let error as PSPCError {
            XCTAssertTrue(error.description.contains("network returned a non-finite value"), error.description)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/outputs/t00/network.npy"))
    }

    func testARunWithADifferentConfigIsRefused() throws {
        let dir = try Fixture.temporaryDirectory("config")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let run = RunDirectory(dir)
        XCTAssertFalse(try run.prepare(config: .object([("kind", .string("x")), ("seed", .int(1))])))
        XCTAssertTrue(try run.prepare(config: .object([("kind", .string("x")), ("seed", .int(1))])))
        XCTAssertThrowsError(try run.prepare(config: .object([("kind", .string("x")), ("seed", .int(2))]))) {
            XCTAssertTrue("\($0)".contains("seed: 1 != 2"), "\($0)")
        }
    }
}
