import Foundation
import PSPCData

extension Report {
    /// A sample comparison: samples.png with a label per row (one row per method), the similarity matrices and
    /// their tables.
    static func samplesSection(_ run: RunDirectory, name: String, id: String) throws -> Section {
        let similarity = try Similarity.read(run)
        let config = try run.config()
        let title = "Sample comparison: \(name)"
        var html = ""
        html += meta([
            "\(compact(config["count"])) samples per method",
            "\(compact(config["steps"])) \(compact(config["solver"])) steps",
            "seed \(compact(config["seed"]))", "shared initial noise",
        ])

        let pngPath = run.file("samples.png")
        guard FileManager.default.fileExists(atPath: pngPath) else {
            throw DataError.io(path: pngPath, reason: "missing (the run has not written it)")
        }
        let png = try FileIO.read(pngPath)
        let decoded = try PNG.decode(png, name: pngPath)
        let methods = config["methods"]?.array?.compactMap(\.string) ?? similarity.labels
        // Integer scaling keeps pixels square and the labels level with their rows.
        let scale = max(1, min(4, 760 / max(decoded.width, 1)))
        let (width, height) = (decoded.width * scale, decoded.height * scale)
        html += "<h3>Samples</h3>\n<div class=\"scroll\"><div class=\"labelled\">\n<div class=\"labels\">"
        for method in methods {
            let rowHeight = SVG.coordinate(Double(height) / Double(max(methods.count, 1)))
            html += "<div style=\"height: \(rowHeight)px\">\(escape(method))</div>"
        }
        html += "</div>\n" + image(png, width: width, height: height, alt: "samples, one row per method") + "\n"
        html += "</div></div>\n"

        html += "<h3>Similarity</h3>\n"
        html += figures([figure(RunFigures.similarity(similarity))])
        if similarity.hasIntervals {
            let columns = [
                "pearson_median", "pearson_median_ci_low", "pearson_median_ci_high", "mean_l2", "mean_l2_ci_low",
                "mean_l2_ci_high",
            ]
            var rows: [[Cell]] = []
            for (i, a) in similarity.labels.enumerated() {
                for b in similarity.labels[(i + 1)...] {
                    guard let row = similarity.row(a, b) else { continue }
                    rows.append(
                        [.text(a), .text(b)]
                            + columns.map { column in
                                (try? similarity.csv.double(row, column)).map { .number($0, row: row, column: column) }
                                    ?? .missing
                            })
                }
            }
            html += "<h4>Median Pearson correlation over samples (Kamb &amp; Ganguli's measure) and mean L2</h4>\n"
            html += "<p class=\"meta\">Each sample is one seed of shared initial noise; 95 % bootstrap intervals "
                + "over samples.</p>\n"
            html += table(
                source: similarity.csv.path,
                header: ["method a", "method b", "median Pearson", "low", "high", "mean L2", "low", "high"], rows: rows)
        }
        for (column, caption) in [("pearson", "Pearson correlation"), ("mean_l2", "Mean L2 distance")] {
            let rows: [[Cell]] = similarity.labels.map { a in
                [.text(a)]
                    + similarity.labels.map { b in
                        guard let row = similarity.row(a, b), let value = try? similarity.csv.double(row, column) else {
                            return .missing
                        }
                        return .number(value, row: row, column: column)
                    }
            }
            html += "<h4>\(escape(caption))</h4>\n"
            html += table(source: similarity.csv.path, header: ["method_a \\ method_b"] + similarity.labels, rows: rows)
        }
        return Section(id: id, title: title, html: html)
    }
}
