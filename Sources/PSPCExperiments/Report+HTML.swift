import Foundation

extension Report {
    /// A table cell: text (labels) or a number from a results csv, with the row and column it came from.
    enum Cell {
        case text(String)
        case number(Double, row: Int, column: String, best: Bool = false)
        case missing
    }

    static func escape(_ text: String) -> String { SVG.escape(text) }

    /// The rounded text a table shows for `value`: 4 significant digits.
    public static func display(_ value: Double) -> String { SVG.shortNumber(value, digits: 4) }

    /// A table of numbers read from the csv at `source`. The table names its csv (`data-csv`); each number
    /// cell names its data row (0-based, `data-row`) and column (`data-column`) and carries the exact value
    /// (`data-value`, `RunNumber.text`) beside the rounded display.
    static func table(source: String, header: [String], rows: [[Cell]], caption: String? = nil) -> String {
        var out = "<div class=\"scroll\"><table class=\"num\" data-csv=\"\(escape(source))\">\n"
        if let caption { out += "<caption>\(caption)</caption>\n" }
        out += "<thead><tr>" + header.map { "<th>\(escape($0))</th>" }.joined() + "</tr></thead>\n<tbody>\n"
        for row in rows {
            out += "<tr>"
            for (n, cell) in row.enumerated() {
                switch cell {
                case .text(let text):
                    out += n == 0 ? "<th scope=\"row\">\(escape(text))</th>" : "<td class=\"text\">\(escape(text))</td>"
                case .number(let value, let csvRow, let column, let best):
                    out +=
                        "<td\(best ? " class=\"best\"" : "") data-row=\"\(csvRow)\" data-column=\"\(escape(column))\" "
                        + "data-value=\"\(RunNumber.text(value))\">\(escape(display(value)))</td>"
                case .missing:
                    out += "<td class=\"missing\">—</td>"
                }
            }
            out += "</tr>\n"
        }
        return out + "</tbody></table></div>\n"
    }

    /// An inline SVG figure with an optional caption, shown at its own size (smaller only on narrow pages, so
    /// its text never grows past the page's).
    static func figure(_ figure: any SVGFigure, caption: String? = nil) -> String {
        var out = "<figure style=\"width: \(Int(figure.width.rounded(.up)))px\">\n" + figure.render()
        if let caption { out += "<figcaption>\(caption)</figcaption>\n" }
        return out + "</figure>\n"
    }

    /// Figures side by side where the page is wide enough.
    static func figures(_ items: [String]) -> String {
        items.isEmpty ? "" : "<div class=\"figs\">\n" + items.joined() + "</div>\n"
    }

    /// An `<img>` holding `png` as a data: URL, drawn at `width` x `height` CSS pixels.
    static func image(_ png: [UInt8], width: Int, height: Int, alt: String) -> String {
        "<img src=\"data:image/png;base64,\(Data(png).base64EncodedString())\" width=\"\(width)\" "
            + "height=\"\(height)\" alt=\"\(escape(alt))\">"
    }

    /// Lines of facts under a section heading.
    static func meta(_ items: [String]) -> String {
        "<p class=\"meta\">" + items.filter { !$0.isEmpty }.map(escape).joined(separator: " · ") + "</p>\n"
    }

    static let css = """
        :root { --fg: #1f2328; --muted: #59636e; --line: #e4e7eb; --head: #f5f6f8; --best: #dcf3e3;
          --accent: #0072b2; }
        * { box-sizing: border-box; }
        html { background: #f3f4f6; }
        body { margin: 0; color: var(--fg);
          font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
        main { max-width: 1080px; margin: 0 auto; padding: 36px 40px 72px; background: #fff; min-height: 100vh;
          box-shadow: 0 0 0 1px var(--line); }
        h1 { font-size: 30px; margin: 0 0 2px; letter-spacing: -0.01em; }
        h2 { font-size: 22px; margin: 48px 0 6px; padding-top: 18px; border-top: 2px solid var(--line); }
        h2.first { margin-top: 24px; }
        h3 { font-size: 16.5px; margin: 28px 0 8px; }
        h4 { font-size: 14px; margin: 18px 0 6px; color: var(--muted); font-weight: 600; }
        p { margin: 6px 0 10px; max-width: 75ch; }
        a { color: var(--accent); text-decoration: none; }
        a:hover { text-decoration: underline; }
        .meta { color: var(--muted); font-size: 13.5px; }
        nav ol { margin: 10px 0 0; padding-left: 22px; columns: 2; font-size: 14px; }
        .figs { display: flex; flex-wrap: wrap; gap: 12px 20px; align-items: flex-start; margin: 12px 0; }
        figure { margin: 0; flex: 0 1 auto; max-width: 100%; min-width: 0; }
        figure svg { display: block; width: 100%; height: auto; }
        figcaption { font-size: 12.5px; color: var(--muted); margin-top: 4px; }
        .scroll { overflow-x: auto; margin: 8px 0 14px; }
        table { border-collapse: collapse; font-size: 13px; }
        caption { text-align: left; font-size: 12.5px; color: var(--muted); padding-bottom: 4px; }
        th, td { padding: 4px 9px; border-bottom: 1px solid var(--line); }
        thead th { background: var(--head); font-weight: 600; vertical-align: bottom; text-align: right;
          max-width: 110px; line-height: 1.25; }
        thead th:first-child { text-align: left; }
        table.num td { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
        table.num tbody th { text-align: left; font-weight: 500; white-space: nowrap; }
        table.num tbody tr:hover { background: #fafbfc; }
        td.best { background: var(--best); font-weight: 650; }
        td.missing { color: #aab; }
        td.text { text-align: left; }
        table.runs { font-size: 13px; width: 100%; table-layout: fixed; }
        table.runs td { overflow-wrap: anywhere; }
        table.runs thead th:nth-child(3), table.runs thead th:nth-child(4) { width: 29%; }
        table.runs thead th { text-align: left; max-width: none; }
        table.runs td:nth-child(2) { white-space: nowrap; }
        table.runs tr.facts td { border-bottom: none; padding-top: 8px; }
        table.runs tr.command td { padding-top: 0; padding-bottom: 8px; }
        code { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--head);
          padding: 1px 5px; border-radius: 4px; word-break: break-all; }
        .path { color: var(--muted); font-size: 12px; margin-left: 6px; }
        .warn { color: #b3261e; font-size: 12px; }
        table.images { border-collapse: separate; border-spacing: 0 2px; }
        table.images th { text-align: right; font-weight: 500; font-size: 12.5px; padding: 0 10px 0 0;
          border: none; white-space: nowrap; vertical-align: middle; background: none; max-width: none; }
        table.images td { padding: 0; border: none; }
        table.images thead th { text-align: center; color: var(--muted); padding: 0 0 4px; }
        table.images img { display: block; image-rendering: pixelated; }
        table.tiles td { padding: 0 4px 4px 0; }
        .labelled { display: flex; align-items: flex-start; gap: 10px; margin: 10px 0; }
        .labelled .labels { display: flex; flex-direction: column; font-size: 12.5px; }
        .labelled .labels div { display: flex; align-items: center; justify-content: flex-end; white-space: nowrap; }
        .labelled img { image-rendering: pixelated; display: block; }
        details { margin: 8px 0; }
        summary { cursor: pointer; color: var(--accent); font-size: 14px; }

        """
}
