import Foundation
import PSPCCore
import PSPCData

/// Samples of several denoisers from shared initial noise with the Euler PF-ODE (docs/science.md section 6), and how
/// alike they are: per pair of variants, the mean over samples of the Pearson correlation (as Kamb & Ganguli)
/// and of the L2 distance between the two variants' i-th samples. Each variant's samples are one unit.
public struct SampleComparison: Sendable {
    public let run: RunDirectory
    public let shape: ImageShape
    public let count: Int
    public let seed: UInt64
    public let steps: Int
    public let variants: [Variant]

    public init(run: RunDirectory, shape: ImageShape, count: Int, seed: UInt64, steps: Int, variants: [Variant]) throws {
        guard count >= 1, steps >= 2, !variants.isEmpty else {
            throw PSPCError.invalidArgument("a comparison needs count >= 1, steps >= 2 and at least one method")
        }
        try Variant.checkDistinct(variants, noun: "method")
        self.run = run
        self.shape = shape
        self.count = count
        self.seed = seed
        self.steps = steps
        self.variants = variants
    }

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
        let z = initialNoise()
        try run.writeNPY(Sweep.npy(Metrics.storable(z), count: count, shape: shape), to: "noise.npy")
        let grid = EDM.grid(steps: steps)
        let total = variants.count * steps * count
        for (n, variant) in variants.enumerated() {
            let base = n * steps * count
            if FileManager.default.fileExists(atPath: run.file(samplesFile(variant))) {
                progress(base + steps * count, total)
                continue
            }
            let samples = try await EDM.sample(
                from: z, grid: grid, solver: .euler,
                denoise: { z, t in
                    if let method = variant.engineMethod {
                        guard let engine else {
                            throw PSPCError.invalidArgument("\(variant.label) needs the training set (--data or --cluster)")
                        }
                        return try await engine.denoise(z, t: t, method: method).values
                    }
                    guard let network else { throw PSPCError.invalidArgument("the network needs --network or --local-network") }
                    return try await network(z, t) { _ in }
                },
                progress: { step in progress(base + step * count, total) })
            if let bad = samples.firstIndex(where: { !$0.isFinite }) {
                throw PSPCError.nonFiniteInput("\(variant.label) produced a non-finite sample (sample \(bad / shape.dimension))")
            }
            try run.writeNPY(Sweep.npy(samples, count: count, shape: shape), to: samplesFile(variant))
        }
    }

    /// Pairwise similarity of the stored samples: `pearson[a][b]`, `meanL2[a][b]`.
    public func similarity() throws -> (pearson: [[Double]], meanL2: [[Double]]) {
        let dim = shape.dimension
        let samples = try variants.map { try Sweep.readImages(run.file(samplesFile($0)), shape: shape) }
        var pearson = [[Double]](repeating: [Double](repeating: 0, count: variants.count), count: variants.count)
        var meanL2 = pearson
        for a in variants.indices {
            for b in variants.indices {
                var p = 0.0, l = 0.0
                for i in 0..<count {
                    let x = samples[a][(i * dim)..<((i + 1) * dim)], y = samples[b][(i * dim)..<((i + 1) * dim)]
                    p += Metrics.pearson(x, y)
                    l += Metrics.l2(x, y)
                }
                pearson[a][b] = p / Double(count)
                meanL2[a][b] = l / Double(count)
            }
        }
        return (pearson, meanL2)
    }

    /// similarity.csv, similarity.json and samples.png (one row per variant).
    public func writeResults() throws {
        let (pearson, meanL2) = try similarity()
        let labels = variants.map(\.label)
        var text = "method_a,method_b,pearson,mean_l2\n"
        for a in labels.indices {
            for b in labels.indices {
                text += CSVText.line([labels[a], labels[b], RunNumber.text(pearson[a][b]), RunNumber.text(meanL2[a][b])])
            }
        }
        try run.writeText(text, to: "similarity.csv")
        try run.writeJSON(
            .object([
                ("labels", .strings(labels)), ("pearson", .array(pearson.map { .doubles($0) })),
                ("mean_l2", .array(meanL2.map { .doubles($0) })),
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
