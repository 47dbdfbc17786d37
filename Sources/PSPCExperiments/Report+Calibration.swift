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
        return Section(id: id, title: title, html: html)
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
