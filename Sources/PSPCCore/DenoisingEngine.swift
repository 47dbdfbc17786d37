import Foundation

/// The coordinator's reduction logic: it scatters partial-sum requests to every source (shard), merges the
/// answers exactly, and finishes each method. The same code serves in-process shards and remote workers.
public actor DenoisingEngine {
    public let sources: [any PartialSumSource]
    public let shape: ImageShape
    /// Queries per request; large enough to amortise BLAS calls, small enough to bound memory.
    public let batchSize: Int
    /// Ask all sources at once (remote workers) or one after another (in-process shards that each use
    /// every core).
    public let concurrentSources: Bool
    public let batchesInFlight: Int
    /// When set, every request goes to all shards through it at once (see `PartialSumGroup`).
    public let group: (any PartialSumGroup)?
    private var gaussianCache: Task<GaussianModel, Error>?

    /// `batchesInFlight` > 1 overlaps batches (for remote sources); in-process shards already use every core.
    /// `group`, when given, answers for `sources` together (a cluster: one frame per worker per request).
    public init(
        sources: [any PartialSumSource], batchSize: Int = 256, concurrentSources: Bool = false, batchesInFlight: Int = 1,
        group: (any PartialSumGroup)? = nil
    ) throws {
        guard let first = sources.first else { throw PSPCError.invalidArgument("the engine needs at least one shard") }
        for source in sources where source.shape != first.shape {
            throw PSPCError.shapeMismatch("shards hold images of different shapes (\(source.shape) and \(first.shape))")
        }
        guard sources.contains(where: { $0.imageCount > 0 }) else {
            throw PSPCError.invalidArgument("the training set is empty")
        }
        self.sources = sources
        self.shape = first.shape
        self.batchSize = max(1, batchSize)
        self.concurrentSources = concurrentSources
        self.batchesInFlight = max(1, batchesInFlight)
        self.group = group
    }

    /// Training images over all shards (x-flipped copies included).
    public var imageCount: Int { sources.reduce(0) { $0 + $1.imageCount } }

    /// Result of a denoise call: `[count, C, H, W]` float64, and for PSPC-Flex how many pixel values
    /// (over all queries) no mask covered and were taken from the empirical denoiser.
    public struct Output: Sendable {
        public var values: [Double]
        public var uncoveredPixels: Int
    }

    /// D(z, t) for every query of `z` (`[count, C, H, W]`). `firstQueryIndex` numbers the queries for seeded
    /// methods (CFDM), so that splitting a file into calls does not change its noise. `progress(done)` is
    /// called after each batch with the number of queries finished.
    public func denoise(
        _ z: [Double], t: Double, method: DenoiseMethod, firstQueryIndex: Int = 0,
        progress: @Sendable (Int) -> Void = { _ in }
    ) async throws -> Output {
        let dim = shape.dimension
        guard z.count % dim == 0 else {
            throw PSPCError.shapeMismatch("queries hold \(z.count) values, not a multiple of \(shape) = \(dim)")
        }
        try Self.validate(z, t: t, dim: dim)
        let count = z.count / dim
        let starts = Array(stride(from: 0, to: count, by: batchSize))
        var parts = [Output?](repeating: nil, count: starts.count)
        var done = 0
        // Up to `batchesInFlight` batches at once (remote shards compute while others travel); results are
        // placed by batch index, so the output never depends on the order answers arrive in.
        try await withThrowingTaskGroup(of: (Int, Output).self) { group in
            var next = 0
            func launch() {
                let i = next, start = starts[i], n = min(batchSize, count - start)
                let batch = QueryBatch(values: Array(z[(start * dim)..<((start + n) * dim)]), shape: shape)
                group.addTask { (i, try await self.denoiseBatch(batch, t: t, method: method, firstQueryIndex: firstQueryIndex + start)) }
                next += 1
            }
            while next < starts.count && next < batchesInFlight { launch() }
            while let (i, part) = try await group.next() {
                parts[i] = part
                done += part.values.count / dim
                progress(done)
                if next < starts.count { launch() }
            }
        }
        var out = Output(values: [], uncoveredPixels: 0)
        out.values.reserveCapacity(z.count)
        for part in parts {
            out.values += part!.values
            out.uncoveredPixels += part!.uncoveredPixels
        }
        return out
    }

    /// The t every method computes exactly: logits are -||z - x_i||^2 / (2 t^2). With t >= 1e-140, t^2 >= 1e-280
    /// is a normal double and 1/(2 t^2) <= 5e279 is finite; with t <= 1e140, t^2 <= 1e280 and 1/(2 t^2) >= 5e-281
    /// stays normal. Bounding query values by `maxQueryMagnitude` (1e9; training images are pixel values, far
    /// inside it) keeps ||z - x_i||^2 <= dim (2e9)^2 = 4e18 dim, so for dim <= 1e9 the squared distance is
    /// <= 4e27 and every logit is >= -4e27 * 5e279 = -2e307 > -Double.greatestFiniteMagnitude: finite, so the
    /// softmax keeps at least its largest term (exp(0) = 1) and never divides 0 by 0.
    public static let tRange: ClosedRange<Double> = 1e-140...1e140
    public static let maxQueryMagnitude = 1e9

    /// Checks `t` and the query values before any method runs; every error names the range it left.
    static func validate(_ z: [Double], t: Double, dim: Int) throws {
        guard t > 0 && t.isFinite else {
            throw PSPCError.invalidArgument(
                "t must be positive and finite, got \(t) (the representable range is [\(tRange.lowerBound), \(tRange.upperBound)])")
        }
        guard tRange.contains(t) else {
            throw PSPCError.invalidArgument(
                "t = \(t) is outside the representable range [\(tRange.lowerBound), \(tRange.upperBound)]")
        }
        if let bad = z.firstIndex(where: { !$0.isFinite }) {
            throw PSPCError.nonFiniteInput(
                "query \(bad / dim) holds a non-finite value (\(z[bad])) at element \(bad % dim) (index \(bad))")
        }
        if let bad = z.firstIndex(where: { abs($0) > maxQueryMagnitude }) {
            throw PSPCError.invalidArgument(
                "query \(bad / dim) holds \(z[bad]) at element \(bad % dim) (index \(bad)), outside the representable "
                    + "range [-\(maxQueryMagnitude), \(maxQueryMagnitude)]")
        }
    }

    private func denoiseBatch(_ batch: QueryBatch, t: Double, method: DenoiseMethod, firstQueryIndex: Int)
        async throws -> Output
    {
        switch method {
        case .empirical:
            return Output(values: try await empirical(batch, t: t), uncoveredPixels: 0)
        case .pspcSquare(let schedule):
            let s = schedule.value(at: t)
            let crops = CropSet.square(patchSize: s)
            try crops.validate(for: shape)
            if s == shape.height && s == shape.width {
                // One crop covering the image: the composite is the empirical denoiser.
                return Output(values: try await empirical(batch, t: t), uncoveredPixels: 0)
            }
            return try await composite(batch, t: t, crops: crops)
        case .pspcFlex(let flex):
            guard flex.height == shape.height && flex.width == shape.width else {
                throw PSPCError.shapeMismatch(
                    "heatmaps are for \(flex.height)x\(flex.width) images, the training set is \(shape)")
            }
            return try await composite(batch, t: t, crops: .masks(flex.masks(at: t)))
        case .gaussian:
            return Output(values: try await gaussianModel().denoise(batch.values, t: t), uncoveredPixels: 0)
        case .cfdm(let smoothing, let copies, let seed):
            guard copies >= 1 else { throw PSPCError.invalidArgument("CFDM needs at least one copy, got \(copies)") }
            guard smoothing >= 0 && smoothing.isFinite else {
                throw PSPCError.invalidArgument("CFDM smoothing must be finite and >= 0, got \(smoothing)")
            }
            return Output(
                values: try await cfdm(
                    batch, t: t, smoothing: smoothing, copies: copies, seed: seed,
                    firstQueryIndex: firstQueryIndex),
                uncoveredPixels: 0)
        case .ls(let schedule):
            return Output(
                values: try await windowPosterior(batch, t: t, patchSize: schedule.value(at: t), equivariant: false),
                uncoveredPixels: 0)
        case .els(let schedule):
            return Output(
                values: try await windowPosterior(batch, t: t, patchSize: schedule.value(at: t), equivariant: true),
                uncoveredPixels: 0)
        }
    }

    // MARK: - Scatter and gather

    /// Sends `request` to every source and returns the answers in source order (so the merge order, and
    /// hence the rounding, never depends on which answer arrives first).
    private func gather(_ request: PartialRequest) async throws -> [PartialResponse] {
        if let group {
            return try await group.evaluate(request, shards: sources.indices.filter { sources[$0].imageCount > 0 })
        }
        if !concurrentSources {
            var answers: [PartialResponse] = []
            for source in sources where source.imageCount > 0 { answers.append(try await source.evaluate(request)) }
            return answers
        }
        let active = sources.filter { $0.imageCount > 0 }
        return try await withThrowingTaskGroup(of: (Int, PartialResponse).self) { group in
            for (i, source) in active.enumerated() {
                group.addTask { (i, try await source.evaluate(request)) }
            }
            var answers = [PartialResponse?](repeating: nil, count: active.count)
            for try await (i, answer) in group { answers[i] = answer }
            return answers.map { $0! }
        }
    }

    private func mergedSoftmax(_ request: PartialRequest, slots: Int, valueLength: Int) async throws -> SoftmaxPartials
    {
        var merged = SoftmaxPartials.empty(slots: slots, valueLength: valueLength)
        for answer in try await gather(request) {
            guard case .softmax(let partial) = answer, partial.slots == slots, partial.valueLength == valueLength else {
                throw PSPCError.shapeMismatch("a shard answered a softmax request with the wrong kind or size")
            }
            merged.merge(partial)
        }
        return merged
    }

    // MARK: - Methods

    func empirical(_ batch: QueryBatch, t: Double) async throws -> [Double] {
        let merged = try await mergedSoftmax(
            .empirical(queries: batch, t: t), slots: batch.count,
            valueLength: shape.dimension)
        return try merged.means()
    }

    /// Two rounds: merge the per-crop normalisers log Z_C over all shards, then sum the shards' composite
    /// numerators and divide by each pixel's coverage. Pixels no crop covers take the empirical value.
    func composite(_ batch: QueryBatch, t: Double, crops: CropSet) async throws -> Output {
        let k = crops.cropCount(for: shape), dim = shape.dimension, hw = shape.pixelCount
        guard k > 0 else {
            return Output(values: try await empirical(batch, t: t), uncoveredPixels: batch.count * hw)
        }
        let normalizers = try await mergedSoftmax(
            .cropNormalizers(queries: batch, t: t, crops: crops), slots: batch.count * k, valueLength: 0)
        let logZ = normalizers.logNormalizers
        var numerator = [Double](repeating: 0, count: batch.count * dim)
        for answer in try await gather(.cropComposite(queries: batch, t: t, crops: crops, logZ: logZ)) {
            guard case .sums(let sums) = answer, sums.count == numerator.count else {
                throw PSPCError.shapeMismatch("a shard answered a composite request with the wrong kind or size")
            }
            for i in numerator.indices { numerator[i] += sums[i] }
        }
        let coverage = crops.coverage(for: shape)
        let uncovered = coverage.filter { $0 == 0 }.count
        var fallback: [Double] = []
        if uncovered > 0 { fallback = try await empirical(batch, t: t) }
        for q in 0..<batch.count {
            for c in 0..<shape.channels {
                for p in 0..<hw {
                    let i = q * dim + c * hw + p
                    numerator[i] = coverage[p] > 0 ? numerator[i] / coverage[p] : fallback[i]
                }
            }
        }
        return Output(values: numerator, uncoveredPixels: uncovered * batch.count)
    }

    /// LS / ELS: one round; the shards' per-pixel partials `[B][H W][C]` merged, their means put back in
    /// `[B, C, H, W]` order.
    func windowPosterior(_ batch: QueryBatch, t: Double, patchSize: Int, equivariant: Bool) async throws -> [Double] {
        try DenoiseMethod.validateWindow(patchSize: patchSize)
        if patchSize >= DenoiseMethod.wholeImageWindow(shape) {
            // Every window covers the whole image from any centre, and each pixel's padding pattern is its own, so
            // both machines are the empirical denoiser: computed as such, at the cost of one whole-image distance
            // per training image instead of one per pixel.
            return try await empirical(batch, t: t)
        }
        let hw = shape.pixelCount, channels = shape.channels
        let merged = try await mergedSoftmax(
            .windowPosterior(queries: batch, t: t, patchSize: patchSize, equivariant: equivariant),
            slots: batch.count * hw, valueLength: channels)
        let means = try merged.means()
        var out = [Double](repeating: 0, count: means.count)
        for q in 0..<batch.count {
            for p in 0..<hw {
                for c in 0..<channels { out[(q * channels + c) * hw + p] = means[(q * hw + p) * channels + c] }
            }
        }
        return out
    }

    /// The Gaussian baseline's mean and eigendecomposition, from the shards' moments (computed once).
    public func gaussianModel() async throws -> GaussianModel {
        if let gaussianCache { return try await gaussianCache.value }
        let task = Task { try await self.computeGaussianModel() }
        gaussianCache = task
        do {
            return try await task.value
        } catch {
            gaussianCache = nil
            throw error
        }
    }

    /// Rows of the outer-product sum asked for at once: each shard's answer stays near 8 MiB (D = 3072: 341 rows,
    /// D = 12288: 85), so neither a frame nor the coordinator holds every shard's whole D x D matrix at once
    /// (3x64x64: 1.2 GB a shard).
    public static func momentRowsPerRequest(dimension: Int) -> Int {
        max(1, min(dimension, (8 << 20) / (8 * dimension)))
    }

    private func computeGaussianModel() async throws -> GaussianModel {
        let dim = shape.dimension, step = Self.momentRowsPerRequest(dimension: dim)
        var total = Moments.zero(dimension: dim)
        for start in stride(from: 0, to: dim, by: step) {
            // Each block is merged over the shards in shard order, as the whole matrix would be: a shard's moments
            // are exactly rounded (InProcessShard.moments), so a block's rows hold the bits they have in the whole
            // sum and the model does not depend on the block size or on which worker answered.
            let rows = start..<min(dim, start + step)
            var block = Moments.zero(dimension: dim, rows: rows)
            for answer in try await gather(.moments(rows: rows)) {
                guard case .moments(let part) = answer, part.sum.count == dim else {
                    throw PSPCError.shapeMismatch("a shard answered a moments request with the wrong kind or size")
                }
                try block.merge(part)
            }
            if start == 0 {
                total.count = block.count
                total.sum = block.sum
            } else if block.count != total.count || block.sum != total.sum {
                throw PSPCError.shapeMismatch("the shards' moments changed between row blocks")
            }
            total.outer.replaceSubrange((start * dim)..<(rows.upperBound * dim), with: block.outer)
        }
        return try GaussianModel(moments: total)
    }

    func cfdm(_ batch: QueryBatch, t: Double, smoothing: Double, copies: Int, seed: UInt64, firstQueryIndex: Int)
        async throws -> [Double]
    {
        let dim = shape.dimension, noise = NormalNoise(seed: seed)
        var out = [Double](repeating: 0, count: batch.values.count)
        // Perturbed copies go through the empirical denoiser in chunks of about one batch.
        let queriesPerChunk = max(1, batchSize / copies)
        var q0 = 0
        while q0 < batch.count {
            let n = min(queriesPerChunk, batch.count - q0)
            var perturbed = [Double](repeating: 0, count: n * copies * dim)
            for q in 0..<n {
                let index = UInt64(firstQueryIndex + q0 + q)
                for c in 0..<copies {
                    let eps = noise.normals(stream: (index << 24) | UInt64(c), count: dim)
                    let row = (q * copies + c) * dim
                    for d in 0..<dim { perturbed[row + d] = batch.values[(q0 + q) * dim + d] + smoothing * eps[d] }
                }
            }
            let denoised = try await empirical(QueryBatch(values: perturbed, shape: shape), t: t)
            let inv = 1 / Double(copies)
            for q in 0..<n {
                for c in 0..<copies {
                    let row = (q * copies + c) * dim
                    for d in 0..<dim { out[(q0 + q) * dim + d] += denoised[row + d] * inv }
                }
            }
            q0 += n
        }
        return out
    }
}
