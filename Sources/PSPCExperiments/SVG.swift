import Foundation

/// Pieces every SVG figure shares: XML escaping, compact coordinates, a text-width estimate for layout and
/// the series palette. Figures are plain strings, so they can be written to files or inlined in HTML.
public enum SVG {
    /// Colours that stay apart on white and for common colour-vision deficiencies (Okabe-Ito, with black
    /// replaced by a dark grey and two extra hues); series past the last colour reuse them with dashes.
    public static let palette = [
        "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7A5195", "#8C564B", "#333333",
        "#B8A000",
    ]

    /// Dash patterns for the 1st, 2nd, ... round through the palette (solid first).
    public static let dashes = ["", "6 3", "2 2.5", "9 3 2 3"]

    public static let fontFamily = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"

    /// `text` made safe for XML character data and attribute values.
    public static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default:
                // XML 1.0 forbids most control characters even as references; drop them.
                if scalar.value < 0x20 && scalar != "\n" && scalar != "\t" { continue }
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// A coordinate with at most two decimals and no trailing zeros (`12`, `12.5`, `12.25`).
    public static func coordinate(_ value: Double) -> String {
        guard value.isFinite else { return "0" }
        let rounded = (value * 100).rounded() / 100
        if rounded == rounded.rounded() { return String(Int(rounded)) }
        var text = String(format: "%.2f", rounded)
        while text.hasSuffix("0") { text.removeLast() }
        return text
    }

    /// Approximate width in pixels of `text` at `size` in a sans-serif font (layout only: legends, margins).
    public static func textWidth(_ text: String, size: Double) -> Double {
        Double(text.count) * size * 0.58
    }

    /// A number as a short label: 4 significant digits, scientific outside [1e-3, 1e5).
    public static func shortNumber(_ value: Double, digits: Int = 4) -> String {
        guard value.isFinite else { return value.isNaN ? "nan" : (value > 0 ? "inf" : "-inf") }
        if value == 0 { return "0" }
        let magnitude = abs(value)
        if magnitude >= 1e-3 && magnitude < 1e5 {
            // %g switches to exponents at 10^digits; whole numbers that long are clearer written out.
            return magnitude >= pow(10, Double(digits))
                ? String(format: "%.0f", value) : String(format: "%.\(digits)g", value)
        }
        return String(format: "%.\(max(0, digits - 1))e", value)
            .replacingOccurrences(of: "e+0", with: "e").replacingOccurrences(of: "e-0", with: "e-")
            .replacingOccurrences(of: "e+", with: "e")
    }

    /// A complete standalone SVG document holding `body`, drawn on a white background.
    static func document(width: Double, height: Double, body: String) -> String {
        let w = coordinate(width), h = coordinate(height)
        return """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(w)" height="\(h)" viewBox="0 0 \(w) \(h)" \
            font-family="\(escape(fontFamily))" font-size="12">
            <rect x="0" y="0" width="\(w)" height="\(h)" fill="#ffffff"/>
            \(body)</svg>

            """
    }

    /// A `<text>` element; `anchor` is start, middle or end.
    static func text(
        _ content: String, x: Double, y: Double, anchor: String = "start", size: Double? = nil,
        weight: String? = nil, fill: String? = nil, rotate: Double? = nil, baseline: String? = nil
    ) -> String {
        var attributes = "x=\"\(coordinate(x))\" y=\"\(coordinate(y))\""
        if anchor != "start" { attributes += " text-anchor=\"\(anchor)\"" }
        if let size { attributes += " font-size=\"\(coordinate(size))\"" }
        if let weight { attributes += " font-weight=\"\(weight)\"" }
        if let fill { attributes += " fill=\"\(fill)\"" }
        if let baseline { attributes += " dominant-baseline=\"\(baseline)\"" }
        if let rotate {
            attributes += " transform=\"rotate(\(coordinate(rotate)) \(coordinate(x)) \(coordinate(y)))\""
        }
        return "<text \(attributes)>\(escape(content))</text>\n"
    }
}
