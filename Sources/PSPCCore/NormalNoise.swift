import Foundation

/// Deterministic standard normal noise addressed by (seed, stream, index): the same numbers whatever the
/// batching, sharding or thread count. SplitMix64 hashing of the address, then Box-Muller.
public struct NormalNoise: Sendable {
    public let seed: UInt64

    public init(seed: UInt64) { self.seed = seed }

    /// SplitMix64's finaliser: a well-mixed 64-bit hash of `x` (also the bootstrap's resample generator).
    @inline(__always)
    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in (0, 1) from a 53-bit hash, never exactly 0.
    @inline(__always)
    func uniform(_ key: UInt64) -> Double {
        (Double(Self.mix(key) >> 11) + 0.5) * 0x1p-53
    }

    /// `count` normals for stream `stream` (a query or sample index, a copy index, ...).
    public func normals(stream: UInt64, count: Int) -> [Double] {
        var out = [Double](repeating: 0, count: count)
        let base = Self.mix(seed ^ Self.mix(stream &+ 0x5DEE_CE66))
        var i = 0
        while i < count {
            let u1 = uniform(base &+ UInt64(2 * i)), u2 = uniform(base &+ UInt64(2 * i + 1))
            let r = (-2 * log(u1)).squareRoot(), angle = 2 * Double.pi * u2
            out[i] = r * cos(angle)
            if i + 1 < count { out[i + 1] = r * sin(angle) }
            i += 2
        }
        return out
    }
}
