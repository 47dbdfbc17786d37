import Foundation
import PSPCCore
import PSPCData

extension Report {
    /// A row of a sweep's results (read by `SweepResults`) with its 0-based data row, so a table cell can name it.
    struct SweepRow {
        var csvRow: Int
        var tIndex: Int
        var t: Double
        var method: String
        var param: String
        var label: String
        var mseToNetwork: Double
        var mseToX0: Double
        var queries: Int
        /// 95 % bootstrap intervals over queries (nil in results written before them).
        var mseToNetworkInterval: Bootstrap.Interval? = nil
        var mseToX0Interval: Bootstrap.Interval? = nil
    }

    /// A sweep run's results.csv, checked to hold every variant at every t it names.
    struct Sweep {
        let run: RunDirectory
        /// results.csv, which the tables name as their source.
        let path: String
        let rows: [SweepRow]
        /// Variant labels in file order (network first when present).
        let labels: [String]
        /// (t_index, t) in file order (the grid's order, t descending).
        let times: [(index: Int, t: Double)]

        static func read(_ run: RunDirectory) throws -> Sweep {
            let path = run.file("results.csv")
            guard FileManager.default.fileExists(atPath: path) else {
                throw DataError.io(path: path, reason: "missing (the run has not written it)")
            }
            let rows = try SweepResults.read(run).enumerated().map { i, r in
                SweepRow(
                    csvRow: i, tIndex: r.tIndex, t: r.t, method: r.method, param: r.param.text, label: r.label,
                    mseToNetwork: r.mseToNetwork, mseToX0: r.mseToX0, queries: r.queries,
                    mseToNetworkInterval: r.mseToNetworkInterval, mseToX0Interval: r.mseToX0Interval)
            }
            guard !rows.isEmpty else { throw DataError.corrupt(path: path, reason: "no rows") }
            var labels: [String] = []
            var times: [(index: Int, t: Double)] = []
            for row in rows {
                if !labels.contains(row.label) { labels.append(row.label) }
                if !times.contains(where: { $0.index == row.tIndex }) { times.append((row.tIndex, row.t)) }
            }
            for time in times {
                let held = rows.filter { $0.tIndex == time.index }.map(\.label)
                if let missing = labels.first(where: { !held.contains($0) }) {
                    throw DataError.corrupt(
                        path: path, reason: "t_index \(time.index) has no row for \"\(missing)\" (truncated?)")
                }
            }
            if let grid = try? run.config()["grid"]?.array, grid.count > times.count {
                throw DataError.corrupt(
                    path: path,
                    reason: "rows for \(times.count) of the \(grid.count) grid times in config.json (truncated?)")
            }
            return Sweep(run: run, path: path, rows: rows, labels: labels, times: times)
        }

        func row(tIndex: Int, label: String) -> SweepRow? {
            rows.first { $0.tIndex == tIndex && $0.label == label }
        }

        /// pspc-square rows with a numeric size: the data of the patch-size error curves.
        var squareRows: [SweepRow] { rows.filter { $0.method == "pspc-square" && Int($0.param) != nil } }
    }

    /// One row of calibration.csv (a candidate) or best.csv (the minimiser per t and method): `param` holds the
    /// `param` or `best_param` column.
    struct CalibrationRow {
        var csvRow: Int
        var tIndex: Int
        var t: Double
        var method: String
        var param: String
        var mseToNetwork: Double

        static func rows(_ csv: CSV, param: String) throws -> [CalibrationRow] {
            try csv.rows.indices.map { i in
                CalibrationRow(
                    csvRow: i, tIndex: try csv.int(i, "t_index"), t: try csv.double(i, "t"),
                    method: try csv.string(i, "method"), param: try csv.string(i, param),
                    mseToNetwork: try csv.double(i, "mse_to_network"))
            }
        }
    }

    /// A `{"t": [...], "values": [...]}` schedule file.
    struct ScheduleFile {
        var t: [Double]
        var values: [Double]
    }

    /// A calibration run: every candidate, the minimisers and the schedule files that exist.
    struct Calibration {
        let run: RunDirectory
        let candidates: CSV
        let best: CSV
        let candidateRows: [CalibrationRow]
        let bestRows: [CalibrationRow]
        let patchSchedule: ScheduleFile?
        let lambdaSchedule: ScheduleFile?
        /// The LS and ELS window sizes chosen per t (ls-schedule.json, els-schedule.json), nil when not swept.
        let lsSchedule: ScheduleFile?
        let elsSchedule: ScheduleFile?

        static func read(_ run: RunDirectory) throws -> Calibration {
            let candidates = try CSV.read(
                run.file("calibration.csv"), header: ["t_index", "t", "method", "param", "mse_to_network"])
            let best = try CSV.read(
                run.file("best.csv"), header: ["t_index", "t", "method", "best_param", "mse_to_network"])
            return Calibration(
                run: run, candidates: candidates, best: best,
                candidateRows: try CalibrationRow.rows(candidates, param: "param"),
                bestRows: try CalibrationRow.rows(best, param: "best_param"),
                patchSchedule: try readSchedule(run.file("patch-schedule.json")),
                lambdaSchedule: try readSchedule(run.file("lambda-schedule.json")),
                lsSchedule: try readSchedule(run.file("ls-schedule.json")),
                elsSchedule: try readSchedule(run.file("els-schedule.json")))
        }

        /// The schedule at `path`, nil when the run has none.
        static func readSchedule(_ path: String) throws -> ScheduleFile? {
            guard FileManager.default.fileExists(atPath: path) else { return nil }
            let json = try RunDirectory.readJSON(path)
            guard let t = json["t"]?.array?.compactMap(\.double), let values = json["values"]?.array,
                t.count == values.count, values.allSatisfy({ $0.double != nil })
            else {
                throw DataError.corrupt(
                    path: path, reason: "expected {\"t\": [...], \"values\": [...]} of equal length")
            }
            return ScheduleFile(t: t, values: values.compactMap(\.double))
        }
    }

    /// One row of locality.csv.
    struct LocalityRow {
        var csvRow: Int
        var t: Double
        var sides: [Double]
    }

    /// A heatmap run's locality table.
    struct Locality {
        static let columns = ["side50", "side75", "side95"]
        let csv: CSV
        let rows: [LocalityRow]

        static func read(_ run: RunDirectory) throws -> Locality {
            let csv = try CSV.read(run.file("locality.csv"), header: ["t"] + columns)
            let rows = try csv.rows.indices.map { i in
                LocalityRow(csvRow: i, t: try csv.double(i, "t"), sides: try columns.map { try csv.double(i, $0) })
            }
            return Locality(csv: csv, rows: rows)
        }
    }

    /// A sample comparison's similarity.csv as matrices over the method labels (in file order). Runs written before
    /// the median and the intervals existed have only `pearson` and `mean_l2`.
    struct Similarity {
        let csv: CSV
        let labels: [String]
        /// csv data row of each ordered pair, keyed "a\u{0}b".
        let rowOf: [String: Int]

        static func read(_ run: RunDirectory) throws -> Similarity {
            let csv = try CSV.read(
                run.file("similarity.csv"),
                oneOf: [SampleComparison.similarityHeader, ["method_a", "method_b", "pearson", "mean_l2"]])
            var labels: [String] = []
            var rowOf: [String: Int] = [:]
            for i in csv.rows.indices {
                let a = try csv.string(i, "method_a"), b = try csv.string(i, "method_b")
                for label in [a, b] where !labels.contains(label) { labels.append(label) }
                for column in csv.header.dropFirst(2) { _ = try csv.double(i, column) }
                rowOf[a + "\u{0}" + b] = i
            }
            guard !labels.isEmpty else { throw DataError.corrupt(path: csv.path, reason: "no rows") }
            return Similarity(csv: csv, labels: labels, rowOf: rowOf)
        }

        func row(_ a: String, _ b: String) -> Int? { rowOf[a + "\u{0}" + b] }

        /// Whether the file has the median Pearson correlation and the intervals.
        var hasIntervals: Bool { csv.header.contains("pearson_median") }

        /// `column` ("pearson" or "mean_l2") as a matrix, NaN where a pair is absent.
        func matrix(_ column: String) -> [[Double]] {
            labels.map { a in
                labels.map { b in row(a, b).flatMap { try? csv.double($0, column) } ?? .nan }
            }
        }
    }

    /// `[N, C, H, W]` images from `path`, checked to be images pspc writes.
    static func readImages(_ path: String) throws -> (values: [Double], shape: [Int]) {
        guard FileManager.default.fileExists(atPath: path) else {
            throw DataError.io(path: path, reason: "missing (the run has not written it)")
        }
        let array = try NPY.read(path: path)
        guard array.shape.count == 4, [1, 3].contains(array.shape[1]), array.shape[0] > 0, array.shape[2] > 0,
            array.shape[3] > 0
        else {
            throw DataError.corrupt(path: path, reason: "shape \(array.shape), expected [N, C, H, W] with C 1 or 3")
        }
        return (array.asDoubles(), array.shape)
    }

    /// Index of the time in `times` nearest to `t` in log t (how schedules and image grids pick a grid time).
    static func nearest(_ t: Double, in times: [Double]) -> Int { EDM.nearestIndex(of: t, in: times) }

    /// The file name of a variant's outputs: the label with spaces as `-` and `=` removed (docs/runs.md).
    static func slug(_ label: String) -> String {
        label.replacingOccurrences(of: " ", with: "-").replacingOccurrences(of: "=", with: "")
    }
}
