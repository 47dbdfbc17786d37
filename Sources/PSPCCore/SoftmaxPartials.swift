import Foundation

/// A batch of mergeable softmax partial sums (docs/design.md section 2), one per slot (a query, or a query and
/// crop): m = max logit, s = sum exp(l - m), and optionally v = sum exp(l - m) x (`valueLength` values
/// per slot). The empty partial is (-inf, 0, 0). Merging is associative and commutative, so any
/// sharding and any reduction order give the same posterior mean v / s up to rounding.
public struct SoftmaxPartials: Sendable, Equatable {
    public var m: [Double]
    public var s: [Double]
    /// `[slots][valueLength]` row-major; empty when the partial carries only the normaliser.
    public var v: [Double]
    public let valueLength: Int

    public var slots: Int { m.count }

    public init(m: [Double], s: [Double], v: [Double] = [], valueLength: Int = 0) {
        precondition(m.count == s.count && v.count == m.count * valueLength)
        self.m = m
        self.s = s
        self.v = v
        self.valueLength = valueLength
    }

    /// The identity of `merge`.
    public static func empty(slots: Int, valueLength: Int = 0) -> SoftmaxPartials {
        SoftmaxPartials(
            m: [Double](repeating: -.infinity, count: slots), s: [Double](repeating: 0, count: slots),
            v: [Double](repeating: 0, count: slots * valueLength), valueLength: valueLength)
    }

    /// m = max(m1, m2), s = s1 e^(m1-m) + s2 e^(m2-m), v likewise.
    public mutating func merge(_ other: SoftmaxPartials) {
        precondition(other.slots == slots && other.valueLength == valueLength, "merging partials of other sizes")
        for i in 0..<slots {
            let m1 = m[i], m2 = other.m[i]
            if m2 == -.infinity { continue }
            if m1 == -.infinity {
                m[i] = m2
                s[i] = other.s[i]
                if valueLength > 0 {
                    for j in 0..<valueLength { v[i * valueLength + j] = other.v[i * valueLength + j] }
                }
                continue
            }
            let mNew = max(m1, m2)
            let a = exp(m1 - mNew), b = exp(m2 - mNew)
            m[i] = mNew
            s[i] = s[i] * a + other.s[i] * b
            for j in 0..<valueLength {
                v[i * valueLength + j] = v[i * valueLength + j] * a + other.v[i * valueLength + j] * b
            }
        }
    }

    /// Merges `other` into slots `first ..< first + other.slots` (same value length), as `merge` does per slot.
    public mutating func merge(_ other: SoftmaxPartials, intoSlotsFrom first: Int) {
        precondition(other.valueLength == valueLength && first >= 0 && first + other.slots <= slots)
        let n = valueLength
        for i in 0..<other.slots {
            let m2 = other.m[i]
            if m2 == -.infinity { continue }
            let j = first + i, m1 = m[j], mNew = max(m1, m2)
            let a = m1 == -.infinity ? 0 : exp(m1 - mNew), b = exp(m2 - mNew)
            m[j] = mNew
            s[j] = s[j] * a + other.s[i] * b
            for k in 0..<n { v[j * n + k] = v[j * n + k] * a + other.v[i * n + k] * b }
        }
    }

    /// log Z = m + log s per slot; -inf for a slot nothing contributed to.
    public var logNormalizers: [Double] {
        (0..<slots).map { s[$0] > 0 ? m[$0] + log(s[$0]) : -.infinity }
    }

    /// The posterior means v / s, `[slots][valueLength]`.
    public func means() throws -> [Double] {
        var out = [Double](repeating: 0, count: v.count)
        for i in 0..<slots {
            guard s[i] > 0 else { throw PSPCError.numerical(
                    m[i] == -.infinity
                        ? "softmax over an empty training set (slot \(i))"
                        : "softmax normaliser of slot \(i) is \(s[i]) (the logits under- or overflowed)") }
            let inv = 1 / s[i]
            for j in 0..<valueLength { out[i * valueLength + j] = v[i * valueLength + j] * inv }
        }
        return out
    }
}
