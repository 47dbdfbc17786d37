import Foundation
import PSPCData

extension Report {
    /// Gradient heatmaps of a few output pixels at a few t (each map scaled to its own maximum, the output
    /// pixel outlined in red), and the locality curves and table.
    static func heatmapSection(_ run: RunDirectory, name: String, id: String) throws -> Section {
        let locality = try Locality.read(run)
        // Enlarged 4 times in the file (room for the red outline), the rest by the browser: small PNGs.
        let selection = try RunFigures.heatmaps(run, scale: 4)
        let config = try run.config()
        let title = "Gradient heatmaps: \(name)"
        var html = ""
        html += meta([
            "\(selection.size.h)x\(selection.size.w) maps", "\(compact(config["samples"])) samples per t",
            "network: \(compact(config["network"]))",
        ])
        html += "<h3>Sensitivity maps</h3>\n"
        html +=
            "<p class=\"meta\">Sum over channels of |dD(z, t)[pixel] / dz|, averaged over samples; each map divided "
            + "by its own maximum (viridis: dark 0, yellow 1). The output pixel is outlined in red.</p>\n"
        html += "<div class=\"scroll\"><table class=\"images tiles\">\n<thead><tr><th></th>"
        html += selection.times.map { "<th>t = \(escape(display($0)))</th>" }.joined() + "</tr></thead>\n<tbody>\n"
        for (pixel, tiles) in zip(selection.pixels, selection.tiles) {
            let label = "(\(pixel.y), \(pixel.x)) \(pixel.name)"
            html += "<tr><th scope=\"row\">\(escape(label))</th>"
            for (tile, t) in zip(tiles, selection.times) {
                let zoom = max(1, 112 / max(tile.width, tile.height))
                html += "<td>"
                html += image(
                    try tile.png(), width: tile.width * zoom, height: tile.height * zoom, alt: "\(label), t = \(t)")
                html += "</td>"
            }
            html += "</tr>\n"
        }
        html += "</tbody></table></div>\n"

        html += "<h3>Locality</h3>\n"
        html += figures([figure(RunFigures.localityPlot(locality))])
        html += table(
            source: locality.csv.path, header: ["t", "side 50 %", "side 75 %", "side 95 %"],
            rows: locality.rows.map { row in
                [.number(row.t, row: row.csvRow, column: "t")]
                    + zip(row.sides, Locality.columns).map { .number($0, row: row.csvRow, column: $1) }
            })
        return Section(id: id, title: title, html: html)
    }
}
