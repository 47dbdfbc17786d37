import CBLAS
import Foundation
import PSPCKernels

/// A part of the training set evaluated in this process: the engine's compute, and what a worker runs
/// behind the wire. Crop methods run the vector kernels over (query, range of tiles) work items on
/// `threads` threads; the empirical softmax uses float64 BLAS, the moments a kernel whose rounding does not
/// depend on which rows are asked.
public final class InProcessShard: BlockingPartialSumSource {
    public let images: ImageSet
    public let threads: Int
    /// Training images per block of the empirical softmax and the moments (a multiple of 8; tests shrink it to
    /// force ragged edges).
    public let blockImages: Int
    /// How the crop kernels evaluate PSPC-Flex masks.
    public let flexKernel: FlexKernel

    /// Two evaluations of the same mask distances and weights (docs/design.md section 2); they agree to rounding.
    public enum FlexKernel: Sendable {
        /// Row runs over per-row prefix sums: O(runs) per mask and training image.
        case rowRuns
        /// Every listed position (or the complement's) read one by one: O(pixels) per mask; the reference.
        case perPixel
    }

    public var shape: ImageShape { images.shape }
    public var imageCount: Int { images.count }

    public init(
        images: ImageSet, threads: Int = ProcessInfo.processInfo.activeProcessorCount, blockImages: Int? = nil,
        flexKernel: FlexKernel = .rowRuns
    ) {
        self.images = images
        self.flexKernel = flexKernel
        self.threads = max(1, threads)
        let defaultBlock = max(64, (1 << 21) / max(1, images.shape.dimension))
        self.blockImages = max(ImageSet.lanes, ((blockImages ?? defaultBlock) / ImageSet.lanes) * ImageSet.lanes)
    }

    public func evaluate(_ request: PartialRequest) async throws -> PartialResponse {
        try evaluateNow(request)
    }

    /// `evaluate` on the calling thread (it blocks while the shard's threads work). With a `cancellation`
    /// flag, the empirical softmax reads it once per block of training images and the crop methods once per
    /// work item; once it is set the evaluation throws `CancellationError` (the moments, one short pass, run
    /// to the end).
    public func evaluateNow(_ request: PartialRequest, cancellation: CancellationFlag? = nil) throws -> PartialResponse {
        switch request {
        case .empirical(let queries, let t):
            try check(queries, t: t)
            return .softmax(try empirical(queries, t: t, cancellation: cancellation))
        case .cropNormalizers(let queries, let t, let crops):
            try check(queries, t: t)
            try crops.validate(for: shape)
            return .softmax(try cropNormalizers(queries, t: t, crops: crops, cancellation: cancellation))
        case .cropComposite(let queries, let t, let crops, let logZ):
            try check(queries, t: t)
            try crops.validate(for: shape)
            guard logZ.count == queries.count * crops.cropCount(for: shape) else {
                throw PSPCError.shapeMismatch("logZ holds \(logZ.count) values, expected queries x crops")
            }
            return .sums(try cropComposite(queries, t: t, crops: crops, logZ: logZ, cancellation: cancellation))
        case .moments(let rows):
            let rows = rows ?? 0..<shape.dimension
            guard rows.lowerBound >= 0 && rows.upperBound <= shape.dimension else {
                throw PSPCError.invalidArgument(
                    "moments rows \(rows) are outside the \(shape.dimension) rows of \(shape) images")
            }
            return .moments(moments(rows: rows))
        case .windowPosterior(let queries, let t, let patchSize, let equivariant):
            try check(queries, t: t)
            try DenoiseMethod.validateWindow(patchSize: patchSize)
            return .softmax(
                try windowPosterior(
                    queries, t: t, patchSize: patchSize, equivariant: equivariant, cancellation: cancellation))
        }
    }

    private func check(_ queries: QueryBatch, t: Double) throws {
        guard queries.shape == shape else {
            throw PSPCError.shapeMismatch("queries are \(queries.shape) images, the training set is \(shape)")
        }
        guard t > 0 && t.isFinite else { throw PSPCError.invalidArgument("t must be positive and finite, got \(t)") }
    }

    // MARK: - Empirical softmax (BLAS)

    /// For each block of training images: dots = Z X^T (dgemm), logits and weights in place
    /// (`pspc_softmax_block`), then v = v * scale + W X (dgemm).
    func empirical(_ queries: QueryBatch, t: Double, cancellation: CancellationFlag? = nil) throws -> SoftmaxPartials {
        let b = queries.count, dim = shape.dimension
        var result = SoftmaxPartials.empty(slots: b, valueLength: dim)
        guard b > 0, images.count > 0 else { return result }
        let invTwoT2 = 1 / (2 * t * t)
        let qnorm = (0..<b).map { q in
            var n = 0.0
            for d in 0..<dim { n += queries.values[q * dim + d] * queries.values[q * dim + d] }
            return n
        }
        let block = blockImages
        var rows = [Double](repeating: 0, count: block * dim)
        var xnorm = [Double](repeating: 0, count: block)
        var dots = [Double](repeating: 0, count: b * block)
        var scale = [Double](repeating: 0, count: b)
        try images.withTiles { set in
            var first = 0
            while first < images.count {
                try cancellation?.check()
                let n = min(block, images.count - first)
                pspc_tiles_to_rows(set, first, n, &rows, &xnorm)
                cblas_dgemm(
                    CblasRowMajor, CblasNoTrans, CblasTrans, Int32(b), Int32(n), Int32(dim), 1,
                    queries.values, Int32(dim), rows, Int32(dim), 0, &dots, Int32(block))
                pspc_softmax_block(&dots, b, n, block, qnorm, xnorm, invTwoT2, &result.m, &result.s, &scale)
                for q in 0..<b where scale[q] != 1 {
                    let f = scale[q]
                    for d in 0..<dim { result.v[q * dim + d] *= f }
                }
                cblas_dgemm(
                    CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(b), Int32(dim), Int32(n), 1,
                    dots, Int32(block), rows, Int32(dim), 1, &result.v, Int32(dim))
                first += n
            }
        }
        return result
    }

    // MARK: - Crop kernels

    /// Splits the tiles into up to 8 chunks of at least 64 tiles. The split depends on the shard alone, never on
    /// the thread count, so a shard gives bit-identical partials on any worker.
    private func tileChunks() -> [Range<Int>] {
        let tiles = images.tileCount
        let chunks = max(1, min(8, tiles / 64))
        return (0..<chunks).map { c in (c * tiles / chunks)..<((c + 1) * tiles / chunks) }
    }

    /// The C views of a mask set for the kernel in use: per-pixel rows (`pspc_masks`) or row runs.
    private struct MaskViews {
        var pixels: UnsafePointer<pspc_masks>?
        var runs: UnsafePointer<pspc_mask_runs>?
    }

    private func withMasks<R>(_ crops: CropSet, _ body: (MaskViews) -> R) -> R {
        guard case .masks(let masks) = crops else { return body(MaskViews()) }
        if flexKernel == .rowRuns {
            let runs = masks.kernelRuns(width: shape.width)
            return runs.offsets.withUnsafeBufferPointer { offsets in
                runs.entries.withUnsafeBufferPointer { entries in
                    masks.multiplicity.withUnsafeBufferPointer { multiplicity in
                        runs.slotOffsets.withUnsafeBufferPointer { slotOffsets in
                            runs.slotMasks.withUnsafeBufferPointer { slotMasks in
                                let view = pspc_mask_runs(
                                    offsets: offsets.baseAddress, entries: entries.baseAddress,
                                    multiplicity: multiplicity.baseAddress, crop_count: masks.count,
                                    slot_offsets: slotOffsets.baseAddress, slot_masks: slotMasks.baseAddress)
                                return withUnsafePointer(to: view) { body(MaskViews(runs: $0)) }
                            }
                        }
                    }
                }
            }
        }
        let rows = masks.kernelRows()
        return rows.offsets.withUnsafeBufferPointer { offsets in
            rows.pixels.withUnsafeBufferPointer { pixels in
                masks.multiplicity.withUnsafeBufferPointer { multiplicity in
                    rows.complement.withUnsafeBufferPointer { complement in
                        let view = pspc_masks(
                            offsets: offsets.baseAddress, pixels: pixels.baseAddress,
                            multiplicity: multiplicity.baseAddress, complement: complement.baseAddress,
                            crop_count: masks.count)
                        return withUnsafePointer(to: view) { body(MaskViews(pixels: $0)) }
                    }
                }
            }
        }
    }

    /// One unit of crop work: a query against a range of tiles, with the C views the kernels take.
    struct CropWork: @unchecked Sendable {
        let index: Int
        let query: Int
        let tiles: Range<Int>
        let set: UnsafePointer<pspc_image_tiles>
        let masks: UnsafePointer<pspc_masks>?
        let runs: UnsafePointer<pspc_mask_runs>?
        /// The query, `[C, H, W]`.
        let z: UnsafePointer<Double>
        let scratch: UnsafeMutablePointer<Double>
    }

    /// The C views shared read-only by every worker.
    private struct KernelViews: @unchecked Sendable {
        let set: UnsafePointer<pspc_image_tiles>
        let masks: UnsafePointer<pspc_masks>?
        let runs: UnsafePointer<pspc_mask_runs>?
        let z: UnsafePointer<Double>
    }

    /// Runs `body` for every (query, tile chunk) pair, numbered query-major, on the shard's threads. Once
    /// `cancellation` is set the items not yet started are skipped and this throws `CancellationError`.
    private func forEachCropWork(
        _ queries: QueryBatch, crops: CropSet, chunks: [Range<Int>], cancellation: CancellationFlag?,
        _ body: @Sendable (CropWork) -> Void
    ) throws {
        let dim = shape.dimension
        let scratchSize = pspc_crop_scratch_doubles(
            Int32(shape.channels), Int32(shape.height), Int32(shape.width), crops.cropCount(for: shape))
        images.withTiles { set in
            withMasks(crops) { masks in
                queries.values.withUnsafeBufferPointer { z in
                    let views = KernelViews(set: set, masks: masks.pixels, runs: masks.runs, z: z.baseAddress!)
                    parallelFor(count: queries.count * chunks.count, threads: threads) { item in
                        if cancellation?.isCancelled == true { return }
                        let scratch = UnsafeMutablePointer<Double>.allocate(capacity: scratchSize)
                        defer { scratch.deallocate() }
                        let q = item / chunks.count
                        body(
                            CropWork(
                                index: item, query: q, tiles: chunks[item % chunks.count], set: views.set,
                                masks: views.masks, runs: views.runs, z: views.z + q * dim, scratch: scratch))
                    }
                }
            }
        }
        try cancellation?.check()
    }

    func cropNormalizers(
        _ queries: QueryBatch, t: Double, crops: CropSet, cancellation: CancellationFlag? = nil
    ) throws -> SoftmaxPartials {
        let b = queries.count, k = crops.cropCount(for: shape), lanes = ImageSet.lanes
        let chunks = tileChunks()
        let items = b * chunks.count
        // Per work item and crop, (m, s) with the 8 lanes already merged, in lane order.
        let m = SharedBuffer<Double>.allocate(items * k, value: -.infinity)
        let s = SharedBuffer<Double>.allocate(items * k, value: 0)
        defer {
            m.base.deallocate()
            s.base.deallocate()
        }
        let invTwoT2 = 1 / (2 * t * t)
        try forEachCropWork(queries, crops: crops, chunks: chunks, cancellation: cancellation) { work in
            let laneM = UnsafeMutablePointer<Double>.allocate(capacity: k * lanes)
            let laneS = UnsafeMutablePointer<Double>.allocate(capacity: k * lanes)
            defer {
                laneM.deallocate()
                laneS.deallocate()
            }
            laneM.initialize(repeating: -.infinity, count: k * lanes)
            laneS.initialize(repeating: 0, count: k * lanes)
            let lo = work.tiles.lowerBound, hi = work.tiles.upperBound
            if let runs = work.runs {
                pspc_runs_normalizers(work.set, lo, hi, work.z, runs, invTwoT2, laneM, laneS, work.scratch)
            } else if let masks = work.masks {
                pspc_mask_normalizers(work.set, lo, hi, work.z, masks, invTwoT2, laneM, laneS, work.scratch)
            } else if case .square(let patch) = crops {
                pspc_square_normalizers(work.set, lo, hi, work.z, Int32(patch), invTwoT2, laneM, laneS, work.scratch)
            }
            for crop in 0..<k {
                var (m1, s1) = (-Double.infinity, 0.0)
                for lane in 0..<lanes {
                    (m1, s1) = Self.mergeNormalizer(m1, s1, laneM[crop * lanes + lane], laneS[crop * lanes + lane])
                }
                m.base[work.index * k + crop] = m1
                s.base[work.index * k + crop] = s1
            }
        }
        // Merge the chunks of each query in order.
        var result = SoftmaxPartials.empty(slots: b * k)
        for item in 0..<items {
            let q = item / chunks.count
            for crop in 0..<k {
                let slot = q * k + crop
                (result.m[slot], result.s[slot]) = Self.mergeNormalizer(
                    result.m[slot], result.s[slot], m.base[item * k + crop], s.base[item * k + crop])
            }
        }
        return result
    }

    /// The (m, s) merge of docs/design.md section 2 without values.
    @inline(__always)
    static func mergeNormalizer(_ m1: Double, _ s1: Double, _ m2: Double, _ s2: Double) -> (Double, Double) {
        if m2 == -.infinity { return (m1, s1) }
        if m1 == -.infinity { return (m2, s2) }
        let mNew = max(m1, m2)
        return (mNew, s1 * exp(m1 - mNew) + s2 * exp(m2 - mNew))
    }

    func cropComposite(
        _ queries: QueryBatch, t: Double, crops: CropSet, logZ: [Double], cancellation: CancellationFlag? = nil
    ) throws -> [Double] {
        let b = queries.count, k = crops.cropCount(for: shape), dim = shape.dimension
        let chunks = tileChunks()
        let items = b * chunks.count
        let partial = SharedBuffer<Double>.allocate(items * dim, value: 0)
        let logZCopy = SharedBuffer<Double>.allocate(logZ.count, value: 0)
        defer {
            partial.base.deallocate()
            logZCopy.base.deallocate()
        }
        for i in logZ.indices { logZCopy.base[i] = logZ[i] }
        let invTwoT2 = 1 / (2 * t * t)
        try forEachCropWork(queries, crops: crops, chunks: chunks, cancellation: cancellation) { work in
            let lz = UnsafePointer(logZCopy.base + work.query * k), acc = partial.base + work.index * dim
            let lo = work.tiles.lowerBound, hi = work.tiles.upperBound
            if let runs = work.runs {
                pspc_runs_composite(work.set, lo, hi, work.z, runs, invTwoT2, lz, acc, work.scratch)
            } else if let masks = work.masks {
                pspc_mask_composite(work.set, lo, hi, work.z, masks, invTwoT2, lz, acc, work.scratch)
            } else if case .square(let patch) = crops {
                pspc_square_composite(work.set, lo, hi, work.z, Int32(patch), invTwoT2, lz, acc, work.scratch)
            }
        }
        var result = [Double](repeating: 0, count: b * dim)
        for item in 0..<items {
            let q = item / chunks.count
            for d in 0..<dim { result[q * dim + d] += partial.base[item * dim + d] }
        }
        return result
    }

    // MARK: - Window posteriors (LS / ELS)

    /// Per (query, tile chunk) work item, `pspc_window_posterior` keeps per-lane state for every pixel; the lanes
    /// are merged in lane order, then the chunks of each query in chunk order (the split depends on the shard
    /// alone, so a shard answers bit-identically on any worker).
    func windowPosterior(
        _ queries: QueryBatch, t: Double, patchSize: Int, equivariant: Bool, cancellation: CancellationFlag? = nil
    ) throws -> SoftmaxPartials {
        if equivariant, let tables = try elsByFactorTables(queries, t: t, patchSize: patchSize, cancellation: cancellation) {
            return tables
        }
        return try windowPosteriorByDistances(
            queries, t: t, patchSize: patchSize, equivariant: equivariant, edgesOnly: false, cancellation: cancellation)
    }

    /// Memory the ELS factor tables may take per batch of 8 queries (bytes): 256 levels x 8 lanes x 8 bytes per
    /// query element, 12.8 MB at 1x28x28 and 201 MB at 3x64x64; larger images use the distance kernel.
    public static let elsTableBudget = 256 << 20

    /// `PSPC_ELS_TABLES=off` makes ELS use the distance kernel everywhere (for benchmarks that compare the two).
    static let elsTablesEnabled = ProcessInfo.processInfo.environment["PSPC_ELS_TABLES"] != "off"

    /// ELS through factor tables (`pspc_els_interior`) for the interior pixels and the distance kernel for the
    /// edge pixels; nil when the images have no interior pixels for this window or the tables would not fit
    /// `elsTableBudget`. A weight is exp(-(D - C) / 2t^2) with C the query window's distance to its nearest pixel
    /// levels, so the interior partial of pixel p is m = -C / 2t^2 + log(max weight), s and v the sums divided
    /// by that max weight: the same (m, s, v) the distance kernel gives, without the e^-40 pruning. Where the
    /// largest weight of a query pixel falls below 1e-200 (the table's reference is far from every candidate:
    /// tiny t, large windows), that query is computed by the distance kernel instead, so nothing underflows.
    func elsByFactorTables(
        _ queries: QueryBatch, t: Double, patchSize: Int, cancellation: CancellationFlag?
    ) throws -> SoftmaxPartials? {
        let r = patchSize / 2, rows = shape.height, cols = shape.width, channels = shape.channels
        let hw = shape.pixelCount, dim = shape.dimension, lanes = ImageSet.lanes, b = queries.count
        guard Self.elsTablesEnabled, rows > 2 * r, cols > 2 * r, channels <= 4, dim * 256 * lanes * 8 <= Self.elsTableBudget, b > 0,
            images.count > 0
        else {
            return nil
        }
        var result = try windowPosteriorByDistances(
            queries, t: t, patchSize: patchSize, equivariant: true, edgesOnly: true, cancellation: cancellation)
        let invTwoT2 = 1 / (2 * t * t)
        // Images per work item: a function of the shard alone (at most 64 items), so the sums are added in the
        // same order on every worker.
        let perItem = max(16, (images.count + 63) / 64)
        let items = (images.count + perItem - 1) / perItem
        let g = SharedBuffer<Double>.allocate(dim * 256 * lanes, value: 0)
        let nearest = SharedBuffer<Double>.allocate(dim * lanes, value: 0)
        let sums = SharedBuffer<Double>.allocate(items * hw * lanes, value: 0)
        let values = SharedBuffer<Double>.allocate(items * hw * channels * lanes, value: 0)
        let maxima = SharedBuffer<Double>.allocate(items * hw * lanes, value: 0)
        defer {
            for buffer in [g, nearest, sums, values, maxima] { buffer.base.deallocate() }
        }
        let scratchSize = pspc_els_scratch_doubles(Int32(channels), Int32(rows), Int32(cols), Int32(patchSize))
        var fallback: [Int] = []
        for first in stride(from: 0, to: b, by: lanes) {
            try cancellation?.check()
            // Lane-major queries; lanes past the batch repeat its last query.
            var z = [Double](repeating: 0, count: lanes * dim)
            for lane in 0..<lanes {
                let q = min(first + lane, b - 1)
                for d in 0..<dim { z[lane * dim + d] = queries.values[q * dim + d] }
            }
            pspc_els_tables(z, dim, invTwoT2, g.base, nearest.base)
            sums.base.update(repeating: 0, count: items * hw * lanes)
            values.base.update(repeating: 0, count: items * hw * channels * lanes)
            maxima.base.update(repeating: 0, count: items * hw * lanes)
            images.withTiles { set in
                let views = ELSViews(
                    set: set, g: g.base, s: sums.base, v: values.base, wmax: maxima.base)
                parallelFor(count: items, threads: threads) { item in
                    if cancellation?.isCancelled == true { return }
                    let scratch = UnsafeMutablePointer<Double>.allocate(capacity: scratchSize)
                    defer { scratch.deallocate() }
                    let lo = item * perItem, hi = min(images.count, lo + perItem)
                    pspc_els_interior(
                        views.set, lo, hi, views.g, Int32(patchSize), views.s + item * hw * lanes,
                        views.v + item * hw * channels * lanes, views.wmax + item * hw * lanes, scratch)
                }
            }
            try cancellation?.check()
            for lane in 0..<min(lanes, b - first) {
                let q = first + lane
                var underflow = false
                for y in r..<(rows - r) {
                    for x in r..<(cols - r) {
                        let p = y * cols + x
                        var total = 0.0, top = 0.0
                        var value = [Double](repeating: 0, count: channels)
                        for item in 0..<items {
                            total += sums.base[(item * hw + p) * lanes + lane]
                            top = max(top, maxima.base[(item * hw + p) * lanes + lane])
                            for c in 0..<channels {
                                value[c] += values.base[((item * hw + p) * channels + c) * lanes + lane]
                            }
                        }
                        guard top >= 1e-200 else {
                            underflow = true
                            break
                        }
                        var offset = 0.0
                        for c in 0..<channels {
                            for dy in -r...r {
                                for dx in -r...r {
                                    offset += nearest.base[(c * hw + (y + dy) * cols + x + dx) * lanes + lane]
                                }
                            }
                        }
                        let slot = q * hw + p
                        result.m[slot] = -offset * invTwoT2 + log(top)
                        result.s[slot] = total / top
                        for c in 0..<channels { result.v[slot * channels + c] = value[c] / top }
                    }
                    if underflow { break }
                }
                if underflow { fallback.append(q) }
            }
        }
        for q in fallback {
            let one = QueryBatch(values: Array(queries.values[(q * dim)..<((q + 1) * dim)]), shape: shape)
            let exact = try windowPosteriorByDistances(
                one, t: t, patchSize: patchSize, equivariant: true, edgesOnly: false, cancellation: cancellation)
            for p in 0..<hw {
                result.m[q * hw + p] = exact.m[p]
                result.s[q * hw + p] = exact.s[p]
                for c in 0..<channels { result.v[(q * hw + p) * channels + c] = exact.v[p * channels + c] }
            }
        }
        return result
    }

    /// The C views every ELS table work item reads and writes (disjoint per item).
    private struct ELSViews: @unchecked Sendable {
        let set: UnsafePointer<pspc_image_tiles>
        let g: UnsafePointer<Double>
        let s: UnsafeMutablePointer<Double>
        let v: UnsafeMutablePointer<Double>
        let wmax: UnsafeMutablePointer<Double>
    }

    /// LS and ELS by window distances (`pspc_window_posterior`); with `edgesOnly` (ELS) the interior pixels keep
    /// their empty partials.
    func windowPosteriorByDistances(
        _ queries: QueryBatch, t: Double, patchSize: Int, equivariant: Bool, edgesOnly: Bool,
        cancellation: CancellationFlag?
    ) throws -> SoftmaxPartials {
        let b = queries.count, hw = shape.pixelCount, channels = shape.channels, lanes = ImageSet.lanes
        let dim = shape.dimension
        var result = SoftmaxPartials.empty(slots: b * hw, valueLength: channels)
        guard b > 0, images.count > 0 else { return result }
        let chunks = tileChunks()
        let items = b * chunks.count
        // Per work item: (m, s) per pixel and v per pixel and channel, lanes already merged.
        let m = SharedBuffer<Double>.allocate(items * hw, value: -.infinity)
        let s = SharedBuffer<Double>.allocate(items * hw, value: 0)
        let v = SharedBuffer<Double>.allocate(items * hw * channels, value: 0)
        defer {
            m.base.deallocate()
            s.base.deallocate()
            v.base.deallocate()
        }
        let invTwoT2 = 1 / (2 * t * t)
        let scratchSize = pspc_window_scratch_doubles(Int32(shape.channels), Int32(shape.height), Int32(shape.width))
        images.withTiles { set in
            queries.values.withUnsafeBufferPointer { z in
                let views = WindowViews(set: set, z: z.baseAddress!)
                parallelFor(count: items, threads: threads) { item in
                    if cancellation?.isCancelled == true { return }
                    let q = item / chunks.count, tiles = chunks[item % chunks.count]
                    let scratch = UnsafeMutablePointer<Double>.allocate(capacity: scratchSize)
                    let laneM = UnsafeMutablePointer<Double>.allocate(capacity: hw * lanes)
                    let laneS = UnsafeMutablePointer<Double>.allocate(capacity: hw * lanes)
                    let laneV = UnsafeMutablePointer<Double>.allocate(capacity: hw * channels * lanes)
                    defer {
                        scratch.deallocate()
                        laneM.deallocate()
                        laneS.deallocate()
                        laneV.deallocate()
                    }
                    laneM.initialize(repeating: -.infinity, count: hw * lanes)
                    laneS.initialize(repeating: 0, count: hw * lanes)
                    laneV.initialize(repeating: 0, count: hw * channels * lanes)
                    pspc_window_posterior(
                        views.set, tiles.lowerBound, tiles.upperBound, views.z + q * dim, Int32(patchSize),
                        equivariant ? 1 : 0, edgesOnly ? 1 : 0, invTwoT2, laneM, laneS, laneV, scratch)
                    for p in 0..<hw {
                        let slot = item * hw + p
                        for lane in 0..<lanes {
                            let m2 = laneM[p * lanes + lane]
                            if m2 == -.infinity { continue }
                            let m1 = m.base[slot], mNew = max(m1, m2)
                            let a = m1 == -.infinity ? 0 : exp(m1 - mNew), c = exp(m2 - mNew)
                            m.base[slot] = mNew
                            s.base[slot] = s.base[slot] * a + laneS[p * lanes + lane] * c
                            for ch in 0..<channels {
                                let vi = slot * channels + ch
                                v.base[vi] = v.base[vi] * a + laneV[(p * channels + ch) * lanes + lane] * c
                            }
                        }
                    }
                }
            }
        }
        try cancellation?.check()
        // Merge the chunks of each query in order.
        for item in 0..<items {
            let q = item / chunks.count
            let part = SoftmaxPartials(
                m: Array(UnsafeBufferPointer(start: m.base + item * hw, count: hw)),
                s: Array(UnsafeBufferPointer(start: s.base + item * hw, count: hw)),
                v: Array(UnsafeBufferPointer(start: v.base + item * hw * channels, count: hw * channels)),
                valueLength: channels)
            result.merge(part, intoSlotsFrom: q * hw)
        }
        return result
    }

    /// The C views every window work item reads.
    private struct WindowViews: @unchecked Sendable {
        let set: UnsafePointer<pspc_image_tiles>
        let z: UnsafePointer<Double>
    }

    // MARK: - Moments

    /// Count, sum x and rows `rows` of sum x x^T, exactly rounded. With x = (2u - 255) / 255 for the uint8 level
    /// u, x_a x_b = (4 u_a u_b - 510 u_a - 510 u_b + 65025) / 65025, so the engine sums the integers u and u_a u_b
    /// (dgemm on integer-valued doubles: every partial sum is an integer below 2^53 for fewer than 1.38e11 images,
    /// so it is exact in any order and on any number of threads) and divides once. The answer is the correctly
    /// rounded moments: the same bits for any block of rows, any BLAS, and the torch worker.
    func moments(rows: Range<Int>) -> Moments {
        let dim = shape.dimension
        var result = Moments.zero(dimension: dim, rows: rows)
        let n = images.count
        result.count = n
        guard n > 0, !rows.isEmpty else { return result }
        let pixels = images.images()
        let block = blockImages
        var u = [Double](repeating: 0, count: block * dim)
        var levelSums = [Double](repeating: 0, count: dim)
        var products = [Double](repeating: 0, count: rows.count * dim)
        var first = 0
        while first < n {
            let count = min(block, n - first)
            for i in 0..<(count * dim) {
                u[i] = Double(pixels[first * dim + i])
                levelSums[i % dim] += u[i]
            }
            // products[rows, :] += U[:, rows]^T U.
            u.withUnsafeBufferPointer { ub in
                cblas_dgemm(
                    CblasRowMajor, CblasTrans, CblasNoTrans, Int32(rows.count), Int32(dim), Int32(count), 1,
                    ub.baseAddress! + rows.lowerBound, Int32(dim), ub.baseAddress!, Int32(dim), 1, &products,
                    Int32(dim))
            }
            first += count
        }
        let images = Double(n)
        for d in 0..<dim { result.sum[d] = (2 * levelSums[d] - 255 * images) / 255 }
        for (r, a) in rows.enumerated() {
            for b in 0..<dim {
                let numerator = 4 * products[r * dim + b] - 510 * levelSums[a] - 510 * levelSums[b] + 65025 * images
                result.outer[r * dim + b] = numerator / 65025
            }
        }
        return result
    }
}
