/// The denoisers of docs/science.md sections 2, 3 and 5, all computed exactly over the training set.
public enum DenoiseMethod: Sendable {
    /// The optimal empirical denoiser D*(z, t) = sum_i softmax_i(-||z - x_i||^2 / 2t^2) x_i.
    case empirical
    /// PSPC-Square: composite of the posterior means of all s x s crops, s looked up at t.
    case pspcSquare(PatchSchedule)
    /// PSPC-Flex: composite over heatmap masks, with the empirical value where no mask covers a pixel.
    case pspcFlex(FlexMasks)
    /// Gaussian baseline: mu + U diag(l / (l + t^2)) U^T (z - mu) with the training mean and covariance.
    case gaussian
    /// Closed-form diffusion model: the empirical denoiser averaged over `copies` perturbed queries
    /// z + smoothing * eps, eps seeded per (seed, query index, copy).
    case cfdm(smoothing: Double, copies: Int, seed: UInt64)

    public var name: String {
        switch self {
        case .empirical: return "empirical"
        case .pspcSquare: return "pspc-square"
        case .pspcFlex: return "pspc-flex"
        case .gaussian: return "gaussian"
        case .cfdm: return "cfdm"
        }
    }
}
