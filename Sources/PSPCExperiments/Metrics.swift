/// The figures every experiment reports, accumulated in float64 in a fixed order (so they never depend on
/// threads or on how a run was split).
public enum Metrics {
    /// Mean over all elements of (a - b)^2.
    public static func mse(_ a: [Double], _ b: [Double]) -> Double { mse(a[...], b[...]) }

    public static func mse(_ a: ArraySlice<Double>, _ b: ArraySlice<Double>) -> Double {
        precondition(a.count == b.count && !a.isEmpty, "mse of arrays of different or zero length")
        var sum = 0.0
        for (x, y) in zip(a, b) {
            let d = x - y
            sum += d * d
        }
        return sum / Double(a.count)
    }

    /// Pearson correlation of two vectors; 0 when either is constant.
    public static func pearson(_ a: ArraySlice<Double>, _ b: ArraySlice<Double>) -> Double {
        precondition(a.count == b.count && !a.isEmpty)
        let n = Double(a.count)
        let meanA = a.reduce(0, +) / n, meanB = b.reduce(0, +) / n
        var sab = 0.0, saa = 0.0, sbb = 0.0
        for (x, y) in zip(a, b) {
            sab += (x - meanA) * (y - meanB)
            saa += (x - meanA) * (x - meanA)
            sbb += (y - meanB) * (y - meanB)
        }
        return saa > 0 && sbb > 0 ? sab / (saa * sbb).squareRoot() : 0
    }

    /// Euclidean distance of two vectors.
    public static func l2(_ a: ArraySlice<Double>, _ b: ArraySlice<Double>) -> Double {
        var sum = 0.0
        for (x, y) in zip(a, b) { sum += (x - y) * (x - y) }
        return sum.squareRoot()
    }

    /// Values as they are stored (float32) and read back, so a figure computed now equals one computed later
    /// from the files.
    public static func storable(_ values: [Double]) -> [Double] { values.map { Double(Float($0)) } }
}
