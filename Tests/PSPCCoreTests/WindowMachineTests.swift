import Dispatch
import Foundation
import PSPCCore
import PSPCData
import PSPCKernels
import XCTest

/// Kamb & Ganguli's LS and ELS machines, literally from their definitions (docs/science.md), one window at a time
/// in float64, sharing no code with the engine: a P x P window (P odd, r = P / 2) centred on every pixel,
/// zero-padded (pixels outside the image are 0 in the query window and in the training window alike); the
/// logit of candidate window w for the query window at p is -||z_win(p) - w||^2 / (2 t^2) over all channels;
/// the output at p is the posterior mean of the candidates' centre pixels. LS: the candidates are the training
/// windows at p; ELS: those at every position q whose row class and column class equal p's (class of y: "top y"
/// if y < r, "interior" if r <= y < n - r, "bottom n - 1 - y" otherwise).
enum WindowReference {
    /// The class of row (or column) `y` of `n`: y for the top edge, -1 for the interior, -2 - (n - 1 - y) for
    /// the bottom edge.
    static func positionClass(_ y: Int, n: Int, r: Int) -> Int {
        if y < r { return y }
        if y < n - r { return -1 }
        return -2 - (n - 1 - y)
    }

    /// The zero-padded P x P window of `image` centred on (cy, cx), all channels: `[C][P][P]`.
    static func window(_ image: [Double], cy: Int, cx: Int, patch: Int, shape: ImageShape) -> [Double] {
        let r = patch / 2
        var out = [Double](repeating: 0, count: shape.channels * patch * patch)
        for c in 0..<shape.channels {
            for i in 0..<patch {
                for j in 0..<patch {
                    let y = cy + i - r, x = cx + j - r
                    guard y >= 0, y < shape.height, x >= 0, x < shape.width else { continue }
                    out[(c * patch + i) * patch + j] = image[(c * shape.height + y) * shape.width + x]
                }
            }
        }
        return out
    }

    /// D(z, t) `[C, H, W]` of the LS (`equivariant` false) or ELS machine with P x P windows.
    static func denoise(
        z: [Double], t: Double, images: [[Double]], shape: ImageShape, patch: Int, equivariant: Bool
    ) -> [Double] {
        let (h, w, hw, r, channels) = (shape.height, shape.width, shape.pixelCount, patch / 2, shape.channels)
        let k = channels * patch * patch
        // Every training window, by image: `[H W][C P P]` flat.
        let windows = images.map { image in
            (0..<hw).flatMap { q in window(image, cy: q / w, cx: q % w, patch: patch, shape: shape) }
        }
        var out = [Double](repeating: 0, count: z.count)
        var logits: [Double] = []
        for p in 0..<hw {
            let (y, x) = (p / w, p % w)
            let query = window(z, cy: y, cx: x, patch: patch, shape: shape)
            let positions =
                equivariant
                ? (0..<hw).filter {
                    positionClass($0 / w, n: h, r: r) == positionClass(y, n: h, r: r)
                        && positionClass($0 % w, n: w, r: r) == positionClass(x, n: w, r: r)
                } : [p]
            // Candidates (image i, position q) in the order i-major; logits first, then weights.
            logits.removeAll(keepingCapacity: true)
            for i in images.indices {
                for q in positions {
                    var d = 0.0
                    for j in 0..<k {
                        let diff = query[j] - windows[i][q * k + j]
                        d += diff * diff
                    }
                    logits.append(-d / (2 * t * t))
                }
            }
            let m = logits.max()!
            var s = 0.0
            var mean = [Double](repeating: 0, count: channels)
            var n = 0
            for image in images {
                for q in positions {
                    let weight = exp(logits[n] - m)
                    n += 1
                    s += weight
                    for c in 0..<channels { mean[c] += weight * image[c * hw + q] }
                }
            }
            for c in 0..<channels { out[c * hw + p] = mean[c] / s }
        }
        return out
    }
}

/// LS and ELS against `WindowReference` at every grid t, on real Fashion-MNIST (1x28x28) and 3-channel scenes
/// with H != W (3x16x20, x-flip); P = 1, 3, 5, 7, and P >= 2 max(H, W) - 1, where both machines are the engine's
/// empirical denoiser. Training sets are tiny: the ELS reference costs O(N H^2 W^2 P^2) per query.
final class WindowMachineTests: XCTestCase {
    static let cases: [ExactnessCase] = [
        .gray28(trainCount: 3, xflip: false),
        ExactnessCase(
            name: "3x16x20 xflip",
            train: ExactnessCase.scenes(
                FashionData.train, first: 0, count: 3, shape: ImageShape(channels: 3, height: 16, width: 20), seed: 5),
            sources: ExactnessCase.scenes(
                FashionData.test, first: 0, count: 4, shape: ImageShape(channels: 3, height: 16, width: 20), seed: 6),
            xflip: true, squareSizes: []),
    ]

    func checkMachine(equivariant: Bool) async throws {
        let name = equivariant ? "els" : "ls"
        for c in Self.cases {
            let images = c.images, shape = c.shape
            for patch in [1, 3, 5, 7] {
                let method: DenoiseMethod = equivariant ? .els(.constant(patch)) : .ls(.constant(patch))
                try await ExactnessTests.check(
                    name, "\(name) P=\(patch)", on: c, queriesPerT: 1, engineMethod: method
                ) { z, t, _ in
                    WindowReference.denoise(z: z, t: t, images: images, shape: shape, patch: patch, equivariant: equivariant)
                }
            }
        }
    }

    func testLS() async throws { try await checkMachine(equivariant: false) }

    func testELS() async throws { try await checkMachine(equivariant: true) }

    /// P >= 2H - 1 and >= 2W - 1: every window covers the whole image from any centre, so both machines are the
    /// optimal empirical denoiser. The shard's window kernels at P = 2 max(H, W) - 1 exactly (asked directly: the
    /// engine short-cuts that size to the empirical denoiser) are checked against the engine's empirical denoiser
    /// at every grid t, and the engine's LS and ELS at that size and beyond give the empirical output bit for bit.
    func testWholeImageWindowsAreTheEmpiricalDenoiser() async throws {
        for c in Self.cases {
            let shape = c.shape, hw = shape.pixelCount
            let patch = DenoiseMethod.wholeImageWindow(shape)
            XCTAssertEqual(patch, 2 * max(shape.height, shape.width) - 1)
            let engine = try c.engine()
            let shard = InProcessShard(
                images: try ImageSet(pixels: c.train.pixels, count: c.train.count, shape: shape, xflip: c.xflip),
                threads: 2, blockImages: 24)
            var worst = 0.0
            for (ti, t) in ExactnessTests.grid.enumerated() {
                let z = c.query(ti, t: t)
                let empirical = try await engine.denoise(z, t: t, method: .empirical).values
                for equivariant in [false, true] {
                    let request = PartialRequest.windowPosterior(
                        queries: QueryBatch(values: z, shape: shape), t: t, patchSize: patch, equivariant: equivariant)
                    guard case .softmax(let partial) = try shard.evaluateNow(request) else {
                        XCTFail("a window request answered with something other than softmax partials")
                        continue
                    }
                    let means = try partial.means()  // [H W][C]
                    var out = [Double](repeating: 0, count: z.count)
                    for p in 0..<hw {
                        for ch in 0..<shape.channels { out[ch * hw + p] = means[p * shape.channels + ch] }
                    }
                    let error = relativeError(out, empirical)
                    worst = max(worst, error)
                    XCTAssertLessThanOrEqual(error, 1e-10, "kernel equivariant=\(equivariant) P=\(patch) \(c.name) t=\(t)")
                }
                for size in [patch, patch + 2] {
                    for method in [DenoiseMethod.ls(.constant(size)), .els(.constant(size))] {
                        let out = try await engine.denoise(z, t: t, method: method).values
                        XCTAssertEqual(out, empirical, "\(method.name) P=\(size) \(c.name) t=\(t)")
                    }
                }
            }
            print("window kernels P=\(patch) \(c.name) vs empirical: worst relative error \(worst)")
        }
    }

    /// The interior pixels go through factor tables eight queries at a time; a query whose best candidate is far
    /// from the tables' reference (a flat grey image at t = 0.002 with 7 x 7 windows: every weight would underflow)
    /// is recomputed by the distance kernel. A batch of 9 (two groups of 8, the second padded) mixing both kinds
    /// at P = 3 and 7 and t = 0.002, 1.09 and 80 matches the reference query by query.
    func testFactorTablesAndTheirUnderflowFallbackMatchTheReference() async throws {
        let c = Self.cases[0], images = c.images, shape = c.shape, dim = shape.dimension
        let engine = try c.engine()
        for t in [0.002, 1.09, 80] {
            var batch: [Double] = []
            for i in 0..<9 {
                if i == 2 || i == 8 {
                    batch += (0..<dim).map { 0.37 + 1e-4 * Double($0 % 7) }
                } else {
                    batch += c.query(i % 4, t: t)
                }
            }
            for patch in [3, 7] {
                let out = try await engine.denoise(batch, t: t, method: .els(.constant(patch))).values
                for i in 0..<9 {
                    let z = Array(batch[(i * dim)..<((i + 1) * dim)])
                    let expected = WindowReference.denoise(
                        z: z, t: t, images: images, shape: shape, patch: patch, equivariant: true)
                    let error = relativeError(Array(out[(i * dim)..<((i + 1) * dim)]), expected)
                    XCTAssertLessThanOrEqual(error, 1e-11, "els P=\(patch) t=\(t) query \(i)")
                }
            }
        }
    }

    /// Every CPU level's kernel (baseline, AVX2, AVX-512; levels the CPU lacks fall back) against the reference,
    /// on the 3-channel case at six grid t.
    func testEveryKernelLevelMatchesTheReference() async throws {
        let c = Self.cases[1], images = c.images, grid = ExactnessTests.grid
        let initial = pspc_kernel_level()
        defer { _ = pspc_set_kernel_level(initial) }
        let engine = try c.engine()
        for ti in [0, 4, 8, 12, 15, 17] {
            let t = grid[ti], z = c.query(ti, t: t)
            for equivariant in [false, true] {
                let expected = WindowReference.denoise(
                    z: z, t: t, images: images, shape: c.shape, patch: 5, equivariant: equivariant)
                for level in 0...2 {
                    let inForce = pspc_set_kernel_level(Int32(level))
                    let method: DenoiseMethod = equivariant ? .els(.constant(5)) : .ls(.constant(5))
                    let out = try await engine.denoise(z, t: t, method: method).values
                    let error = relativeError(out, expected)
                    XCTAssertLessThanOrEqual(error, 1e-11, "\(method.name) level \(inForce) t=\(t)")
                }
            }
        }
    }

    /// The schedule picks P at the nearest grid t.
    func testScheduleLooksUpTheWindowAtT() async throws {
        let c = Self.cases[1], grid = ExactnessTests.grid
        let sizes = grid.indices.map { [7, 5, 3, 1][$0 % 4] }
        let schedule = try PatchSchedule(t: grid, values: sizes)
        let engine = try c.engine()
        for ti in [0, 5, 10, 17] {
            let z = c.query(ti, t: grid[ti])
            let scheduled = try await engine.denoise(z, t: grid[ti], method: .els(schedule)).values
            let fixed = try await engine.denoise(z, t: grid[ti], method: .els(.constant(sizes[ti]))).values
            XCTAssertEqual(scheduled, fixed, "t=\(grid[ti])")
        }
    }

    func testEvenOrEmptyWindowsAreRefused() async throws {
        let engine = try Self.cases[0].engine()
        let z = Self.cases[0].query(0, t: 1)
        for patch in [0, -3, 2, 4] {
            for method in [DenoiseMethod.ls(.constant(patch)), .els(.constant(patch))] {
                do {
                    _ = try await engine.denoise(z, t: 1, method: method)
                    XCTFail("\(method.name) P=\(patch) was accepted")
                } catch let error as PSPCError {
                    XCTAssertTrue("\(error)".contains("odd and at least 1"), "\(error)")
                }
            }
        }
    }

    /// 1, 3 and 7 uneven shards (one empty, one of a single image) agree to rounding at every grid t.
    func testShardingsAgree() async throws {
        for c in Self.cases {
            let n = c.train.count
            let splits = [[0, n], [0, 1, 2, n], [0, 0, 1, 1, 2, 2, n, n]]
            let engines = try splits.map { try c.engine(splits: $0) }
            for method in [DenoiseMethod.ls(.constant(5)), .els(.constant(3))] {
                let (worst, _) = try await ShapeShardingTests.compare(
                    engines, splits: splits, on: c, name: method.name, method: method, bound: 1e-11)
                print("sharding \(method.name) \(c.name): worst relative difference \(worst)")
            }
        }
    }
}
