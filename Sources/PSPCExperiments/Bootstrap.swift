import Foundation
import PSPCCore

/// Percentile bootstrap intervals over independent items (queries, samples): resample the items with
/// replacement `resamples` times, compute the statistic on each resample, and take the (1 - level) / 2 and
/// (1 + level) / 2 quantiles. Resamples are drawn from `seed` alone (SplitMix64 over (seed, resample, draw)),
/// so an interval is the same on every machine and every run. Paired statistics (a ratio of two methods' mean
/// errors over the same queries) resample the query indices once for both.
public struct Bootstrap: Sendable {
    /// A two-sided interval; `low <= high`, NaN when there are no items.
    public struct Interval: Sendable, Equatable {
        public var low: Double
        public var high: Double

        public init(low: Double, high: Double) {
            self.low = low
            self.high = high
        }

        public func contains(_ x: Double) -> Bool { low <= x && x <= high }
    }

    public let resamples: Int
    public let level: Double
    public let seed: UInt64

    public init(resamples: Int = 2000, level: Double = 0.95, seed: UInt64 = 0) {
        precondition(resamples >= 1 && level > 0 && level < 1)
        self.resamples = resamples
        self.level = level
        self.seed = seed
    }

    /// The interval of `statistic(indices)` over resampled index lists of `count` items.
    public func interval(count: Int, _ statistic: ([Int]) -> Double) -> Interval {
        guard count > 0 else { return Interval(low: .nan, high: .nan) }
        var values: [Double] = []
        values.reserveCapacity(resamples)
        forEachResample(count: count) { _, indices in values.append(statistic(indices)) }
        values.sort()
        let tail = (1 - level) / 2
        return Interval(low: Self.quantile(sorted: values, tail), high: Self.quantile(sorted: values, 1 - tail))
    }

    /// Calls `body(r, indices)` for each resample r of `count` items (the index lists `interval` uses); `stream`
    /// keeps the resamples of independent item sets (two sweeps' queries) apart.
    public func forEachResample(count: Int, stream: UInt64 = 0, _ body: (Int, [Int]) -> Void) {
        guard count > 0 else { return }
        var indices = [Int](repeating: 0, count: count)
        // Stream 0 is the stream of every interval: its resamples are those the intervals have always had.
        let offset = stream == 0 ? 0 : Self.mix(stream)
        for r in 0..<resamples {
            let base = Self.mix(seed ^ Self.mix(UInt64(r) &+ 0xB007_57A9) ^ offset)
            for k in 0..<count { indices[k] = Int(Self.mix(base &+ UInt64(k)) % UInt64(count)) }
            body(r, indices)
        }
    }

    public func mean(_ x: [Double]) -> Interval {
        interval(count: x.count) { idx in idx.reduce(0) { $0 + x[$1] } / Double(idx.count) }
    }

    public func median(_ x: [Double]) -> Interval {
        interval(count: x.count) { idx in Self.median(idx.map { x[$0] }) }
    }

    /// mean(a) / mean(b) over the same items (errors, >= 0), resampled together; `ratio` defines the resamples
    /// where b's sum is 0.
    public func ratioOfMeans(_ a: [Double], _ b: [Double]) -> Interval {
        precondition(a.count == b.count)
        return interval(count: a.count) { idx in
            Self.ratio(idx.reduce(0) { $0 + a[$1] }, idx.reduce(0) { $0 + b[$1] })
        }
    }

    /// a / b for sums of errors (>= 0), defined where b is 0: 1 when both are 0 (the two agree exactly), +inf
    /// otherwise; so a resample never yields NaN and the quantiles stay ordered. NaN only from NaN errors.
    public static func ratio(_ a: Double, _ b: Double) -> Double {
        if b == 0 { return a == 0 ? 1 : (a.isNaN ? .nan : .infinity) }
        return a / b
    }

    public static func mean(_ x: [Double]) -> Double { x.isEmpty ? .nan : x.reduce(0, +) / Double(x.count) }

    public static func median(_ x: [Double]) -> Double { quantile(sorted: x.sorted(), 0.5) }

    /// Quantile q of sorted values by linear interpolation between order statistics (Hyndman and Fan's type 7,
    /// numpy's default).
    public static func quantile(sorted x: [Double], _ q: Double) -> Double {
        guard !x.isEmpty else { return .nan }
        let position = q * Double(x.count - 1)
        let below = Int(position.rounded(.down)), above = min(below + 1, x.count - 1)
        let fraction = position - Double(below)
        // Equal neighbours or an exact order statistic: that value (also when infinite, where the interpolation
        // would give inf - inf = NaN); identical to the interpolation for finite values.
        if fraction == 0 || x[below] == x[above] { return x[below] }
        return x[below] + fraction * (x[above] - x[below])
    }

    static func mix(_ x: UInt64) -> UInt64 { NormalNoise.mix(x) }
}
