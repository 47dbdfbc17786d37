import Foundation

extension Report {
    /// ratios.csv (when written): the paired ratios of `PairedRatios`. A summary per t (the network's error to
    /// x0 over the optimal denoiser's; the method closest to the network and its error over the optimal
    /// denoiser's) and, folded, every variant's ratio to the optimal denoiser with its interval.
    static func ratioTables(_ run: RunDirectory, variants: [String], network primary: String = "network") throws -> String {
        let path = run.file("ratios.csv")
        guard FileManager.default.fileExists(atPath: path) else { return "" }
        let csv = try CSV.read(path, header: PairedRatios.header.split(separator: ",").map(String.init))
        var index: [String: Int] = [:]
        var times: [(index: Int, row: Int)] = []
        for r in csv.rows.indices {
            let t = try csv.int(r, "t_index")
            let key = [String(t), try csv.string(r, "label"), try csv.string(r, "target"), try csv.string(r, "baseline_role")]
            index[key.joined(separator: "|")] = r
            if !times.contains(where: { $0.index == t }) { times.append((t, r)) }
        }
        func find(_ t: Int, _ label: String, _ target: String, _ role: String) -> Int? {
            index["\(t)|\(label)|\(target)|\(role)"]
        }
        func numbers(_ r: Int?) throws -> [Cell] {
            guard let r else { return [.missing, .missing, .missing] }
            return try ["ratio", "ci_low", "ci_high"].map { .number(try csv.double(r, $0), row: r, column: $0) }
        }
        let summary: [[Cell]] = try times.map { time in
            let tCell = Cell.number(try csv.double(time.row, "t"), row: time.row, column: "t")
            let network = try numbers(find(time.index, primary, "x0", "optimal"))
            // The closest method's row against the optimal denoiser, found from any row naming the closest.
            let closest = csv.rows.indices.first { r in
                (try? csv.int(r, "t_index")) == time.index && (try? csv.string(r, "target")) == "network"
                    && (try? csv.string(r, "baseline_role")) == "closest"
            }.flatMap { try? csv.string($0, "baseline") }
            guard let closest else { return [tCell] + network + [.missing] + (try numbers(nil)) }
            return [tCell] + network + [.text(closest)] + (try numbers(find(time.index, closest, "network", "optimal")))
        }
        var html = "<h3>Paired ratios</h3>\n"
        html += table(
            source: csv.path,
            header: [
                "t", "network / optimal (MSE to x0)", "low", "high", "closest to the network",
                "its MSE / optimal's (to the network)", "low", "high",
            ],
            rows: summary,
            caption: "Ratios of mean errors over the same queries, with 95 % paired bootstrap intervals (2000 "
                + "resamples of the queries, one for both methods). Below 1 in the second column: the network "
                + "beats the optimal empirical denoiser on these queries.")
        let others = variants.filter { $0 != "empirical" }
        let all: [[Cell]] = try times.map { time in
            var cells: [Cell] = [.number(try csv.double(time.row, "t"), row: time.row, column: "t")]
            for label in others {
                guard let r = find(time.index, label, "network", "optimal") else {
                    cells.append(.missing)
                    continue
                }
                let (ratio, low, high) = (try csv.double(r, "ratio"), try csv.double(r, "ci_low"), try csv.double(r, "ci_high"))
                cells.append(.text("\(display(ratio)) [\(display(low)), \(display(high))]"))
            }
            return cells
        }
        html += "<details><summary>Every variant's MSE to the network over the optimal denoiser's</summary>\n"
        html += table(
            source: csv.path, header: ["t"] + others, rows: all,
            caption: "ratio [95 % paired interval]; an interval below 1: significantly closer to the network than "
                + "the optimal empirical denoiser.")
        return html + "</details>\n"
    }
}
