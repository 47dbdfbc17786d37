import Foundation
import PSPCData

extension Report {
    /// A calibration: the schedules against the paper's CIFAR-10 ones, the patch-size error curves, and per t
    /// the best candidate of each method with its MSE (best.csv).
    static func calibrationSection(_ run: RunDirectory, name: String, id: String) throws -> Section {
        let calibration = try Calibration.read(run)
        let config = try run.config()
        let title = "Calibration: \(name)"
        var html = ""
        let sources = config["runs"]?.array?.compactMap(\.string).map { ($0 as NSString).lastPathComponent } ?? []
        html += meta([
            "on \(compact(config["on"])) sweeps", sources.isEmpty ? "" : "from " + sources.joined(separator: ", "),
        ])
        var plots: [String] = []
        if let schedule = RunFigures.schedule(calibration) {
            plots.append(figure(schedule, caption: "Grey dashes: the paper's CIFAR-10 schedule (32x32 images)."))
        }
        let square = calibration.candidateRows.filter { $0.method == "pspc-square" }
        if let plot = RunFigures.patchSizeError(
            square.map { ($0.t, $0.param, $0.mseToNetwork) }, subtitle: "calibration")
        {
            plots.append(figure(plot))
        }
        html += figures(plots)

        var methods: [String] = []
        for row in calibration.bestRows where !methods.contains(row.method) { methods.append(row.method) }
        var times: [(index: Int, t: Double, row: Int)] = []
        for row in calibration.bestRows where !times.contains(where: { $0.index == row.tIndex }) {
            times.append((row.tIndex, row.t, row.csvRow))
        }
        let header =
            ["t"]
            + methods.flatMap { method in [bestParameterName(method), "MSE (\(method))"] }
        let rows: [[Cell]] = times.map { time in
            var cells: [Cell] = [.number(time.t, row: time.row, column: "t")]
            for method in methods {
                guard let best = calibration.bestRows.first(where: { $0.tIndex == time.index && $0.method == method })
                else {
                    cells += [.missing, .missing]
                    continue
                }
                if let value = Double(best.param) {
                    cells.append(.number(value, row: best.csvRow, column: "best_param"))
                } else {
                    cells.append(.text(best.param))
                }
                cells.append(.number(best.mseToNetwork, row: best.csvRow, column: "mse_to_network"))
            }
            return cells
        }
        html += "<h3>Best candidate per t</h3>\n"
        html += table(source: calibration.best.path, header: header, rows: rows)
        html += try winsTable(run, calibration: calibration, methods: methods, times: times)
        html += try heldOutTable(run)
        return Section(id: id, title: title, html: html)
    }

    /// wins.csv (when written): per t and method, how often the chosen candidate is the minimiser over bootstrap
    /// resamples of the queries.
    static func winsTable(
        _ run: RunDirectory, calibration: Calibration, methods: [String], times: [(index: Int, t: Double, row: Int)]
    ) throws -> String {
        let path = run.file("wins.csv")
        guard FileManager.default.fileExists(atPath: path) else { return "" }
        let wins = try CSV.read(path, header: ["t_index", "t", "method", "param", "mse_to_network", "win_fraction"])
        var index: [String: Int] = [:]
        for r in wins.rows.indices {
            index["\(try wins.int(r, "t_index"))|\(try wins.string(r, "method"))|\(try wins.string(r, "param"))"] = r
        }
        let rows: [[Cell]] = try times.map { time in
            // The wins.csv row of each method's chosen candidate at this t.
            let found: [Int?] = methods.map { method in
                calibration.bestRows.first { $0.tIndex == time.index && $0.method == method }
                    .flatMap { index["\(time.index)|\(method)|\($0.param)"] }
            }
            let tCell: Cell = try found.compactMap { $0 }.first.map { .number(try wins.double($0, "t"), row: $0, column: "t") }
                ?? .text(RunNumber.text(time.t))
            return try [tCell] + found.map { r in
                try r.map { .number(try wins.double($0, "win_fraction"), row: $0, column: "win_fraction") } ?? .missing
            }
        }
        return "<h3>How sure each choice is</h3>\n"
            + table(
                source: wins.path, header: ["t"] + methods.map { "wins (\($0))" }, rows: rows,
                caption: "The fraction of 2000 bootstrap resamples of the queries on which the chosen candidate is the "
                    + "minimiser (1: every resample agrees).")
    }

    /// held-out.csv (with --held-out): each choice judged on other queries, beside the held-out minimiser.
    static func heldOutTable(_ run: RunDirectory) throws -> String {
        let path = run.file("held-out.csv")
        guard FileManager.default.fileExists(atPath: path) else { return "" }
        let columns = [
            "t_index", "t", "method", "chosen_param", "mse_in_sample", "mse_held_out", "held_out_best_param",
            "mse_held_out_best", "ratio_to_held_out_best",
        ]
        let csv = try CSV.read(path, header: columns)
        let rows: [[Cell]] = try csv.rows.indices.map { r in
            [
                .number(try csv.double(r, "t"), row: r, column: "t"), .text(try csv.string(r, "method")),
                .text(try csv.string(r, "chosen_param")), .number(try csv.double(r, "mse_in_sample"), row: r, column: "mse_in_sample"),
                .number(try csv.double(r, "mse_held_out"), row: r, column: "mse_held_out"),
                .text(try csv.string(r, "held_out_best_param")),
                .number(try csv.double(r, "ratio_to_held_out_best"), row: r, column: "ratio_to_held_out_best"),
            ]
        }
        return "<h3>Held-out check</h3>\n"
            + table(
                source: csv.path,
                header: ["t", "method", "chosen", "MSE in-sample", "MSE held-out", "held-out best", "ratio to held-out best"],
                rows: rows,
                caption: "The choices made on the calibration sweeps, judged on sweeps of other queries.")
    }

    static func bestParameterName(_ method: String) -> String {
        switch method {
        case "pspc-square": return "best s"
        case "pspc-flex": return "best lambda"
        case "ls", "els": return "best P (\(method))"
        default: return "best (\(method))"
        }
    }
}
