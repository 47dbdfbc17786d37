import Foundation
import PSPCData

extension Report {
    /// Queries shown per image row.
    static let imageColumns = 8

    /// A forward or reverse sweep: error plots (paper Fig. 2 and 4), the MSE table with the best non-network
    /// variant per t highlighted, and image grids at the grid times nearest to `imageTimes`.
    static func sweepSection(_ run: RunDirectory, name: String, id: String, imageTimes: [Double]) throws -> Section {
        let sweep = try Sweep.read(run)
        let process = try RunFigures.processName(run)
        let title = "\(process.prefix(1).uppercased() + process.dropFirst()) sweep: \(name)"
        var html = ""
        var facts = ["\(sweep.times.count) grid times", "\(sweep.labels.count) variants"]
        if let throughput = try? RunDirectory.readJSON(run.file("results.json"))["throughput"],
            let rate = throughput["queries_x_methods_per_second"]?.double, let seconds = throughput["seconds"]?.double
        {
            facts.append("\(SVG.shortNumber(rate)) queries x methods per second over \(SVG.shortNumber(seconds)) s")
        }
        html += meta(facts)

        let variants = sweep.labels.filter { label in sweep.rows.first { $0.label == label }?.method != "network" }
        let networks = sweep.labels.filter { label in sweep.rows.first { $0.label == label }?.method == "network" }
        let primary = networks.first ?? "network"
        html += networks.count > 1 ? "<h3>MSE to \(escape(primary)) (the first of \(networks.count) networks)</h3>\n" : "<h3>MSE to the network</h3>\n"
        html += figures([
            figure(
                RunFigures.mseToNetwork(sweep, process: process, width: 960, height: 420),
                caption:
                    "Mean over queries and pixels of (D(z, t) - D_network(z, t))^2; zeros are not drawn (log axis).")
        ])
        html += table(
            source: sweep.path, header: ["t"] + variants,
            rows: mseRows(sweep, variants: variants, column: "mse_to_network", markBest: true),
            caption: "The best non-network variant of each t is marked.")
        html += try ratioTables(run, variants: variants, network: primary)
        html += try networkTables(run, networks: networks)

        var plots = [figure(RunFigures.mseToX0(sweep, process: process))]
        if let plot = RunFigures.patchSizeError(
            sweep.squareRows.map { ($0.t, $0.param, $0.mseToNetwork) }, subtitle: "\(process), pspc-square")
        {
            plots.append(figure(plot, caption: "MSE to the network against the pspc-square size (paper Fig. 4)."))
        }
        html += plots.count > 1 ? "<h3>MSE to x0 and patch size</h3>\n" : "<h3>MSE to x0</h3>\n"
        html += figures(plots)
        html += "<details><summary>MSE to x0, every variant</summary>\n"
        html += table(
            source: sweep.path, header: ["t"] + sweep.labels,
            rows: mseRows(sweep, variants: sweep.labels, column: "mse_to_x0", markBest: false))
        html += "</details>\n"
        html += try imageGrids(sweep, times: imageTimes)
        return Section(id: id, title: title, html: html)
    }

    /// Rows of t by variant for `column` ("mse_to_network" or "mse_to_x0").
    static func mseRows(_ sweep: Sweep, variants: [String], column: String, markBest: Bool) -> [[Cell]] {
        sweep.times.map { time in
            let rows = variants.map { sweep.row(tIndex: time.index, label: $0) }
            let value = { (row: SweepRow) in column == "mse_to_network" ? row.mseToNetwork : row.mseToX0 }
            let best = rows.compactMap { $0.map(value) }.filter(\.isFinite).min()
            var cells: [Cell] = []
            if let first = sweep.rows.first(where: { $0.tIndex == time.index }) {
                cells.append(.number(first.t, row: first.csvRow, column: "t"))
            }
            for row in rows {
                guard let row else {
                    cells.append(.missing)
                    continue
                }
                cells.append(
                    .number(value(row), row: row.csvRow, column: column, best: markBest && value(row) == best))
            }
            return cells
        }
    }

    /// For each requested t, the nearest grid t's queries (rows: x0, z, the network, every variant; columns:
    /// the first queries).
    static func imageGrids(_ sweep: Sweep, times requested: [Double]) throws -> String {
        let gridTimes = sweep.times.map(\.t)
        var chosen: [(index: Int, t: Double)] = []
        for t in requested {
            let time = sweep.times[nearest(t, in: gridTimes)]
            if !chosen.contains(where: { $0.index == time.index }) { chosen.append(time) }
        }
        guard !chosen.isEmpty else { return "" }
        let run = sweep.run
        let target = try RunFigures.processName(run).hasPrefix("reverse") ? "final sample" : "x0"
        var html = "<h3>Denoised images</h3>\n"
        for time in chosen {
            let folder = String(format: "t%02d", time.index)
            // Independent draws: each t has its own clean images.
            let own = run.file("x0", folder + ".npy")
            let x0 = try readImages(FileManager.default.fileExists(atPath: own) ? own : run.file("x0.npy"))
            if time.index == chosen[0].index {
                html +=
                    "<p class=\"meta\">First \(min(imageColumns, x0.shape[0])) queries; z is clipped to [-1, 1] for "
                    + "display.</p>\n"
            }
            var rows: [(String, [Double], [Int])] = [(target, x0.values, x0.shape)]
            let z = try readImages(run.file("z", folder + ".npy"))
            rows.append(("z", z.values, z.shape))
            for label in sweep.labels {
                let output = try readImages(run.file("outputs", folder, slug(label) + ".npy"))
                rows.append((label, output.values, output.shape))
            }
            html += "<h4>t = \(escape(display(time.t))) (grid index \(time.index))</h4>\n"
            html += try imageRows(rows)
        }
        return html
    }

    /// A table of labelled image strips, one PNG per row at the images' own resolution, shown enlarged by a
    /// whole factor (about 64 pixels per image) with pixelated scaling: small files, sharp pixels.
    static func imageRows(_ rows: [(label: String, values: [Double], shape: [Int])]) throws -> String {
        var out = "<div class=\"scroll\"><table class=\"images\"><tbody>\n"
        for row in rows {
            let count = min(imageColumns, row.shape[0])
            let scale = max(1, 64 / max(row.shape[2], row.shape[3]))
            let strip = Raster.row(
                (0..<count).map { Raster.image(row.values, shape: row.shape, index: $0, scale: 1) }, gap: 1)
            out += "<tr><th scope=\"row\">\(escape(row.label))</th><td>"
            out += image(try strip.png(), width: strip.width * scale, height: strip.height * scale, alt: row.label)
            out += "</td></tr>\n"
        }
        return out + "</tbody></table></div>\n"
    }
}
