import Dispatch
import Foundation
import PSPCCore
import PSPCData
import XCTest

/// Every method against the literal float64 reference (Reference.swift) on real Fashion-MNIST: 1000 training
/// images, test-set queries z = x0 + t eps, every t of the 18-step EDM grid, with and without x-flip.
final class ExactnessTests: XCTestCase {
    static let trainCount = 1000
    static let tolerance = 1e-4
    static let grid = EDM.grid(steps: 18)

    struct Fixture {
        let train: ImageArray
        let test: ImageArray
    }

    static let fixture: Fixture = {
        let train = try! IDXReader.read(path: FashionMNIST.directory + "/train-images-idx3-ubyte.gz", limit: trainCount)
        let test = try! IDXReader.read(path: FashionMNIST.directory + "/t10k-images-idx3-ubyte.gz", limit: 64)
        return Fixture(train: train, test: test)
    }()

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

    /// Runs the reference for every grid t on both cores, then compares with the engine.
    func check(
        _ name: String, method: DenoiseMethod, queriesPerT: Int, xflip: Bool,
        reference: @escaping @Sendable (_ z: [Double], _ t: Double, _ images: [[Double]]) -> [Double]
    ) async throws {
        let fixture = Self.fixture
        let images = Reference.trainingSet(
            fixture.train.pixels, count: fixture.train.count, shape: fixture.train.shape, xflip: xflip)
        let grid = Self.grid
        let jobs = grid.indices.flatMap { ti in (0..<queriesPerT).map { (ti, ti * queriesPerT + $0) } }
        let expected = ResultBox(count: jobs.count)
        DispatchQueue.concurrentPerform(iterations: jobs.count) { j in
            let (ti, qi) = jobs[j]
            expected.set(j, reference(Self.query(qi, t: grid[ti]), grid[ti], images))
        }
        let engine = try Self.engine(xflip: xflip)
        var worst = 0.0
        for (j, (ti, qi)) in jobs.enumerated() {
            let t = grid[ti]
            let out = try await engine.denoise(Self.query(qi, t: t), t: t, method: method, firstQueryIndex: qi)
            let error = maxAbsDifference(out.values, expected.get(j))
            worst = max(worst, error)
            XCTAssertLessThanOrEqual(error, Self.tolerance, "\(name) xflip=\(xflip) t=\(t): max abs error \(error)")
        }
        print("exactness \(name) xflip=\(xflip): worst max abs error \(worst) over \(jobs.count) queries")
    }

    func testEmpirical() async throws {
        for xflip in [false, true] {
            try await check("empirical", method: .empirical, queriesPerT: 2, xflip: xflip) { z, t, images in
                Reference.empirical(z: z, t: t, images: images)
            }
        }
    }

    func testPSPCSquare() async throws {
        let shape = Self.fixture.train.shape
        for s in [3, 7, 15, 28] {
            let crops = Reference.squareCrops(s, shape: shape)
            for xflip in [false, true] {
                try await check("pspc-square s=\(s)", method: .pspcSquare(.constant(s)), queriesPerT: 1, xflip: xflip) {
                    z, t, images in
                    Reference.composite(z: z, t: t, images: images, crops: crops, shape: shape)
                }
            }
        }
    }

    func testPSPCSquareSchedule() async throws {
        // A schedule picks the size at the nearest grid t; the composite must then match that size's reference.
        let shape = Self.fixture.train.shape
        let sizes = [28, 28, 28, 28, 28, 28, 28, 23, 15, 11, 7, 5, 3, 3, 3, 3, 3, 3]
        let schedule = try PatchSchedule(t: Self.grid, values: sizes)
        try await check("pspc-square schedule", method: .pspcSquare(schedule), queriesPerT: 1, xflip: true) {
            z, t, images in
            let s = sizes[EDM.nearestIndex(of: t, in: Self.grid)]
            return Reference.composite(
                z: z, t: t, images: images, crops: Reference.squareCrops(s, shape: shape), shape: shape)
        }
    }

    func testGaussian() async throws {
        for xflip in [false, true] {
            let fixture = Self.fixture
            let images = Reference.trainingSet(
                fixture.train.pixels, count: fixture.train.count, shape: fixture.train.shape, xflip: xflip)
            let gaussian = Reference.Gaussian(images: images)
            try await check("gaussian", method: .gaussian, queriesPerT: 1, xflip: xflip) { z, t, _ in
                gaussian.denoise(z, t: t)
            }
        }
    }

    func testCFDM() async throws {
        let smoothing = 0.1, copies = 3, seed: UInt64 = 11
        for xflip in [false, true] {
            try await check(
                "cfdm", method: .cfdm(smoothing: smoothing, copies: copies, seed: seed), queriesPerT: 1, xflip: xflip
            ) {
                z, t, images in
                // The spec: average of the empirical denoiser over copies z + smoothing eps_m, with eps_m the
                // seeded noise of stream (query index << 24 | m).
                let qi = Self.grid.firstIndex(of: t)!
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

    /// Heatmaps whose mass sits around a point pulled towards the centre, so border pixels are left
    /// uncovered at small lambda and the empirical fallback is exercised.
    static func flexMasks() throws -> (FlexMasks, lambdas: [Double]) {
        let h = 28, w = 28, p = h * w
        let lambdas = [1, 1, 1, 1, 1, 1, 0.7, 0.7, 0.5, 0.5, 0.4, 0.4, 0.3, 0.3, 0.3, 0.2, 0.2, 0.2]
        var maps = [Double](repeating: 0, count: grid.count * p * p)
        for level in grid.indices {
            let sigma = 0.8 + 0.1 * Double(17 - level)
            for out in 0..<p {
                let cy = 0.7 * Double(out / w) + 0.3 * 13.5, cx = 0.7 * Double(out % w) + 0.3 * 13.5
                for q in 0..<p {
                    let dy = Double(q / w) - cy, dx = Double(q % w) - cx
                    maps[(level * p + out) * p + q] = exp(-(dy * dy + dx * dx) / (2 * sigma * sigma))
                }
            }
        }
        let flex = try FlexMasks(
            maps: maps, levels: grid.count, height: h, width: w, levelTimes: grid,
            lambda: LambdaSchedule(t: grid, values: lambdas))
        return (flex, lambdas)
    }

    func testPSPCFlex() async throws {
        let shape = Self.fixture.train.shape
        let (flex, _) = try Self.flexMasks()
        for xflip in [false, true] {
            try await check("pspc-flex", method: .pspcFlex(flex), queriesPerT: 1, xflip: xflip) { z, t, images in
                let masks = flex.masks(at: t)
                // Expand the merged masks back to one crop per output pixel for the literal composite.
                var crops: [[Int]] = []
                for k in 0..<masks.count {
                    let mask = masks.pixels[masks.offsets[k]..<masks.offsets[k + 1]].map(Int.init)
                    crops += Array(repeating: mask, count: Int(masks.multiplicity[k]))
                }
                return Reference.compositeMemoized(
                    z: z, t: t, images: images, crops: crops, shape: shape,
                    fallback: Reference.empirical(z: z, t: t, images: images))
            }
        }
    }
}

extension Reference {
    /// `composite` with the posterior mean of each distinct crop computed once (identical masks repeat).
    static func compositeMemoized(
        z: [Double], t: Double, images: [[Double]], crops: [[Int]], shape: ImageShape,
        fallback: [Double]
    ) -> [Double] {
        var cache: [[Int]: [Double]] = [:]
        var sum = [Double](repeating: 0, count: z.count)
        var count = [Double](repeating: 0, count: shape.pixelCount)
        for crop in crops {
            let positions = positions(of: crop, shape: shape)
            let mean = cache[crop] ?? posteriorMean(z: z, positions: positions, t: t, images: images)
            cache[crop] = mean
            for (j, p) in positions.enumerated() { sum[p] += mean[j] }
            for p in crop { count[p] += 1 }
        }
        return (0..<z.count).map { i in
            let p = i % shape.pixelCount
            return count[p] > 0 ? sum[i] / count[p] : fallback[i]
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
