/// Anything that draws itself as SVG elements in a box of known size, so figures can be written alone
/// (`render()`) or set side by side in one document (`SVGRow`).
public protocol SVGFigure: Sendable {
    var width: Double { get }
    var height: Double { get }
    /// The elements, in this figure's own coordinates (origin at the top left).
    func body() -> String
}

extension SVGFigure {
    /// A standalone SVG document of this figure.
    public func render() -> String { SVG.document(width: width, height: height, body: body()) }
}

/// Figures placed left to right with a gap, top-aligned: two panels that belong to one figure file.
public struct SVGRow: SVGFigure {
    public var figures: [any SVGFigure]
    public var gap: Double

    public init(_ figures: [any SVGFigure], gap: Double = 16) {
        self.figures = figures
        self.gap = gap
    }

    public var width: Double {
        figures.reduce(0) { $0 + $1.width } + gap * Double(max(0, figures.count - 1))
    }

    public var height: Double { figures.map(\.height).max() ?? 0 }

    public func body() -> String {
        var x = 0.0
        var out = ""
        for figure in figures {
            out += "<g transform=\"translate(\(SVG.coordinate(x)),0)\">\n\(figure.body())</g>\n"
            x += figure.width + gap
        }
        return out
    }
}
