import Foundation
import PSPCCore
import PSPCData
import PSPCExperiments
import XCTest

final class CalibrationTests: XCTestCase {
    func row(_ i: Int, _ t: Double, _ method: String, _ param: Variant.Param, _ mse: Double, queries: Int = 10)
        -> SweepRow
    {
        let label = Variant(method: method, param: param, engineMethod: method == "network" ? nil : .empirical).label
        return SweepRow(
            tIndex: i, t: t, method: method, param: param, label: label, mseToNetwork: mse, mseToX0: 1, queries: queries)
    }

    func testPicksTheMinimiserPerTimeWithTiesToTheSmallerSize() throws {
        let grid = [3.0, 0.3]
        let rows = [
            row(0, 3, "network", .none, 0), row(0, 3, "pspc-square", .patchSize(3), 0.5),
            row(0, 3, "pspc-square", .patchSize(7), 0.2), row(0, 3, "pspc-square", .patchSize(11), 0.2),
            row(0, 3, "pspc-flex", .lambda(0.5), 0.4), row(0, 3, "pspc-flex", .lambda(0.9), 0.3),
            row(1, 0.3, "pspc-square", .patchSize(3), 0.01), row(1, 0.3, "pspc-square", .patchSize(7), 0.02),
            row(1, 0.3, "pspc-square", .patchSize(11), 0.03), row(1, 0.3, "pspc-flex", .lambda(0.5), 0.1),
            row(1, 0.3, "pspc-flex", .lambda(0.9), 0.2), row(1, 0.3, "empirical", .none, 0.001),
        ]
        let best = Calibration.best(try Calibration.candidates([(grid, rows)]))
        XCTAssertEqual(best.map(\.param), [.lambda(0.9), .patchSize(7), .lambda(0.5), .patchSize(3)])
        let dir = try Fixture.temporaryDirectory("calibration")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let run = RunDirectory(dir)
        _ = try Calibration.write(try Calibration.candidates([(grid, rows)]), grid: grid, to: run)
        // The schedule files are what `--schedule` and `--lambda-schedule` decode.
        let sizes = try JSONDecoder().decode(PatchSchedule.self, from: Data(try FileIO.read(run.file("patch-schedule.json"))))
        XCTAssertEqual(sizes.values, [7, 3])
        XCTAssertEqual(sizes.value(at: 0.29), 3)
        let lambdas = try JSONDecoder().decode(LambdaSchedule.self, from: Data(try FileIO.read(run.file("lambda-schedule.json"))))
        XCTAssertEqual(lambdas.values, [0.9, 0.5])
        let bestCSV = String(decoding: try FileIO.read(run.file("best.csv")), as: UTF8.self)
        XCTAssertEqual(bestCSV.split(separator: "\n")[2], "0,3.0,pspc-square,7,0.2")
    }

    /// LS and ELS windows are calibrated like PSPC-Square's crops, into schedules `--scale-schedule` reads.
    /// The whole image is always a candidate: s = H and lambda = 1 come from the empirical rows when a sweep did
    /// not sweep them, only for methods it swept, and s = H only on square images.
    func testWholeImageCandidatesComeFromTheEmpiricalRows() throws {
        func row(_ i: Int, _ method: String, _ param: Variant.Param, _ mse: Double) -> SweepRow {
            SweepRow(tIndex: i, t: [10, 1][i], method: method, param: param, label: method, mseToNetwork: mse, mseToX0: 1, queries: 4)
        }
        let rows = [
            row(0, "network", .none, 0), row(0, "empirical", .none, 0.01), row(0, "pspc-square", .patchSize(5), 0.2),
            row(0, "pspc-square", .patchSize(28), 0.01), row(1, "network", .none, 0), row(1, "empirical", .none, 0.5),
            row(1, "pspc-square", .patchSize(5), 0.1), row(1, "pspc-flex", .lambda(0.5), 0.3),
            row(0, "els", .patchSize(7), 0.05), row(1, "els", .patchSize(7), 0.2), row(1, "ls", .patchSize(3), 0.4),
        ]
        let (whole, added) = Calibration.addingWholeImage(rows, height: 28, width: 28)
        XCTAssertEqual(added, ["els 55", "ls 55", "pspc-flex 1.0", "pspc-square 28"])
        // t 0 already had s = 28; t 1 gets it, and lambda = 1 where pspc-flex was swept (t 1 only); the 55 x 55
        // window wherever LS or ELS was swept.
        let extra = Array(whole.dropFirst(rows.count))
        XCTAssertEqual(extra.map(\.tIndex), [1, 1, 1, 0, 1])
        XCTAssertEqual(extra.map(\.method), ["pspc-square", "pspc-flex", "ls", "els", "els"])
        XCTAssertEqual(extra.map(\.param), [.patchSize(28), .lambda(1), .patchSize(55), .patchSize(55), .patchSize(55)])
        XCTAssertEqual(extra.map(\.mseToNetwork), [0.5, 0.5, 0.5, 0.01, 0.5])
        let best = Calibration.best(try Calibration.candidates([([10, 1], whole)]))
        XCTAssertEqual(best.map(\.method), ["els", "pspc-square", "els", "ls", "pspc-flex", "pspc-square"])
        XCTAssertEqual(
            best.map(\.param), [.patchSize(55), .patchSize(28), .patchSize(7), .patchSize(3), .lambda(0.5), .patchSize(5)])
        // H != W: no square covers the image, so no s is added; the window covering it is 2 max(H, W) - 1.
        XCTAssertEqual(
            Calibration.addingWholeImage(rows, height: 24, width: 40).added, ["els 79", "ls 79", "pspc-flex 1.0"])
    }

    /// Held-out judging: each winner's error on the held-out candidates, beside the held-out minimiser's; a
    /// winner the held-out sweeps lack is named.
    func testHeldOutJudgingLooksUpTheChosenCandidate() throws {
        func c(_ i: Int, _ s: Int, _ mse: Double) -> Calibration.Candidate {
            Calibration.Candidate(tIndex: i, t: [10, 1][i], method: "pspc-square", param: .patchSize(s), mseToNetwork: mse)
        }
        let winners = Calibration.best([c(0, 3, 0.2), c(0, 5, 0.1), c(1, 3, 0.05), c(1, 5, 0.3)])
        let judged = try Calibration.evaluate(winners, on: [c(0, 3, 0.15), c(0, 5, 0.25), c(1, 3, 0.04), c(1, 5, 0.5)])
        XCTAssertEqual(judged.map(\.chosen.param), [.patchSize(5), .patchSize(3)])
        XCTAssertEqual(judged.map(\.heldOutMSE), [0.25, 0.04])
        XCTAssertEqual(judged.map(\.heldOutBest.param), [.patchSize(3), .patchSize(3)])
        XCTAssertThrowsError(try Calibration.evaluate(winners, on: [c(0, 3, 0.1), c(1, 3, 0.1)])) { error in
            XCTAssertTrue("\(error)".contains("lack pspc-square 5"), "\(error)")
        }
    }

    /// Win fractions over bootstrap resamples of the queries: a candidate better on every query wins every
    /// resample; one better on average but not on every query wins a share; each (t, method) sums to 1.
    func testWinFractionsCountMinimisersOverResamplesOfTheQueries() throws {
        func row(_ i: Int, _ s: Int) -> SweepRow {
            SweepRow(tIndex: i, t: [10, 1][i], method: "pspc-square", param: .patchSize(s), label: "s=\(s)", mseToNetwork: 0, mseToX0: 0, queries: 4)
        }
        let rows = [row(0, 3), row(0, 5), row(1, 3), row(1, 5)]
        let errors: [String: [Double]] = [
            "0|s=3": [1, 2, 3, 4], "0|s=5": [2, 3, 4, 5],  // s = 5 worse on every query
            "1|s=3": [1, 1, 10, 10], "1|s=5": [2, 2, 2, 2],  // s = 3 better on two queries, much worse on two
        ]
        let sweep = Calibration.QueryErrors(rows: rows, mseToNetwork: errors)
        let candidates = try Calibration.candidates([([10, 1], rows)])
        let wins = try Calibration.winFractions(candidates, sweeps: [sweep], bootstrap: Bootstrap(resamples: 400))
        let fraction = { (i: Int, s: Int) in wins.first { $0.candidate.tIndex == i && $0.candidate.param == .patchSize(s) }!.winFraction }
        // Counts over 400 resamples: exactly 1 and 0, and every share a whole number of resamples.
        XCTAssertEqual(fraction(0, 3), 1)
        XCTAssertEqual(fraction(0, 5), 0)
        for w in wins { XCTAssertEqual(w.winFraction * 400, (w.winFraction * 400).rounded(), "\(w)") }
        XCTAssertGreaterThan(fraction(1, 3), 0.05)
        XCTAssertGreaterThan(fraction(1, 5), 0.5)
        XCTAssertEqual(fraction(1, 3) + fraction(1, 5), 1, accuracy: 1e-12)
        // A sweep missing a candidate's per-query errors is named.
        XCTAssertThrowsError(
            try Calibration.winFractions(candidates, sweeps: [Calibration.QueryErrors(rows: rows, mseToNetwork: [:])]))
    }

    func testLSAndELSWindowsGetTheirOwnSchedules() throws {
        let grid = [3.0, 0.3]
        var rows: [SweepRow] = []
        for (i, t) in grid.enumerated() {
            for p in [3, 5, 7] {
                // LS is closest at P = 7 then 3, ELS at 5 then 5.
                rows.append(row(i, t, "ls", .patchSize(p), i == 0 ? 1.0 / Double(p) : Double(p)))
                rows.append(row(i, t, "els", .patchSize(p), abs(Double(p) - 5) + 0.1))
            }
        }
        let dir = try Fixture.temporaryDirectory("calibration-ls")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let run = RunDirectory(dir)
        let best = try Calibration.write(try Calibration.candidates([(grid, rows)]), grid: grid, to: run)
        XCTAssertEqual(best.map(\.method), ["els", "ls", "els", "ls"])
        XCTAssertEqual(best.map(\.param), [.patchSize(5), .patchSize(7), .patchSize(5), .patchSize(3)])
        let ls = try JSONDecoder().decode(PatchSchedule.self, from: Data(try FileIO.read(run.file("ls-schedule.json"))))
        XCTAssertEqual(ls.values, [7, 3])
        let els = try JSONDecoder().decode(PatchSchedule.self, from: Data(try FileIO.read(run.file("els-schedule.json"))))
        XCTAssertEqual(els.values, [5, 5])
        XCTAssertFalse(FileManager.default.fileExists(atPath: run.file("patch-schedule.json")))
    }

    /// With forward and reverse sweeps, each candidate's error is the query-weighted mean of the two.
    func testBothSweepsAreWeightedByQueries() throws {
        let grid = [1.0]
        let forward = [row(0, 1, "pspc-square", .patchSize(3), 0.1, queries: 30), row(0, 1, "pspc-square", .patchSize(5), 0.2, queries: 30)]
        let reverse = [row(0, 1, "pspc-square", .patchSize(3), 0.9, queries: 10), row(0, 1, "pspc-square", .patchSize(5), 0.2, queries: 10)]
        let candidates = try Calibration.candidates([(grid, forward), (grid, reverse)])
        XCTAssertEqual(candidates[0].mseToNetwork, (0.1 * 30 + 0.9 * 10) / 40, accuracy: 1e-15)
        XCTAssertEqual(Calibration.best(candidates)[0].param, .patchSize(5))
        XCTAssertThrowsError(try Calibration.candidates([(grid, forward), ([2.0], reverse)])) {
            XCTAssertTrue("\($0)".contains("grids differ"), "\($0)")
        }
    }

    func testResultsFilesRoundTripAndDamageIsNamed() throws {
        let dir = try Fixture.temporaryDirectory("results")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let run = RunDirectory(dir)
        let rows = [
            row(0, 80, "network", .none, 0), row(0, 80, "pspc-square", .patchSize(3), 1.0 / 3),
            row(0, 80, "pspc-flex", .lambda(0.7), 2.0 / 3), row(0, 80, "pspc-square", .schedule, 1e-300),
            row(0, 80, "ls", .patchSize(5), 0.25), row(0, 80, "els", .patchSize(3), 0.5),
        ]
        var withIntervals = rows
        withIntervals[1].mseToNetworkInterval = Bootstrap.Interval(low: 0.3, high: 0.4)
        withIntervals[1].mseToX0Interval = Bootstrap.Interval(low: 0.9, high: 1.1)
        try run.writeText(SweepResults.csv(withIntervals), to: "results.csv")
        XCTAssertEqual(try SweepResults.read(run), withIntervals)
        // Files written before the intervals (8 columns) still read.
        var old = SweepResults.headerWithoutIntervals + "\n"
        for line in SweepResults.csv(rows).split(separator: "\n").dropFirst() {
            old += line.split(separator: ",", omittingEmptySubsequences: false).prefix(8).joined(separator: ",") + "\n"
        }
        try run.writeText(old, to: "results.csv")
        XCTAssertEqual(try SweepResults.read(run), rows)
        try run.writeText(SweepResults.csv(rows), to: "results.csv")
        XCTAssertEqual(try SweepResults.read(run), rows)
        let text = SweepResults.csv(rows)
        try run.writeText(String(text.dropLast(9)), to: "results.csv")
        XCTAssertThrowsError(try SweepResults.read(run)) {
            XCTAssertTrue("\($0)".contains("results.csv: corrupt"), "\($0)")
        }
        try run.writeText(text.replacingOccurrences(of: "0.3333", with: "x.3333"), to: "results.csv")
        XCTAssertThrowsError(try SweepResults.read(run)) { XCTAssertTrue("\($0)".contains("line 3"), "\($0)") }
    }
}
