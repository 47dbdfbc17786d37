import Foundation
import PSPCCore
import PSPCData

/// Samples of several denoisers from shared initial noise with the Euler or Heun PF-ODE (docs/science.md section 6),
/// and how alike they are: per pair of variants and per sample i, the Pearson correlation and the L2 distance of
/// the two variants' i-th samples; summarised as their mean, the median Pearson correlation over samples (Kamb &
/// Ganguli's measure: each sample is one seed) and the mean L2, each median and mean with a 95 % bootstrap interval
/// over samples. Each variant's samples are one unit.
public struct SampleComparison: Sendable {
    public let run: RunDirectory
    public let shape: ImageShape
    public let count: Int
    public let seed: UInt64
    public let steps: Int
    public let solver: EDM.Solver
    public let variants: [Variant]

    public init(
        run: RunDirectory, shape: ImageShape, count: Int, seed: UInt64, steps: Int, solver: EDM.Solver = .euler,
        variants: [Variant]
    ) throws {
        guard count >= 1, steps >= 2, !variants.isEmpty else {
            throw PSPCError.invalidArgument("a comparison needs count >= 1, steps >= 2 and at least one method")
        }
        try Variant.checkDistinct(variants, noun: "method")
        self.run = run
        self.shape = shape
        self.count = count
        self.seed = seed
        self.steps = steps
        self.solver = solver
        self.variants = variants
    }

    /// Denoiser evaluations of one sample's trajectory: n steps of Euler, 2n - 1 of Heun (the last step is Euler).
    public var evaluations: Int { solver == .heun ? 2 * steps - 1 : steps }

    /// The shared initial noise at t = 80: the same as `pspc sample --seed` draws.
    public func initialNoise() -> [Double] {
        let grid = EDM.grid(steps: steps)
        let noise = NormalNoise(seed: seed)
        return (0..<count).flatMap { noise.normals(stream: UInt64($0), count: shape.dimension) }.map { $0 * grid[0] }
    }

    public func samplesFile(_ variant: Variant) -> String { "samples/\(variant.slug).npy" }

    /// Draws every variant's samples not drawn yet; `progress(done, total)` counts denoiser evaluations of
    /// single images.
    public func draw(
        engine: DenoisingEngine?, network: BatchDenoiser?, progress: @escaping @Sendable (Int, Int) -> Void
    ) async throws {
        try await draw(engine: engine, networks: network.map { [$0] } ?? [], progress: progress)
    }

    /// `draw` with several networks: `networks` answer for the network variants, in their order (a study of
    /// several networks compares each with the others and with every method).
    public func draw(
        engine: DenoisingEngine?, networks: [BatchDenoiser], progress: @escaping @Sendable (Int, Int) -> Void
    ) async throws {
        let networkVariants = variants.filter(\.isNetwork)
        guard networks.isEmpty || networks.count == networkVariants.count else {
            throw PSPCError.invalidArgument(
                "the comparison has \(networkVariants.count) networks, \(networks.count) denoisers were given")
        }
        let z = initialNoise()
        try run.writeNPY(Sweep.npy(Metrics.storable(z), count: count, shape: shape), to: "noise.npy")
        let grid = EDM.grid(steps: steps)
        let total = variants.count * evaluations * count
        let perStep = solver == .heun ? 2 : 1
        for (n, variant) in variants.enumerated() {
            let base = n * evaluations * count
            if FileManager.default.fileExists(atPath: run.file(samplesFile(variant))) {
                progress(base + evaluations * count, total)
                continue
            }
            let samples = try await EDM.sample(
                from: z, grid: grid, solver: solver,
                denoise: { z, t in
                    if let method = variant.engineMethod {
                        guard let engine else {
                            throw PSPCError.invalidArgument("\(variant.label) needs the training set (--data or --cluster)")
                        }
                        return try await engine.denoise(z, t: t, method: method).values
                    }
                    guard let k = networkVariants.firstIndex(where: { $0.label == variant.label }), k < networks.count else {
                        throw PSPCError.invalidArgument("the network needs --network or --local-network")
                    }
                    return try await networks[k](z, t) { _ in }
                },
                progress: { step in progress(base + min(step * perStep, evaluations) * count, total) })
            if let bad = samples.firstIndex(where: { !$0.isFinite }) {
                throw PSPCError.nonFiniteInput("\(variant.label) produced a non-finite sample (sample \(bad / shape.dimension))")
            }
            try run.writeNPY(Sweep.npy(samples, count: count, shape: shape), to: samplesFile(variant))
        }
    }

    /// Per-sample similarity of every pair of stored samples: `pearson[a][b][i]` and `l2[a][b][i]` for sample i.
    public func perSample() throws -> (pearson: [[[Double]]], l2: [[[Double]]]) {
        let dim = shape.dimension
        let samples = try variants.map { try Sweep.readImages(run.file(samplesFile($0)), shape: shape) }
        let empty = [[[Double]]](repeating: [[Double]](repeating: [], count: variants.count), count: variants.count)
        var pearson = empty, l2 = empty
        for a in variants.indices {
            for b in variants.indices {
                for i in 0..<count {
                    let x = samples[a][(i * dim)..<((i + 1) * dim)], y = samples[b][(i * dim)..<((i + 1) * dim)]
                    pearson[a][b].append(Metrics.pearson(x, y))
                    l2[a][b].append(Metrics.l2(x, y))
                }
            }
        }
        return (pearson, l2)
    }

    /// One pair's summary over samples.
    public struct PairSimilarity: Sendable, Equatable {
        public var meanPearson: Double
        public var medianPearson: Double
        public var medianPearsonInterval: Bootstrap.Interval
        public var meanL2: Double
        public var meanL2Interval: Bootstrap.Interval
    }

    /// Every ordered pair's summary, `[a][b]`, intervals from `bootstrap` over the samples.
    public func similarity(bootstrap: Bootstrap = Bootstrap()) throws -> [[PairSimilarity]] {
        let (pearson, l2) = try perSample()
        return variants.indices.map { a in
            variants.indices.map { b in
                PairSimilarity(
                    meanPearson: Bootstrap.mean(pearson[a][b]), medianPearson: Bootstrap.median(pearson[a][b]),
                    medianPearsonInterval: bootstrap.median(pearson[a][b]), meanL2: Bootstrap.mean(l2[a][b]),
                    meanL2Interval: bootstrap.mean(l2[a][b]))
            }
        }
    }

    /// The columns of similarity.csv.
    public static let similarityHeader = [
        "method_a", "method_b", "pearson", "pearson_median", "pearson_median_ci_low", "pearson_median_ci_high",
        "mean_l2", "mean_l2_ci_low", "mean_l2_ci_high",
    ]

    /// similarity.csv (every ordered pair: mean and median Pearson correlation, mean L2, 95 % bootstrap
    /// intervals over samples), similarity-per-sample.csv (each pair a < b and sample i), similarity.json and
    /// samples.png (one row per variant).
    public func writeResults() throws {
        let summary = try similarity()
        let (pearson, l2) = try perSample()
        let labels = variants.map(\.label)
        var text = CSVText.line(Self.similarityHeader)
        for a in labels.indices {
            for b in labels.indices {
                let s = summary[a][b]
                text += CSVText.line(
                    [labels[a], labels[b]]
                        + [
                            s.meanPearson, s.medianPearson, s.medianPearsonInterval.low, s.medianPearsonInterval.high,
                            s.meanL2, s.meanL2Interval.low, s.meanL2Interval.high,
                        ].map(RunNumber.text))
            }
        }
        try run.writeText(text, to: "similarity.csv")
        var perSampleText = "method_a,method_b,sample,pearson,l2\n"
        for a in labels.indices {
            for b in labels.indices where a < b {
                for i in 0..<count {
                    perSampleText += CSVText.line(
                        [labels[a], labels[b], String(i), RunNumber.text(pearson[a][b][i]), RunNumber.text(l2[a][b][i])])
                }
            }
        }
        try run.writeText(perSampleText, to: "similarity-per-sample.csv")
        try run.writeJSON(
            .object([
                ("labels", .strings(labels)), ("solver", .string(solver.rawValue)),
                ("pearson", .array(summary.map { .doubles($0.map(\.meanPearson)) })),
                ("pearson_median", .array(summary.map { .doubles($0.map(\.medianPearson)) })),
                ("mean_l2", .array(summary.map { .doubles($0.map(\.meanL2)) })),
            ]), to: "similarity.json")
        var pixels: [UInt8] = []
        for variant in variants {
            pixels += PNG.quantize(try Sweep.readImages(run.file(samplesFile(variant)), shape: shape))
        }
        let png = try PNG.grid(
            images: pixels, count: variants.count * count, channels: shape.channels, height: shape.height,
            width: shape.width, columns: count)
        try run.write(png, to: "samples.png")
    }
}
