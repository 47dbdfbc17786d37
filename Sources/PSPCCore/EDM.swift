import Foundation

/// The EDM (Karras et al. 2022) variance-exploding diffusion: z = x + t eps, sigma(t) = t (docs/science.md section 1).
public enum EDM {
    public static let tMax = 80.0
    public static let tMin = 0.002
    public static let rho = 7.0
    /// sigma_data of the network preconditioning.
    public static let sigmaData = 0.5

    /// The time grid t_i = (tMax^(1/rho) + i/(n-1) (tMin^(1/rho) - tMax^(1/rho)))^rho, i = 0..n-1, descending.
    public static func grid(steps n: Int, tMin: Double = tMin, tMax: Double = tMax, rho: Double = rho) -> [Double] {
        precondition(n >= 2, "an EDM grid needs at least 2 steps")
        let a = pow(tMax, 1 / rho), b = pow(tMin, 1 / rho)
        return (0..<n).map { i in pow(a + Double(i) / Double(n - 1) * (b - a), rho) }
    }

    /// Index of the grid time nearest to `t` (nearest in log t, so that 0.002 and 0.0075 are told apart).
    public static func nearestIndex(of t: Double, in grid: [Double]) -> Int {
        var best = 0
        var bestDistance = Double.infinity
        for (i, g) in grid.enumerated() {
            let distance = abs(log(g) - log(t))
            if distance < bestDistance {
                best = i
                bestDistance = distance
            }
        }
        return best
    }

    /// The probability-flow ODE solvers of docs/science.md section 1.
    public enum Solver: String, Sendable, CaseIterable, Codable {
        /// z <- z + (tNext - t) d, d = (z - D(z, t)) / t; the last step lands on t = 0.
        case euler
        /// Heun's second-order correction at every step but the last (EDM's default for networks).
        case heun
    }

    /// Integrates the PF-ODE from `z` at grid[0] along `grid`, then to t = 0, accumulating in float64.
    /// `denoise(z, t)` returns D(z, t) for the whole batch. `progress(step)` is called after each step.
    public static func sample(
        from z: [Double], grid: [Double], solver: Solver,
        denoise: (_ z: [Double], _ t: Double) async throws -> [Double],
        progress: (_ step: Int) -> Void = { _ in }
    ) async throws -> [Double] {
        var z = z
        let times = grid + [0]
        for i in 0..<(times.count - 1) {
            let t = times[i], tNext = times[i + 1]
            let denoised = try await denoise(z, t)
            var d = [Double](repeating: 0, count: z.count)
            for j in 0..<z.count { d[j] = (z[j] - denoised[j]) / t }
            if solver == .heun && tNext > 0 {
                var zNext = [Double](repeating: 0, count: z.count)
                for j in 0..<z.count { zNext[j] = z[j] + (tNext - t) * d[j] }
                let denoisedNext = try await denoise(zNext, tNext)
                for j in 0..<z.count {
                    let dPrime = (zNext[j] - denoisedNext[j]) / tNext
                    z[j] += (tNext - t) * (0.5 * d[j] + 0.5 * dPrime)
                }
            } else {
                for j in 0..<z.count { z[j] += (tNext - t) * d[j] }
            }
            progress(i + 1)
        }
        return z
    }
}
