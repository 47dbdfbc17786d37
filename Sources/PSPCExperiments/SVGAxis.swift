import Foundation

/// One axis of an `SVGPlot`: its label, linear or logarithmic scale, and the ticks it shows. The shown range
/// comes from the data unless fixed; a log axis shows whole decades and ignores values that are not positive.
public struct SVGAxis: Sendable {
    public enum Scale: Sendable { case linear, log }

    public var label: String
    public var scale: Scale
    /// Tick positions to use instead of computed ones (e.g. the patch sizes of a sweep).
    public var ticks: [Double]?
    /// A fixed range instead of one fitted to the data.
    public var range: ClosedRange<Double>?

    public init(_ label: String, scale: Scale = .linear, ticks: [Double]? = nil, range: ClosedRange<Double>? = nil) {
        self.label = label
        self.scale = scale
        self.ticks = ticks
        self.range = range
    }

    /// Whether `value` can be drawn on this axis (finite, and positive on a log axis).
    public func accepts(_ value: Double) -> Bool {
        value.isFinite && (scale == .linear || value > 0)
    }

    /// The range shown for data `values`, with the ticks to draw in it and their labels.
    public func layout(for values: [Double]) -> Layout {
        let shown = values.filter(accepts) + (ticks ?? []).filter(accepts)
        switch scale {
        case .log:
            var low: Double, high: Double
            if let range, range.lowerBound > 0 {
                (low, high) = (range.lowerBound, range.upperBound)
            } else if let min = shown.min(), let max = shown.max() {
                (low, high) = (SVGAxis.decade(Int(floor(log10(min)))), SVGAxis.decade(Int(ceil(log10(max)))))
            } else {
                (low, high) = (0.1, 1)
            }
            if high <= low { high = low * 10 }
            let major = ticks ?? SVGAxis.logTicks(low: low, high: high)
            let decades = log10(high) - log10(low)
            let minor = ticks == nil && decades <= 7 ? SVGAxis.minorLogTicks(low: low, high: high) : []
            return Layout(
                low: low, high: high, scale: .log, ticks: major, minorTicks: minor,
                labels: major.map(SVGAxis.logLabel))
        case .linear:
            var low: Double, high: Double
            if let range {
                (low, high) = (range.lowerBound, range.upperBound)
            } else if let min = shown.min(), let max = shown.max() {
                (low, high) = (min, max)
            } else {
                (low, high) = (0, 1)
            }
            if high <= low { (low, high) = (low - 0.5, high + 0.5) }
            let step = SVGAxis.niceStep((high - low) / 5)
            if range == nil {
                // The tolerance keeps 0.3 / 0.1 = 2.9999999999999996 from widening the range by a step.
                low = (low / step + 1e-9).rounded(.down) * step
                high = (high / step - 1e-9).rounded(.up) * step
            }
            let major =
                ticks
                ?? stride(from: (low / step - 1e-9).rounded(.up) * step, through: high + step * 1e-9, by: step).map {
                    $0
                }
            let decimals = max(0, Int(-floor(log10(step) + 1e-9)))
            return Layout(
                low: low, high: high, scale: .linear, ticks: major, minorTicks: [],
                labels: major.map { SVGAxis.linearLabel($0, decimals: ticks == nil ? decimals : nil) })
        }
    }

    /// The computed placement of an axis: where values go and which ticks it carries.
    public struct Layout: Sendable {
        public var low: Double
        public var high: Double
        public var scale: Scale
        public var ticks: [Double]
        public var minorTicks: [Double]
        public var labels: [String]

        /// Position of `value` in [0, 1] along the axis (outside for values out of range); nil if not drawable.
        public func fraction(_ value: Double) -> Double? {
            guard value.isFinite else { return nil }
            switch scale {
            case .linear:
                return (value - low) / (high - low)
            case .log:
                guard value > 0 else { return nil }
                return (log10(value) - log10(low)) / (log10(high) - log10(low))
            }
        }
    }

    /// Decades from `low` to `high` (both included when they are decades); every 2nd or 3rd decade when the
    /// range is so wide that labels would crowd.
    public static func logTicks(low: Double, high: Double) -> [Double] {
        guard low > 0, high > low, low.isFinite, high.isFinite else { return [] }
        let first = Int(ceil(log10(low) - 1e-9)), last = Int(floor(log10(high) + 1e-9))
        guard first <= last else { return [] }
        let every = last - first > 16 ? 3 : (last - first > 8 ? 2 : 1)
        return stride(from: first, through: last, by: every).map { decade($0) }
    }

    /// 2..9 times each decade inside the range (unlabelled tick marks).
    static func minorLogTicks(low: Double, high: Double) -> [Double] {
        guard low > 0, high > low else { return [] }
        var values: [Double] = []
        for exponent in Int(floor(log10(low)))...Int(ceil(log10(high))) {
            for multiple in 2...9 {
                let value = Double(multiple) * decade(exponent)
                if value > low && value < high { values.append(value) }
            }
        }
        return values
    }

    /// 10^k, exact for the decades a plot shows (pow(10, -2) is not the literal 0.01).
    static func decade(_ exponent: Int) -> Double {
        Double("1e\(exponent)") ?? pow(10, Double(exponent))
    }

    /// Labels decades as plain numbers from 0.001 to 10000 (`0.01`, `1`, `100`), as `1e-5` beyond.
    public static func logLabel(_ value: Double) -> String {
        let exponent = log10(value)
        let isDecade = abs(exponent - exponent.rounded()) < 1e-9
        if isDecade {
            let k = Int(exponent.rounded())
            if k >= 0 && k <= 4 { return String(Int(decade(k))) }
            if k < 0 && k >= -3 { return "0." + String(repeating: "0", count: -k - 1) + "1" }
            return "1e\(k)"
        }
        return SVG.shortNumber(value, digits: 3)
    }

    static func linearLabel(_ value: Double, decimals: Int?) -> String {
        guard let decimals else { return SVG.shortNumber(value, digits: 4) }
        let text = String(format: "%.\(decimals)f", value)
        // "-0" and "-0.0" read oddly at the origin.
        return Double(text) == 0 ? String(format: "%.\(decimals)f", 0.0) : text
    }

    /// 1, 2 or 5 times a power of ten, at least `rough`.
    static func niceStep(_ rough: Double) -> Double {
        guard rough > 0, rough.isFinite else { return 1 }
        let power = pow(10, floor(log10(rough)))
        for multiple in [1.0, 2, 5, 10] where multiple * power >= rough * (1 - 1e-9) { return multiple * power }
        return 10 * power
    }
}
