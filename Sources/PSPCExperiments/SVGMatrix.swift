import Foundation

/// A matrix of numbers drawn as colour-scaled cells with each number written in its cell, rows labelled on the
/// left and columns on top: the similarity matrices of a sample comparison. Missing values (NaN) are grey.
public struct SVGMatrix: SVGFigure {
    public var title: String
    public var rowLabels: [String]
    public var columnLabels: [String]
    /// `values[row][column]`; rows shorter than `columnLabels` are padded with missing values.
    public var values: [[Double]]
    /// Whether small values get the dark end of the scale (distances), instead of large ones (correlations).
    public var darkIsLow: Bool
    /// Significant digits written in the cells.
    public var digits: Int
    public var subtitle: String?
    /// Whether the diagonal sets the colour range too; a similarity matrix's trivial diagonal (1, or 0 apart)
    /// would squash the range of the other cells, so it is drawn clamped instead.
    public var diagonalInScale: Bool

    public init(
        title: String, rowLabels: [String], columnLabels: [String], values: [[Double]], darkIsLow: Bool = false,
        digits: Int = 3, subtitle: String? = nil, diagonalInScale: Bool = true
    ) {
        self.title = title
        self.rowLabels = rowLabels
        self.columnLabels = columnLabels
        self.values = values
        self.darkIsLow = darkIsLow
        self.digits = digits
        self.subtitle = subtitle
        self.diagonalInScale = diagonalInScale
    }

    private static let fontSize = 12.0
    private static let cellHeight = 36.0

    private var cellWidth: Double {
        let widest = values.flatMap { $0 }.map { SVG.textWidth(SVG.shortNumber($0, digits: digits), size: 12) }.max()
        return max(60, (widest ?? 0) + 16)
    }

    private var labelWidth: Double {
        (rowLabels.map { SVG.textWidth($0, size: SVGMatrix.fontSize) }.max() ?? 0) + 14
    }

    /// Room above the cells for column labels written at 45 degrees.
    private var headerHeight: Double {
        let widest = columnLabels.map { SVG.textWidth($0, size: SVGMatrix.fontSize) }.max() ?? 0
        return (subtitle == nil ? 34 : 48) + widest * 0.72 + 10
    }

    public var width: Double {
        let cells = 12 + labelWidth + Double(columnLabels.count) * cellWidth
        let widest = columnLabels.map { SVG.textWidth($0, size: SVGMatrix.fontSize) }.max() ?? 0
        // The last column's slanted label reaches right of the cells.
        return max(cells + widest * 0.72 + 8, 12 + SVG.textWidth(title, size: 14) + 12)
    }

    public var height: Double { headerHeight + Double(rowLabels.count) * SVGMatrix.cellHeight + 14 }

    public func body() -> String {
        let c = SVG.coordinate
        let left = 12 + labelWidth, top = headerHeight, w = cellWidth, h = SVGMatrix.cellHeight
        let finite = values.enumerated().flatMap { row, items in
            items.enumerated().filter { diagonalInScale || $0.offset != row }.map(\.element)
        }.filter(\.isFinite)
        let low = finite.min() ?? 0, high = finite.max() ?? 1
        var out = SVG.text(title, x: 12, y: 20, size: 14, weight: "600", fill: "#111111")
        if let subtitle { out += SVG.text(subtitle, x: 12, y: 37, size: 11, fill: "#555555") }
        out += "<g font-size=\"\(c(SVGMatrix.fontSize))\">\n"
        for (column, label) in columnLabels.enumerated() {
            let x = left + (Double(column) + 0.5) * w
            out += SVG.text(label, x: x, y: top - 8, fill: "#222222", rotate: -45)
        }
        for (row, label) in rowLabels.enumerated() {
            let y = top + Double(row) * h
            out += SVG.text(label, x: left - 8, y: y + h / 2 + 4, anchor: "end", fill: "#222222")
            for column in columnLabels.indices {
                let value = row < values.count && column < values[row].count ? values[row][column] : .nan
                let x = left + Double(column) * w
                var fraction = high > low ? (value - low) / (high - low) : 1
                if darkIsLow { fraction = 1 - fraction }
                let (fill, ink) =
                    value.isFinite ? SVGMatrix.color(fraction) : ("#eeeeee", "#888888")
                out +=
                    "<rect x=\"\(c(x))\" y=\"\(c(y))\" width=\"\(c(w))\" height=\"\(c(h))\" fill=\"\(fill)\" "
                    + "stroke=\"#ffffff\" stroke-width=\"1\"><title>\(SVG.escape("\(label) / \(columnLabels[column])"))"
                    + "</title></rect>\n"
                let text = value.isFinite ? SVG.shortNumber(value, digits: digits) : "–"
                out += SVG.text(text, x: x + w / 2, y: y + h / 2 + 4, anchor: "middle", fill: ink)
            }
        }
        return out + "</g>\n"
    }

    /// A blue scale from near-white (0) to dark (1), and the ink that reads on it.
    static func color(_ fraction: Double) -> (fill: String, ink: String) {
        let stops: [(Double, Double, Double)] = [
            (247, 251, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107),
        ]
        let f = min(max(fraction.isFinite ? fraction : 0, 0), 1) * Double(stops.count - 1)
        let i = min(Int(f), stops.count - 2)
        let u = f - Double(i)
        let a = stops[i], b = stops[i + 1]
        let rgb = [a.0 + (b.0 - a.0) * u, a.1 + (b.1 - a.1) * u, a.2 + (b.2 - a.2) * u]
        let luminance = (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255
        let hex = rgb.map { String(format: "%02x", Int($0.rounded())) }.joined()
        return ("#" + hex, luminance < 0.5 ? "#ffffff" : "#111111")
    }
}
