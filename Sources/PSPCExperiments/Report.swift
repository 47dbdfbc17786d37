import Foundation
import PSPCData

/// One self-contained HTML page over run directories (docs/runs.md): plots inline as SVG, images as data: URLs,
/// CSS inline, no scripts and nothing fetched. Table cells carry the exact number of the results file they
/// show (`data-value`, `RunNumber.text` of the value read) next to a 4-digit display, and name their source
/// row, so a reader or a test can trace every number back.
public enum Report {
    /// Writes `directory/index.html` for `runs` and returns its path. Sections come in a fixed order by kind
    /// (sweeps, calibration, heatmaps, sample comparisons); sweep image grids are drawn at the grid times
    /// nearest to `imageTimes`.
    public static func write(
        runs: [RunDirectory], to directory: String, imageTimes: [Double] = [0.3, 1.09, 3.26, 10]
    ) throws -> String {
        let html = try page(runs: runs, imageTimes: imageTimes, generated: Date())
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = (directory as NSString).appendingPathComponent("index.html")
        try FileIO.writeAtomically(Array(html.utf8), to: path)
        return path
    }

    /// The kinds a report has sections for, in section order.
    static let kindOrder = ["sweep-forward", "sweep-reverse", "calibration", "heatmap", "sample-compare"]

    /// A report section: its anchor, heading and the HTML under the heading.
    struct Section {
        var id: String
        var title: String
        var html: String
    }

    static func page(runs: [RunDirectory], imageTimes: [Double], generated: Date) throws -> String {
        let names = displayNames(runs)
        var entries: [(run: RunDirectory, name: String, kind: String, config: JSONValue)] = []
        for (run, name) in zip(runs, names) {
            let config = try run.config()
            entries.append((run, name, try run.kind(), config))
        }
        let ordered = entries.enumerated().sorted { a, b in
            let ra = kindOrder.firstIndex(of: a.element.kind) ?? kindOrder.count
            let rb = kindOrder.firstIndex(of: b.element.kind) ?? kindOrder.count
            return ra == rb ? a.offset < b.offset : ra < rb
        }.map(\.element)

        var sections: [Section] = []
        for (n, entry) in ordered.enumerated() {
            let id = "run-\(n + 1)"
            switch entry.kind {
            case "sweep-forward", "sweep-reverse":
                sections.append(try sweepSection(entry.run, name: entry.name, id: id, imageTimes: imageTimes))
            case "calibration":
                sections.append(try calibrationSection(entry.run, name: entry.name, id: id))
            case "heatmap":
                sections.append(try heatmapSection(entry.run, name: entry.name, id: id))
            case "sample-compare":
                sections.append(try samplesSection(entry.run, name: entry.name, id: id))
            default:
                continue
            }
        }

        let stamp = ISO8601DateFormatter().string(from: generated)
        var body = "<header>\n<h1>pspc report</h1>\n"
        body +=
            "<p class=\"meta\">Generated \(escape(stamp)) from \(runs.count) run\(runs.count == 1 ? "" : "s").</p>\n"
        if !sections.isEmpty {
            body += "<nav><ol>\n"
            for section in sections { body += "<li><a href=\"#\(section.id)\">\(escape(section.title))</a></li>\n" }
            body += "</ol></nav>\n"
        }
        body += "</header>\n"
        body += runsTable(ordered.map { ($0.run, $0.name, $0.kind, $0.config) })
        for section in sections {
            body += "<section id=\"\(section.id)\">\n<h2>\(escape(section.title))</h2>\n\(section.html)</section>\n"
        }
        return """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>pspc report</title>
            <style>
            \(css)</style>
            </head>
            <body>
            <main>
            \(body)</main>
            </body>
            </html>

            """
    }

    /// What each run is: its kind, command, dataset, network, queries and time grid (from config.json).
    static func runsTable(_ runs: [(RunDirectory, String, String, JSONValue)]) -> String {
        var out = "<h2 class=\"first\">Runs</h2>\n<div class=\"scroll\"><table class=\"runs\">\n"
        out += "<thead><tr><th>run</th><th>kind</th><th>dataset</th><th>network</th><th>queries</th>"
        out += "<th>grid</th></tr></thead>\n<tbody>\n"
        for (run, name, kind, config) in runs {
            let state = run.isComplete ? "" : " <span class=\"warn\">incomplete (no done file)</span>"
            out += "<tr class=\"facts\"><td><b>\(escape(name))</b>\(state)</td><td>\(escape(kind))</td>"
            out += "<td>\(escape(compact(config["dataset"])))</td><td>\(escape(compact(config["network"])))</td>"
            out +=
                "<td>\(escape(queriesText(kind: kind, config)))</td><td>\(escape(gridText(config["grid"])))</td></tr>\n"
            out += "<tr class=\"command\"><td colspan=\"6\"><code>\(escape(compact(config["command"])))</code>"
            out += " <span class=\"path\">\(escape(run.path))</span></td></tr>\n"
        }
        return out + "</tbody></table></div>\n"
    }

    static func queriesText(kind: String, _ config: JSONValue) -> String {
        func value(_ key: String) -> String { compact(config[key]) }
        switch kind {
        case "sweep-forward": return "\(value("queries")) per t (from \(value("from")))"
        case "sweep-reverse": return "\(value("trajectories")) trajectories, \(value("steps")) steps"
        case "heatmap": return "\(value("samples")) samples per t"
        case "sample-compare": return "\(value("count")) samples, \(value("steps")) \(value("solver")) steps"
        case "calibration": return "on \(value("on"))"
        default: return "—"
        }
    }

    static func gridText(_ grid: JSONValue?) -> String {
        guard let values = grid?.array?.compactMap(\.double), let first = values.first, let last = values.last else {
            return "—"
        }
        return "\(values.count) t, \(SVG.shortNumber(first)) … \(SVG.shortNumber(last))"
    }

    /// A config value as one short line: strings as they are, objects as `key: value` pairs.
    static func compact(_ value: JSONValue?) -> String {
        guard let value else { return "—" }
        switch value {
        case .null: return "—"
        case .string(let s): return s
        case .bool(let b): return b ? "yes" : "no"
        case .int(let i): return String(i)
        case .number(let d): return SVG.shortNumber(d)
        case .array(let items):
            let shown = items.prefix(8).map { compact($0) }.joined(separator: ", ")
            return "[" + shown + (items.count > 8 ? ", … (\(items.count))" : "") + "]"
        case .object(let pairs):
            return pairs.map { "\($0.0): \(compact($0.1))" }.joined(separator: ", ")
        }
    }

    /// Names that tell the runs apart: paths relative to their common parent.
    static func displayNames(_ runs: [RunDirectory]) -> [String] {
        let paths = runs.map { ($0.path as NSString).standardizingPath }
        let components = paths.map { $0.split(separator: "/").map(String.init) }
        guard runs.count > 1, var common = components.first?.dropLast() else {
            return paths.map { ($0 as NSString).lastPathComponent }
        }
        for path in components.dropFirst() {
            var n = 0
            while n < common.count, n < path.count - 1, common[common.startIndex + n] == path[n] { n += 1 }
            common = common.prefix(n)
        }
        return components.map { $0.dropFirst(common.count).joined(separator: "/") }
    }
}
