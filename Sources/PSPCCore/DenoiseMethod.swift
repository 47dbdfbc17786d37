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
    /// Kamb & Ganguli's local score machine (docs/science.md): per pixel, the posterior mean of the centre pixel
    /// over the training windows at the same position, P x P windows (P odd, looked up at t), zero-padded.
    case ls(PatchSchedule)
    /// Kamb & Ganguli's equivariant local score machine: as `ls`, the candidates being the training windows at
    /// every position whose padding pattern equals the pixel's (boundary-broken: no circular padding).
    case els(PatchSchedule)

    public var name: String {
        switch self {
        case .empirical: return "empirical"
        case .pspcSquare: return "pspc-square"
        case .pspcFlex: return "pspc-flex"
        case .gaussian: return "gaussian"
        case .cfdm: return "cfdm"
        case .ls: return "ls"
        case .els: return "els"
        }
    }
}

extension DenoiseMethod {
    /// Checks a window size of the LS / ELS machines: odd and at least 1 (windows are centred on a pixel).
    /// The smallest LS / ELS window that covers an image of `shape` from every centre (2 max(H, W) - 1): from this
    /// size on, both machines are the optimal empirical denoiser.
    public static func wholeImageWindow(_ shape: ImageShape) -> Int { 2 * max(shape.height, shape.width) - 1 }

    public static func validateWindow(patchSize: Int) throws {
        guard patchSize >= 1, patchSize % 2 == 1 else {
            throw PSPCError.invalidArgument(
                "the LS / ELS window size must be odd and at least 1 (windows are centred on a pixel), got \(patchSize)")
        }
    }
}
