import Dispatch
import Foundation
import PSPCCore
import PSPCData
import XCTest

/// Every method against the literal float64 reference (Reference.swift) on real images of three shapes
/// (ExactnessData.swift): 1x28x28 Fashion-MNIST with and without x-flip, 3x24x40 colour scenes (H != W, x-flip)
/// and 3x32x32 colour scenes; queries z = x0 + t eps from images outside the training set, at every t of the
/// 18-step EDM grid (0.002 to 80). Errors are relative: max |engine - reference| / max |reference|.
///
/// The bound. Both sides are float64 but not the same float64: the engine's empirical softmax takes distances
/// as ||z||^2 + ||x||^2 - 2 z.x (BLAS), its crop kernels take box sums of squared differences from summed-area
/// tables, whose absolute error is ~1e-16 of the whole image's squared distance, and evaluate exp by a degree-9
/// polynomial (relative error <= 7e-12, PSPCKernels). A logit error delta moves the posterior mean by at most
/// delta times the spread of the values it averages, and the exp error moves it by <= 7e-12 times that spread
/// (values lie in [-1, 1], spread <= 2). At t = 0.002 a distance error eps_d becomes a logit error
/// eps_d / (2 t^2) = 1.25e5 eps_d, so summed-area rounding of ~1e-13 (the image's squared distance is 1e2 to
/// 1e3) reaches ~1e-8 in the logits of crops whose training patches are one grey level apart, which share the
/// weight at that t; the composite averages many crops, so what reaches a pixel is smaller still. The Gaussian
/// eigendecomposition resolves eigenvalues only to ~1e-16 of the largest; the engine zeroes those below
/// D eps lambda_max (kept, t^2 = 4e-6 divided them into errors of 2e-9). The bounds below are the worst errors
/// measured over all shapes and t (docs/design.md section 8) rounded up to a power of ten: tight enough that
/// any mistake in indexing, channel handling, coverage or merging (errors of order 1e-3 and up) fails by many
/// orders.
final class ExactnessTests: XCTestCase {
    static let grid = EDM.grid(steps: 18)

    /// Relative bounds per method (see above).
    static let bounds: [String: Double] = [
        "empirical": 1e-11, "pspc-square": 1e-10, "pspc-flex": 1e-10, "gaussian": 1e-11, "cfdm": 1e-11,
        "ls": 1e-11, "els": 1e-11,
    ]

    static let cases: [ExactnessCase] = [
        .gray28(trainCount: 80, xflip: false), .gray28(trainCount: 80, xflip: true), .wide(trainCount: 48),
        .colour32(trainCount: 48),
    ]

    // MARK: - The 1000-image 1x28x28 fixture other tests share

    static let trainCount = 1000

    struct Fixture {
        let train: ImageArray
        let test: ImageArray
    }

    static let fixture = Fixture(train: FashionData.train.prefix(trainCount), test: FashionData.test)

    /// Query `i`: test image i plus t times seeded noise, float64.
    static func query(_ i: Int, t: Double) -> [Double] {
        let shape = fixture.test.shape, dim = shape.dimension
        let eps = NormalNoise(seed: 7).normals(stream: UInt64(i), count: dim)
        return (0..<dim).map { Double(fixture.test.pixels[i * dim + $0]) / 127.5 - 1 + t * eps[$0] }
    }

    static func engine(xflip: Bool, parts: Int = 1) throws -> DenoisingEngine {
        let train = fixture.train
        let shards = try (0..<parts).map { k -> InProcessShard in
            let lo = k * train.count / parts, hi = (k + 1) * train.count / parts
            let part = train.slice(lo..<hi)
            return InProcessShard(
                images: try ImageSet(pixels: part.pixels, count: part.count, shape: part.shape, xflip: xflip))
        }
        return try DenoisingEngine(sources: shards)
    }

    /// 1x28x28 heatmaps at every grid level (see `blobMaps`) with the lambda schedule `flexLambdas`.
    static func flexMasks() throws -> (FlexMasks, lambdas: [Double]) {
        let maps = grid.indices.flatMap { blobMaps(height: 28, width: 28, sigma: 0.8 + 0.1 * Double(17 - $0)) }
        let flex = try FlexMasks(
            maps: maps, levels: grid.count, height: 28, width: 28, levelTimes: grid,
            lambda: LambdaSchedule(t: grid, values: flexLambdas))
        return (flex, flexLambdas)
    }

    /// lambda per grid t: the whole image at large t, then smaller masks; 0.2 leaves border pixels uncovered, so
    /// the empirical fallback is exercised.
    static let flexLambdas = [1, 1, 1, 1, 1, 1, 0.7, 0.7, 0.5, 0.5, 0.4, 0.4, 0.3, 0.3, 0.3, 0.2, 0.2, 0.2]

    /// Heatmaps `[H W][H W]` whose mass sits around a point pulled towards the centre, as integers without ties:
    /// floor(2^30 exp(-r^2 / 2 sigma^2)) * 2048 plus a distinct number below 2048 per input pixel. Every partial
    /// sum of a row is then an exact integer below 2^53, so the lambda rule has one answer, whatever the order of
    /// summation.
    static func blobMaps(height h: Int, width w: Int, sigma: Double) -> [Double] {
        let p = h * w
        precondition(p <= 2048)
        var maps = [Double](repeating: 0, count: p * p)
        let cy = Double(h - 1) / 2, cx = Double(w - 1) / 2
        for out in 0..<p {
            let py = 0.7 * Double(out / w) + 0.3 * cy, px = 0.7 * Double(out % w) + 0.3 * cx
            for q in 0..<p {
                let dy = Double(q / w) - py, dx = Double(q % w) - px
                let blob = (0x1p30 * exp(-(dy * dy + dx * dx) / (2 * sigma * sigma))).rounded(.down)
                maps[out * p + q] = blob * 2048 + Double((q * 1031 + out) % 2048)
            }
        }
        return maps
    }

    /// PSPC-Flex heatmaps for `shape` at four levels (t = 80, 2, 0.1, 0.002; the nearest one serves each t).
    static let flexLevels = [80.0, 2, 0.1, 0.002]
    static func flex(for shape: ImageShape) throws -> (flex: FlexMasks, maps: [[Double]]) {
        let maps = flexLevels.indices.map { blobMaps(height: shape.height, width: shape.width, sigma: 2.5 - 0.5 * Double($0)) }
        let flex = try FlexMasks(
            maps: maps.flatMap { $0 }, levels: maps.count, height: shape.height, width: shape.width,
            levelTimes: flexLevels, lambda: LambdaSchedule(t: grid, values: flexLambdas))
        return (flex, maps)
    }

    // MARK: - Checking

    /// Runs the reference for `queriesPerT` queries at every grid t on both cores, then the engine, and checks
    /// the relative error against the method's bound. Returns the worst error.
    @discardableResult
    static func check(
        _ method: String, _ label: String, on c: ExactnessCase, queriesPerT: Int, engineMethod: DenoiseMethod,
        reference: @escaping @Sendable (_ z: [Double], _ t: Double, _ queryIndex: Int) -> [Double]
    ) async throws -> Double {
        let grid = Self.grid
        let jobs = grid.indices.flatMap { ti in (0..<queriesPerT).map { (ti, ti * queriesPerT + $0) } }
        let expected = ResultBox(count: jobs.count)
        DispatchQueue.concurrentPerform(iterations: jobs.count) { j in
            let (ti, qi) = jobs[j]
            expected.set(j, reference(c.query(qi, t: grid[ti]), grid[ti], qi))
        }
        let engine = try c.engine()
        let bound = Self.bounds[method]!
        var worst = 0.0, worstT = 0.0
        for (j, (ti, qi)) in jobs.enumerated() {
            let t = grid[ti]
            let out = try await engine.denoise(c.query(qi, t: t), t: t, method: engineMethod, firstQueryIndex: qi)
            let error = relativeError(out.values, expected.get(j))
            if error > worst { (worst, worstT) = (error, t) }
            XCTAssertLessThanOrEqual(error, bound, "\(label) \(c.name) t=\(t) query \(qi): relative error \(error)")
        }
        print("exactness \(label) \(c.name): worst relative error \(worst) (t = \(worstT)) over \(jobs.count) queries")
        return worst
    }

    func testEmpirical() async throws {
        for c in Self.cases {
            let images = c.images
            try await Self.check("empirical", "empirical", on: c, queriesPerT: 3, engineMethod: .empirical) { z, t, _ in
                Reference.empirical(z: z, t: t, images: images)
            }
        }
    }

    func testPSPCSquare() async throws {
        for c in Self.cases {
            let images = c.images, shape = c.shape
            for s in c.squareSizes {
                let crops = Reference.squareCrops(s, shape: shape)
                try await Self.check(
                    "pspc-square", "pspc-square s=\(s)", on: c, queriesPerT: 1, engineMethod: .pspcSquare(.constant(s))
                ) { z, t, _ in
                    Reference.composite(z: z, t: t, images: images, crops: crops, shape: shape)
                }
            }
        }
    }

    /// A schedule picks the size at the nearest grid t; the composite must then match that size's reference.
    func testPSPCSquareSchedule() async throws {
        for c in Self.cases {
            let images = c.images, shape = c.shape, side = min(shape.height, shape.width)
            let sizes = Self.grid.indices.map { i in max(1, min(side, side - 2 * i)) }
            let schedule = try PatchSchedule(t: Self.grid, values: sizes)
            try await Self.check("pspc-square", "pspc-square schedule", on: c, queriesPerT: 1, engineMethod: .pspcSquare(schedule)) {
                z, t, _ in
                let s = sizes[Reference.nearest(t, in: Self.grid)]
                return Reference.composite(
                    z: z, t: t, images: images, crops: Reference.squareCrops(s, shape: shape), shape: shape)
            }
        }
    }

    /// Patches larger than the image in either direction are refused, H != W included; s = min(H, W) is not.
    func testPatchLargerThanAnImageSideIsRefused() async throws {
        let c = ExactnessCase.wide(trainCount: 8)
        let engine = try c.engine()
        let z = c.query(0, t: 1)
        for s in [25, 40, 41, 0] {
            do {
                _ = try await engine.denoise(z, t: 1, method: .pspcSquare(.constant(s)))
                XCTFail("patch size \(s) on \(c.shape) was accepted")
            } catch PSPCError.invalidArgument(let message) {
                XCTAssertTrue(message.contains("patch size"), message)
            }
        }
        let out = try await engine.denoise(z, t: 1, method: .pspcSquare(.constant(24)))
        XCTAssertEqual(out.values.count, c.shape.dimension)
    }

    /// The reference's composite runs over masks built by the independent lambda rule (Reference.lambdaMasks),
    /// never the engine's.
    func testPSPCFlex() async throws {
        for c in Self.cases {
            let images = c.images, shape = c.shape
            let (flex, maps) = try Self.flex(for: shape)
            // The independent masks of each grid t, built once per (level, lambda).
            var built: [[Double]: [[Int]]] = [:], masksAt: [Double: [[Int]]] = [:]
            for t in Self.grid {
                let level = Reference.nearest(t, in: Self.flexLevels)
                let lambda = Self.flexLambdas[Reference.nearest(t, in: Self.grid)]
                let masks =
                    built[[Double(level), lambda]]
                    ?? Reference.lambdaMasks(maps: maps[level], pixels: shape.pixelCount, lambda: lambda)
                built[[Double(level), lambda]] = masks
                masksAt[t] = masks
            }
            let masksByT = masksAt
            let uncovered = masksByT.values.map { shape.pixelCount - Set($0.joined()).count }.reduce(0, +)
            XCTAssertGreaterThan(uncovered, 0, "\(c.name): the empirical fallback is not exercised")
            try await Self.check("pspc-flex", "pspc-flex", on: c, queriesPerT: 2, engineMethod: .pspcFlex(flex)) { z, t, _ in
                Reference.flex(z: z, t: t, images: images, masks: masksByT[t]!, shape: shape)
            }
        }
    }

    func testGaussian() async throws {
        for c in Self.cases {
            let gaussian = Reference.Gaussian(images: c.images)
            try await Self.check("gaussian", "gaussian", on: c, queriesPerT: 2, engineMethod: .gaussian) { z, t, _ in
                gaussian.denoise(z, t: t)
            }
        }
    }

    func testCFDM() async throws {
        let smoothing = 0.1, copies = 3, seed: UInt64 = 11
        for c in Self.cases {
            let images = c.images
            try await Self.check(
                "cfdm", "cfdm", on: c, queriesPerT: 1,
                engineMethod: .cfdm(smoothing: smoothing, copies: copies, seed: seed)
            ) { z, t, qi in
                // The spec: the average of the empirical denoiser over the copies z + smoothing eps_m, eps_m the
                // seeded noise of stream (query index << 24 | m).
                var out = [Double](repeating: 0, count: z.count)
                for m in 0..<copies {
                    let eps = NormalNoise(seed: seed).normals(stream: (UInt64(qi) << 24) | UInt64(m), count: z.count)
                    let d = Reference.empirical(z: zip(z, eps).map { $0 + smoothing * $1 }, t: t, images: images)
                    for i in out.indices { out[i] += d[i] / Double(copies) }
                }
                return out
            }
        }
    }
}

/// Results written by concurrent reference jobs.
final class ResultBox: @unchecked Sendable {
    private var values: [[Double]]
    private let lock = NSLock()
    init(count: Int) { values = Array(repeating: [], count: count) }
    func set(_ i: Int, _ v: [Double]) { lock.lock(); values[i] = v; lock.unlock() }
    func get(_ i: Int) -> [Double] { lock.lock(); defer { lock.unlock() }; return values[i] }
}
