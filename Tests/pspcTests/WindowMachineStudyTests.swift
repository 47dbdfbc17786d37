import Foundation
import PSPCData
import PSPCTestSupport
import XCTest

/// Kamb & Ganguli's LS and ELS machines through a whole study with real processes: a forward sweep against the
/// network, calibration of each machine's window per t, a Heun sample comparison at the calibrated windows with
/// the median Pearson correlation, and the report.
final class WindowMachineStudyTests: XCTestCase {
    func testSweepCalibrateCompareAndReport() throws {
        let work = try CommandRunner.temporaryDirectory("window-study")
        defer { try? FileManager.default.removeItem(atPath: work) }
        try NetworkFixture.makeNetwork(at: "\(work)/net.pt")
        try CommandRunner.succeed(
            ["ingest", "--source", "fashion-mnist:train", "--limit", "120", "--shards", "2", "--out", "\(work)/data"])
        let env = NetworkFixture.environment
        try CommandRunner.succeed(
            [
                "sweep", "forward", "--data", "\(work)/data", "--local-network", "\(work)/net.pt",
                "--methods", "ls,els,empirical", "--patch-sizes", "3,5", "--grid", "edm:4", "--queries", "3",
                "--seed", "1", "--out", "\(work)/study/forward",
            ], environment: env)
        // A second sweep on other queries (another seed) is the held-out set the chosen windows are judged on.
        try CommandRunner.succeed(
            [
                "sweep", "forward", "--data", "\(work)/data", "--local-network", "\(work)/net.pt",
                "--methods", "ls,els,empirical", "--patch-sizes", "3,5", "--grid", "edm:4", "--queries", "3",
                "--seed", "2", "--out", "\(work)/held-out",
            ], environment: env)
        let sameQueries = try CommandRunner.run(
            ["calibrate", "\(work)/study/forward", "--held-out", "\(work)/study/forward", "--out", "\(work)/refused"])
        XCTAssertEqual(sameQueries.status, 1)
        XCTAssertTrue(sameQueries.stderr.contains("has the same queries"), sameQueries.stderr)
        try CommandRunner.succeed(
            ["calibrate", "\(work)/study/forward", "--held-out", "\(work)/held-out", "--out", "\(work)/study/calibration"])
        // wins.csv: per (t, machine) the candidates' shares of bootstrap resamples, summing to 1. The candidates are
        // the swept windows and the whole image (P = 2 * 28 - 1), which the empirical rows stand for.
        let wholeImage = "55"
        let wins = try CSVRecords.read("\(work)/study/calibration/wins.csv")
        XCTAssertEqual(wins.first, ["t_index", "t", "method", "param", "mse_to_network", "win_fraction"])
        for group in Dictionary(grouping: wins.dropFirst(), by: { "\($0[0])|\($0[2])" }).values {
            XCTAssertEqual(group.map { $0[3] }.sorted(), ["3", "5", wholeImage], "\(group)")
            XCTAssertEqual(group.reduce(0) { $0 + Double($1[5])! }, 1, accuracy: 1e-9, "\(group)")
        }
        // held-out.csv: each choice's error on the other queries is the held-out sweep's number for that window,
        // and the held-out minimiser is no worse.
        let heldOut = try CSVRecords.read("\(work)/study/calibration/held-out.csv")
        XCTAssertEqual(heldOut.first, [
            "t_index", "t", "method", "chosen_param", "mse_in_sample", "mse_held_out", "held_out_best_param",
            "mse_held_out_best", "ratio_to_held_out_best",
        ])
        // A sweep's row for (t index, machine, window); the whole-image window's is the empirical row.
        func sweepRow(_ rows: [[String]], _ t: String, _ machine: String, _ param: String) -> [String]? {
            param == wholeImage
                ? rows.first { $0[0] == t && $0[2] == "empirical" }
                : rows.first { $0[0] == t && $0[2] == machine && $0[3] == param }
        }
        let heldOutResults = Array(try CSVRecords.read("\(work)/held-out/results.csv").dropFirst())
        XCTAssertEqual(heldOut.count, 1 + 2 * 4)
        for row in heldOut.dropFirst() {
            let same = try XCTUnwrap(sweepRow(heldOutResults, row[0], row[2], row[3]), "\(row)")
            XCTAssertEqual(Double(row[5])!, Double(same[5])!, accuracy: 1e-12 * Double(same[5])!, "\(row)")
            XCTAssertLessThanOrEqual(Double(row[7])!, Double(row[5])!, "\(row)")
            XCTAssertGreaterThanOrEqual(Double(row[8])!, 1, "\(row)")
        }

        // Each machine's schedule is its own minimiser per t among the swept windows and the whole image.
        let results = Array(try CSVRecords.read("\(work)/study/forward/results.csv").dropFirst())
        for machine in ["ls", "els"] {
            let schedule = try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: "\(work)/study/calibration/\(machine)-schedule.json")))
                as! [String: Any]
            let values = schedule["values"] as! [Int]
            XCTAssertEqual(values.count, 4, machine)
            for (t, chosen) in values.enumerated() {
                // results.csv: t_index,t,method,param,label,mse_to_network,...
                let errors = try ["3", "5", wholeImage].map { param in
                    (param, Double(try XCTUnwrap(sweepRow(results, String(t), machine, param))[5])!)
                }
                let best = errors.min { $0.1 < $1.1 }!
                XCTAssertEqual(Int(best.0), chosen, "\(machine) at t index \(t): \(errors)")
            }
        }

        // Heun samples of the network and both machines at their calibrated windows, from shared noise.
        let methods = [
            "network", "ls=\(work)/study/calibration/ls-schedule.json", "els=\(work)/study/calibration/els-schedule.json",
            "empirical",
        ]
        let compare = try CommandRunner.succeed(
            [
                "sample", "--compare", "--methods", methods.joined(separator: ","), "--data", "\(work)/data",
                "--local-network", "\(work)/net.pt", "--solver", "heun", "--steps", "4", "--count", "3", "--seed", "4",
                "--out", "\(work)/study/samples",
            ], environment: env)
        XCTAssertTrue(compare.stderr.contains("pearson_median"), compare.stderr)
        let config = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: "\(work)/study/samples/config.json"))) as! [String: Any]
        XCTAssertEqual(config["solver"] as? String, "heun")
        XCTAssertEqual(config["methods"] as? [String], ["network", "ls schedule", "els schedule", "empirical"])
        // The comparison's ELS samples are `pspc sample --method els` from the same seed.
        try CommandRunner.succeed(
            [
                "sample", "--method", "els", "--scale-schedule", "\(work)/study/calibration/els-schedule.json",
                "--data", "\(work)/data", "--solver", "heun", "--steps", "4", "--count", "3", "--seed", "4",
                "--out", "\(work)/els-alone",
            ])
        XCTAssertEqual(
            try NPY.read(path: "\(work)/els-alone/samples.npy").asDoubles(),
            try NPY.read(path: "\(work)/study/samples/samples/els-schedule.npy").asDoubles())

        // similarity.csv: every ordered pair, the median inside its interval.
        let similarity = try CSVRecords.read("\(work)/study/samples/similarity.csv")
        XCTAssertEqual(similarity.count, 1 + 16)
        let header = similarity[0]
        let col = { (name: String) in header.firstIndex(of: name)! }
        for row in similarity.dropFirst() where row[0] != row[1] {
            let median = Double(row[col("pearson_median")])!
            XCTAssertLessThanOrEqual(Double(row[col("pearson_median_ci_low")])!, median + 1e-12, "\(row)")
            XCTAssertGreaterThanOrEqual(Double(row[col("pearson_median_ci_high")])!, median - 1e-12, "\(row)")
            XCTAssertTrue((-1...1).contains(median), "\(row)")
        }

        // The report holds the sweep, the calibration and the comparison.
        try CommandRunner.succeed(["report", "\(work)/study", "--out", "\(work)/report"])
        let html = try String(contentsOfFile: "\(work)/report/index.html", encoding: .utf8)
        for text in ["best P (ls)", "best P (els)", "Median Pearson correlation", "els schedule"] {
            XCTAssertTrue(html.contains(text), "the report lacks \(text)")
        }
    }
}

/// A csv file as records, for tests (no quoting in pspc's own files).
enum CSVRecords {
    static func read(_ path: String) throws -> [[String]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
            .map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
    }
}
