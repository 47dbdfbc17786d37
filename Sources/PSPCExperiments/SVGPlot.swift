import Foundation

/// A line (or step) plot of several series on linear or log axes, with its legend outside to the right so it
/// never covers data. Points an axis cannot show (NaN, infinite, or not positive on a log axis) are left out
/// and break the line there, instead of producing a broken path.
public struct SVGPlot: SVGFigure {
    /// One curve: points (x[i], y[i]) drawn in order of x.
    public struct Series: Sendable {
        public enum Style: Sendable {
            /// Straight segments between points.
            case lines
            /// Each value held until half-way (in axis space) to the next point: a schedule looked up at the
            /// nearest grid time.
            case steps
        }

        public var label: String
        public var x: [Double]
        public var y: [Double]
        public var style: Style
        public var markers: Bool
        /// Colour and dash pattern instead of the palette's (e.g. grey dashes for a reference curve).
        public var color: String?
        public var dash: String?
        /// An uncertainty band around the curve, drawn shaded in its colour: low and high per point (as many as
        /// x; NaN where a point has none, which breaks the band there).
        public var band: (low: [Double], high: [Double])?

        public init(
            _ label: String, x: [Double], y: [Double], style: Style = .lines, markers: Bool = true,
            color: String? = nil, dash: String? = nil, band: (low: [Double], high: [Double])? = nil
        ) {
            precondition(band.map { $0.low.count == x.count && $0.high.count == x.count } ?? true)
            self.label = label
            self.x = x
            self.y = y
            self.style = style
            self.markers = markers
            self.color = color
            self.dash = dash
            self.band = band
        }
    }

    public var title: String
    public var x: SVGAxis
    public var y: SVGAxis
    public var series: [Series]
    /// Requested size; the height grows when the legend needs more room.
    public var requestedWidth: Double
    public var requestedHeight: Double
    /// A line under the title (what the plot compares, where its numbers come from).
    public var subtitle: String?

    public init(
        title: String, x: SVGAxis, y: SVGAxis, series: [Series], width: Double = 490, height: Double = 340,
        subtitle: String? = nil
    ) {
        self.title = title
        self.x = x
        self.y = y
        self.series = series
        self.requestedWidth = width
        self.requestedHeight = height
        self.subtitle = subtitle
    }

    public var width: Double { requestedWidth }
    public var height: Double { frame().height }

    // MARK: - Layout

    private static let legendRow = 17.0
    private static let fontSize = 11.0

    private struct Frame {
        var left, top, right, bottom: Double
        var height: Double
        var legendWidth: Double
        var xLayout: SVGAxis.Layout
        var yLayout: SVGAxis.Layout
        var plotWidth: Double { right - left }
        var plotHeight: Double { bottom - top }
    }

    private func frame() -> Frame {
        let xLayout = x.layout(for: series.flatMap { zip($0.x, $0.y).filter { y.accepts($0.1) }.map(\.0) })
        // The y axis holds the curves and their bands.
        let yLayout = y.layout(
            for: series.flatMap { item in
                let bands = item.band.map { band in
                    zip(item.x, zip(band.low, band.high)).filter { x.accepts($0.0) }.flatMap { [$0.1.0, $0.1.1] }
                } ?? []
                return zip(item.x, item.y).filter { x.accepts($0.0) }.map(\.1) + bands
            })
        let labelled = series.filter { !$0.label.isEmpty }
        let legendWidth =
            labelled.isEmpty
            ? 0 : 34 + (labelled.map { SVG.textWidth($0.label, size: SVGPlot.fontSize) }.max() ?? 0)
        let yTickWidth = yLayout.labels.map { SVG.textWidth($0, size: SVGPlot.fontSize) }.max() ?? 0
        let top = subtitle == nil ? 36.0 : 50.0
        let left = 30 + yTickWidth + 8
        let right = requestedWidth - (legendWidth > 0 ? legendWidth + 14 : 16)
        let legendHeight = Double(labelled.count) * SVGPlot.legendRow + 8
        let height = max(requestedHeight, top + legendHeight + 48)
        return Frame(
            left: left, top: top, right: right, bottom: height - 46, height: height, legendWidth: legendWidth,
            xLayout: xLayout, yLayout: yLayout)
    }

    // MARK: - Drawing

    public func body() -> String {
        let f = frame()
        var out = ""
        out += SVG.text(title, x: f.left, y: 20, size: 14, weight: "600", fill: "#111111")
        if let subtitle { out += SVG.text(subtitle, x: f.left, y: 37, size: 11, fill: "#555555") }
        out += axes(f)
        // Bands first, so that every curve is drawn over every band.
        for (index, item) in series.enumerated() { out += band(item, index: index, frame: f) }
        for (index, item) in series.enumerated() { out += curve(item, index: index, frame: f) }
        out += legend(f)
        return out
    }

    private func px(_ value: Double, _ f: Frame) -> Double? {
        f.xLayout.fraction(value).map { f.left + $0 * f.plotWidth }
    }

    private func py(_ value: Double, _ f: Frame) -> Double? {
        f.yLayout.fraction(value).map { f.bottom - $0 * f.plotHeight }
    }

    private func axes(_ f: Frame) -> String {
        var grid = "", ticks = "", labels = ""
        let c = SVG.coordinate
        for (value, label) in zip(f.xLayout.ticks, f.xLayout.labels) {
            guard let x = px(value, f), x >= f.left - 0.5, x <= f.right + 0.5 else { continue }
            grid += "M\(c(x)) \(c(f.top))V\(c(f.bottom))"
            ticks += "M\(c(x)) \(c(f.bottom))v5"
            labels += SVG.text(label, x: x, y: f.bottom + 18, anchor: "middle", size: SVGPlot.fontSize)
        }
        for value in f.xLayout.minorTicks {
            guard let x = px(value, f) else { continue }
            ticks += "M\(c(x)) \(c(f.bottom))v3"
        }
        for (value, label) in zip(f.yLayout.ticks, f.yLayout.labels) {
            guard let y = py(value, f), y >= f.top - 0.5, y <= f.bottom + 0.5 else { continue }
            grid += "M\(c(f.left)) \(c(y))H\(c(f.right))"
            ticks += "M\(c(f.left)) \(c(y))h-5"
            labels += SVG.text(label, x: f.left - 8, y: y + 4, anchor: "end", size: SVGPlot.fontSize)
        }
        for value in f.yLayout.minorTicks {
            guard let y = py(value, f) else { continue }
            ticks += "M\(c(f.left)) \(c(y))h-3"
        }
        var out = ""
        if !grid.isEmpty { out += "<path d=\"\(grid)\" stroke=\"#e6e6e6\" stroke-width=\"1\" fill=\"none\"/>\n" }
        out +=
            "<rect x=\"\(c(f.left))\" y=\"\(c(f.top))\" width=\"\(c(f.plotWidth))\" height=\"\(c(f.plotHeight))\" "
            + "fill=\"none\" stroke=\"#888888\" stroke-width=\"1\"/>\n"
        if !ticks.isEmpty { out += "<path d=\"\(ticks)\" stroke=\"#888888\" stroke-width=\"1\" fill=\"none\"/>\n" }
        out += "<g fill=\"#333333\">\n" + labels + "</g>\n"
        out += SVG.text(
            x.label, x: (f.left + f.right) / 2, y: f.bottom + 38, anchor: "middle", size: 12, fill: "#222222")
        out += SVG.text(
            y.label, x: 14, y: (f.top + f.bottom) / 2, anchor: "middle", size: 12, fill: "#222222", rotate: -90)
        return out
    }

    /// Pixel runs of a series: drawable points in x order, split where a point cannot be drawn.
    private func runs(_ item: Series, _ f: Frame) -> [[(Double, Double)]] {
        let points = zip(item.x, item.y).enumerated().sorted { a, b in
            a.element.0 == b.element.0 ? a.offset < b.offset : a.element.0 < b.element.0
        }
        var runs: [[(Double, Double)]] = [[]]
        for (_, (xValue, yValue)) in points {
            if let x = px(xValue, f), let y = py(yValue, f), x >= f.left - 0.5, x <= f.right + 0.5,
                y >= f.top - 0.5, y <= f.bottom + 0.5
            {
                runs[runs.count - 1].append((x, y))
            } else if !(runs.last?.isEmpty ?? true) {
                runs.append([])
            }
        }
        return runs.filter { !$0.isEmpty }
    }

    private func style(_ item: Series, index: Int) -> (color: String, dash: String, marker: Int) {
        let palette = SVG.palette
        return (
            item.color ?? palette[index % palette.count],
            item.dash ?? SVG.dashes[(index / palette.count) % SVG.dashes.count],
            index % 4
        )
    }

    /// The band as shaded polygons, one per run of points whose low and high can both be drawn: along the highs
    /// in x order and back along the lows.
    private func band(_ item: Series, index: Int, frame f: Frame) -> String {
        guard let band = item.band else { return "" }
        let (color, _, _) = style(item, index: index)
        let order = item.x.indices.sorted { item.x[$0] < item.x[$1] }
        var runs: [[(x: Double, low: Double, high: Double)]] = [[]]
        for i in order {
            if let x = px(item.x[i], f), let low = py(band.low[i], f), let high = py(band.high[i], f),
                x >= f.left - 0.5, x <= f.right + 0.5
            {
                runs[runs.count - 1].append((x, min(max(low, f.top), f.bottom), min(max(high, f.top), f.bottom)))
            } else if !(runs.last?.isEmpty ?? true) {
                runs.append([])
            }
        }
        let c = SVG.coordinate
        var out = ""
        for run in runs where run.count >= 2 {
            let points = run.map { "\(c($0.x)),\(c($0.high))" } + run.reversed().map { "\(c($0.x)),\(c($0.low))" }
            out +=
                "<polygon class=\"band\" points=\"\(points.joined(separator: " "))\" fill=\"\(color)\" "
                + "fill-opacity=\"0.16\" stroke=\"none\"><title>\(SVG.escape(item.label)): 95 % interval</title></polygon>\n"
        }
        return out
    }

    private func curve(_ item: Series, index: Int, frame f: Frame) -> String {
        let (color, dash, marker) = style(item, index: index)
        let c = SVG.coordinate
        var d = ""
        for run in runs(item, f) {
            guard let first = run.first else { continue }
            d += "M\(c(first.0)) \(c(first.1))"
            for (previous, point) in zip(run, run.dropFirst()) {
                switch item.style {
                case .lines:
                    d += "L\(c(point.0)) \(c(point.1))"
                case .steps:
                    let middle = (previous.0 + point.0) / 2
                    d += "H\(c(middle))V\(c(point.1))H\(c(point.0))"
                }
            }
        }
        var out = "<g><title>\(SVG.escape(item.label))</title>\n"
        if !d.isEmpty {
            out +=
                "<path d=\"\(d)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.8\" stroke-linejoin=\"round\""
                + (dash.isEmpty ? "" : " stroke-dasharray=\"\(dash)\"") + "/>\n"
        }
        if item.markers {
            for run in runs(item, f) {
                for point in run { out += SVGPlot.marker(marker, x: point.0, y: point.1, color: color) }
            }
        }
        return out + "</g>\n"
    }

    /// Circle, square, triangle or diamond centred on (x, y).
    static func marker(_ shape: Int, x: Double, y: Double, color: String, size: Double = 3.2) -> String {
        let c = SVG.coordinate
        switch shape {
        case 1:
            return "<rect x=\"\(c(x - size * 0.85))\" y=\"\(c(y - size * 0.85))\" width=\"\(c(size * 1.7))\" "
                + "height=\"\(c(size * 1.7))\" fill=\"\(color)\"/>\n"
        case 2:
            let h = size * 1.15
            return "<path d=\"M\(c(x)) \(c(y - h))L\(c(x + h)) \(c(y + h * 0.8))L\(c(x - h)) \(c(y + h * 0.8))Z\" "
                + "fill=\"\(color)\"/>\n"
        case 3:
            let h = size * 1.25
            return "<path d=\"M\(c(x)) \(c(y - h))L\(c(x + h)) \(c(y))L\(c(x)) \(c(y + h))L\(c(x - h)) \(c(y))Z\" "
                + "fill=\"\(color)\"/>\n"
        default:
            return "<circle cx=\"\(c(x))\" cy=\"\(c(y))\" r=\"\(c(size))\" fill=\"\(color)\"/>\n"
        }
    }

    private func legend(_ f: Frame) -> String {
        guard f.legendWidth > 0 else { return "" }
        let c = SVG.coordinate
        let left = f.right + 14
        var out = "<g font-size=\"\(c(SVGPlot.fontSize))\" fill=\"#222222\">\n"
        var row = 0
        for (index, item) in series.enumerated() where !item.label.isEmpty {
            let (color, dash, marker) = style(item, index: index)
            let y = f.top + 8 + Double(row) * SVGPlot.legendRow
            out +=
                "<path d=\"M\(c(left)) \(c(y))h24\" stroke=\"\(color)\" stroke-width=\"1.8\""
                + (dash.isEmpty ? "" : " stroke-dasharray=\"\(dash)\"") + "/>\n"
            if item.markers { out += SVGPlot.marker(marker, x: left + 12, y: y, color: color) }
            out += SVG.text(item.label, x: left + 30, y: y + 4)
            row += 1
        }
        return out + "</g>\n"
    }
}
