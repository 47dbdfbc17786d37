import Foundation

extension Report {
    /// networks.csv (a study of several networks): per t and network, how far the nearest other network is,
    /// beside how far the optimal denoiser and the closest other method are, each MSE with its interval. The
    /// network-vs-network MSE is the scale a method's closeness to a network reads against.
    static func networkTables(_ run: RunDirectory, networks: [String]) throws -> String {
        let path = run.file("networks.csv")
        guard FileManager.default.fileExists(atPath: path), networks.count > 1 else { return "" }
        let csv = try CSV.read(path, header: NetworkComparison.header.split(separator: ",").map(String.init))
        var byTime: [Int: [(label: String, network: String, row: Int)]] = [:]
        var times: [(index: Int, row: Int)] = []
        for r in csv.rows.indices {
            let t = try csv.int(r, "t_index")
            byTime[t, default: []].append((try csv.string(r, "label"), try csv.string(r, "network"), r))
            if !times.contains(where: { $0.index == t }) { times.append((t, r)) }
        }
        func numbers(_ r: Int?) throws -> [Cell] {
            guard let r else { return [.missing, .missing, .missing] }
            return try ["mse", "ci_low", "ci_high"].map { .number(try csv.double(r, $0), row: r, column: $0) }
        }
        var rows: [[Cell]] = []
        for time in times {
            let entries = byTime[time.index] ?? []
            for network in networks {
                let against = entries.filter { $0.network == network }
                func least(_ keep: (String) -> Bool) throws -> (label: String, row: Int)? {
                    let candidates = try against.filter { keep($0.label) }.map { ($0.label, $0.row, try csv.double($0.row, "mse")) }
                    return candidates.min { $0.2 < $1.2 }.map { ($0.0, $0.1) }
                }
                let other = try least { networks.contains($0) }
                let optimal = against.first { $0.label == "empirical" }
                let closest = try least { !networks.contains($0) && $0 != "empirical" }
                var cells: [Cell] = [.number(try csv.double(time.row, "t"), row: time.row, column: "t"), .text(network)]
                cells += [other.map { .text($0.label) } ?? .missing] + (try numbers(other?.row))
                cells += try numbers(optimal?.row)
                cells += [closest.map { .text($0.label) } ?? .missing] + (try numbers(closest?.row))
                rows.append(cells)
            }
        }
        var html = "<h3>Networks against each other</h3>\n"
        html += table(
            source: csv.path,
            header: [
                "t", "network", "nearest other network", "MSE", "low", "high", "optimal denoiser's MSE", "low", "high",
                "closest other method", "MSE", "low", "high",
            ],
            rows: rows,
            caption: "MSE to each network (rows) of the nearest other network, of the optimal empirical denoiser "
                + "and of the closest method other than those, with 95 % bootstrap intervals over queries. A method "
                + "no farther from a network than another network is: as close as architectures agree.")
        return html
    }
}
