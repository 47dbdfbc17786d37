import Foundation
import PSPCCore
import PSPCData
import PSPCKernels
import XCTest

/// PSPC-Flex masks evaluated as row runs over per-row prefix sums (the default kernel) against a literal
/// computation in extended precision (Float80 distances and logits on x86-64), at every t of the 18-step EDM
/// grid, at every CPU level, on 1x28x28 Fashion-MNIST and on 3x24x40 colour images made from it, with masks of few runs
/// (discs, rows, columns, the whole image) and of many (scattered pixels, images with holes). The per-pixel kernel
/// (`FlexKernel.perPixel`) is measured against the same literal, so the printed lines compare both.
final class FlexRowRunTests: XCTestCase {
    static let grid = EDM.grid(steps: 18)

    #if arch(x86_64)
        /// The literal's precision: x87 extended (64-bit significand) where the CPU has it.
        typealias Wide = Float80
    #else
        typealias Wide = Double
    #endif

    struct Case {
        let name: String
        let shape: ImageShape
        /// Training images `[n, C, H, W]` uint8.
        let pixels: [UInt8]
        let count: Int
        /// One query per grid t.
        let queries: [[Double]]
        let masks: MaskSet
    }

    static let fashion: (train: ImageArray, test: ImageArray) = {
        let train = try! IDXReader.read(path: FashionMNIST.directory + "/train-images-idx3-ubyte.gz", limit: 400)
        let test = try! IDXReader.read(path: FashionMNIST.directory + "/t10k-images-idx3-ubyte.gz", limit: 64)
        return (train, test)
    }()

    /// Query for grid step `i`: `clean` plus t times seeded noise.
    static func query(_ clean: [Double], step i: Int) -> [Double] {
        let eps = NormalNoise(seed: 5).normals(stream: UInt64(i), count: clean.count)
        return (0..<clean.count).map { clean[$0] + grid[i] * eps[$0] }
    }

    /// 101 grey training images (the last tile has padding lanes).
    static func greyCase() -> Case {
        let (train, test) = fashion
        let shape = train.shape, n = 101
        let queries = grid.indices.map { i in
            query((0..<shape.dimension).map { Double(test.pixels[i * shape.dimension + $0]) / 127.5 - 1 }, step: i)
        }
        return Case(
            name: "1x28x28", shape: shape, pixels: Array(train.pixels[0..<(n * shape.dimension)]), count: n,
            queries: queries, masks: masks(for: shape))
    }

    /// Colour image j of a 3x24x40 set: channel c is Fashion-MNIST image 3j + c (rows 2..25), its columns 28..39
    /// taken from the next image.
    static func colour(_ source: ImageArray, _ j: Int) -> [UInt8] {
        var out: [UInt8] = []
        for c in 0..<3 {
            for y in 0..<24 {
                for x in 0..<40 {
                    let image = (3 * j + c + (x >= 28 ? 1 : 0)) % source.count
                    out.append(source.pixels[image * 784 + (y + 2) * 28 + x % 28])
                }
            }
        }
        return out
    }

    static func colourCase() -> Case {
        let (train, test) = fashion
        let shape = ImageShape(channels: 3, height: 24, width: 40), n = 61
        let pixels = (0..<n).flatMap { colour(train, $0) }
        let queries = grid.indices.map { i in query(colour(test, i).map { Double($0) / 127.5 - 1 }, step: i) }
        return Case(name: "3x24x40", shape: shape, pixels: pixels, count: n, queries: queries, masks: masks(for: shape))
    }

    /// Discs of many radii (few runs), rows, columns, the whole image, pixels drawn at densities from 5 % to
    /// 95 % (many runs, holes), edge runs, a mask listing positions twice and a repeated mask (multiplicity 2).
    static func masks(for shape: ImageShape) -> MaskSet {
        let h = shape.height, w = shape.width
        var masks: [[Int]] = []
        for (i, r) in [0.5, 1, 1.5, 2.5, 4, 6, 9, 13, 40].enumerated() {
            let cy = Double((5 * i + 3) % h), cx = Double((7 * i + 2) % w)
            var mask: [Int] = []
            for y in 0..<h {
                for x in 0..<w where (Double(y) - cy) * (Double(y) - cy) + (Double(x) - cx) * (Double(x) - cx) <= r * r {
                    mask.append(y * w + x)
                }
            }
            masks.append(mask)
        }
        let noise = NormalNoise(seed: 3)
        // Densities 5, 20, 50, 80 and 95 %: P(N(0, 1) < q) for these q.
        for (i, q) in [-1.645, -0.8416, 0, 0.8416, 1.645].enumerated() {
            let u = noise.normals(stream: UInt64(i), count: h * w)
            masks.append((0..<(h * w)).filter { u[$0] < q })
        }
        masks.append(Array(0..<(h * w)))
        masks.append((0..<w).map { 3 * w + $0 })  // one row
        masks.append((0..<h).map { $0 * w + w - 1 })  // the last column
        masks.append([0, 1, w - 2, w - 1, 2 * w, 2 * w + 1, 2 * w + 2])  // runs at both edges
        masks.append([5 * w + 4])
        masks.append([7 * w + 1, 7 * w + 1, 7 * w + 2, 7 * w + 3, 7 * w + 3, 7 * w + 3])  // listed twice and thrice
        masks.append((0..<h).flatMap { y in (0..<w).filter { ($0 + y) % 3 != 0 }.map { y * w + $0 } })  // diagonal holes
        masks.append(masks[4])  // repeated: merged with multiplicity 2
        return MaskSet(masks: masks, pixelCount: h * w)
    }

    // MARK: - The literal computation

    /// Training images as doubles in [-1, 1], `[n][C H W]`.
    static func images(_ c: Case) -> [[Double]] {
        let dim = c.shape.dimension
        return (0..<c.count).map { i in (0..<dim).map { Double(c.pixels[i * dim + $0]) / 127.5 - 1 } }
    }

    /// Logits -||z - x_i||^2_mask / 2t^2 in Wide, the mask's positions as listed (all channels), `[mask][image]`.
    static func logits(_ c: Case, z: [Double], t: Double, images: [[Double]]) -> [[Wide]] {
        let masks = c.masks, hw = c.shape.pixelCount
        let scale = 1 / (2 * Wide(t) * Wide(t))
        return (0..<masks.count).map { k in
            let positions = masks.pixels[masks.offsets[k]..<masks.offsets[k + 1]]
            return images.map { x in
                var d: Wide = 0
                for p in positions {
                    for ch in 0..<c.shape.channels {
                        let diff = Wide(z[ch * hw + Int(p)]) - Wide(x[ch * hw + Int(p)])
                        d += diff * diff
                    }
                }
                return -d * scale
            }
        }
    }

    static func logNormalizers(_ logits: [[Wide]]) -> [Wide] {
        logits.map { l in
            let m = l.max()!
            return m + Wide(log(l.reduce(0.0) { $0 + exp(Double($1 - m)) }))
        }
    }

    /// sum_i x_i(p) sum_{k covers p} multiplicity_k exp(l_ik - logZ_k), `[C H W]`.
    static func numerator(_ c: Case, logits: [[Wide]], logZ: [Double], images: [[Double]]) -> [Double] {
        let masks = c.masks, hw = c.shape.pixelCount
        var out = [Double](repeating: 0, count: c.shape.dimension)
        for k in 0..<masks.count {
            for (i, x) in images.enumerated() {
                let weight = masks.multiplicity[k] * exp(Double(logits[k][i] - Wide(logZ[k])))
                for p in masks.pixels[masks.offsets[k]..<masks.offsets[k + 1]] {
                    for ch in 0..<c.shape.channels { out[ch * hw + Int(p)] += weight * x[ch * hw + Int(p)] }
                }
            }
        }
        return out
    }

    // MARK: - Comparison

    struct Worst {
        var logZ = 0.0
        var composite = 0.0
        mutating func add(logZ a: Double, composite b: Double) {
            logZ = max(logZ, a)
            composite = max(composite, b)
        }
    }

    /// Errors of one kernel for one query: |log Z - log Z_literal| (the relative error of Z) over the masks, and
    /// over every value the numerator's error divided by the pixel's coverage (the error of the composite).
    static func errors(
        _ c: Case, shard: InProcessShard, z: [Double], t: Double, literalLogZ: [Wide], logZ: [Double],
        literalNumerator: [Double]
    ) async throws -> (logZ: Double, composite: Double) {
        let batch = QueryBatch(values: z, shape: c.shape)
        let crops = CropSet.masks(c.masks)
        guard case .softmax(let normalizers) = try await shard.evaluate(.cropNormalizers(queries: batch, t: t, crops: crops)),
            case .sums(let numerator) = try await shard.evaluate(
                .cropComposite(queries: batch, t: t, crops: crops, logZ: logZ))
        else {
            XCTFail("wrong response kind")
            return (.infinity, .infinity)
        }
        let got = normalizers.logNormalizers
        var logZError = 0.0
        for k in got.indices { logZError = max(logZError, abs(Double(Wide(got[k]) - literalLogZ[k]))) }
        let coverage = crops.coverage(for: c.shape), hw = c.shape.pixelCount
        var compositeError = 0.0
        for d in numerator.indices where coverage[d % hw] > 0 {
            compositeError = max(compositeError, abs(numerator[d] - literalNumerator[d]) / coverage[d % hw])
        }
        return (logZError, compositeError)
    }

    /// Both kernels against the literal at every grid t and every CPU level; the row-run kernel must be within
    /// 1e-10 + 5e-13 / 2t^2 in log Z (the relative error of Z) and in the composite.
    func check(_ c: Case) async throws {
        let images = Self.images(c)
        let set = try ImageSet(pixels: c.pixels, count: c.count, shape: c.shape, xflip: false)
        let runs = InProcessShard(images: set, threads: 2, flexKernel: .rowRuns)
        let perPixel = InProcessShard(images: set, threads: 2, flexKernel: .perPixel)
        struct Literal {
            let logZ: [Wide]
            let logZDouble: [Double]
            let numerator: [Double]
        }
        let literal = Self.grid.indices.map { i -> Literal in
            let l = Self.logits(c, z: c.queries[i], t: Self.grid[i], images: images)
            let logZ = Self.logNormalizers(l)
            let logZDouble = logZ.map { Double($0) }
            return Literal(
                logZ: logZ, logZDouble: logZDouble,
                numerator: Self.numerator(c, logits: l, logZ: logZDouble, images: images))
        }
        let initial = pspc_kernel_level()
        defer { _ = pspc_set_kernel_level(initial) }
        let reads = c.masks.kernelReads(width: c.shape.width)
        print(
            "flex row runs \(c.name): \(c.masks.count) masks, \(c.masks.pixels.count) listed positions; reads per image: \(reads.rowRuns) row-run entries, \(reads.perPixel) per-pixel"
        )
        for level in 0...2 {
            let inForce = pspc_set_kernel_level(Int32(level))
            var worstRuns: [String: Worst] = [:], worstPixels: [String: Worst] = [:]
            for (i, t) in Self.grid.enumerated() {
                let z = c.queries[i]
                let band = t < 0.01 ? "t < 0.01" : t < 1 ? "0.01 <= t < 1" : "t >= 1"
                let a = try await Self.errors(
                    c, shard: runs, z: z, t: t, literalLogZ: literal[i].logZ, logZ: literal[i].logZDouble,
                    literalNumerator: literal[i].numerator)
                let b = try await Self.errors(
                    c, shard: perPixel, z: z, t: t, literalLogZ: literal[i].logZ, logZ: literal[i].logZDouble,
                    literalNumerator: literal[i].numerator)
                worstRuns[band, default: Worst()].add(logZ: a.logZ, composite: a.composite)
                worstPixels[band, default: Worst()].add(logZ: b.logZ, composite: b.composite)
                // The kernels' exp is good to ~1e-11 relative (PSPCKernels), hence the floor. A distance of a few
                // hundred carries ~1e-13 of float64 rounding whichever way it is summed (the per-pixel kernel
                // included), and 1 / 2t^2 = 125,000 at t = 0.002 turns 5e-13 into 6e-8 of log Z.
                let tolerance = 1e-10 + 5e-13 / (2 * t * t)
                XCTAssertLessThanOrEqual(a.logZ, tolerance, "\(c.name) level \(inForce) t = \(t): log Z off by \(a.logZ)")
                XCTAssertLessThanOrEqual(
                    a.composite, tolerance, "\(c.name) level \(inForce) t = \(t): composite off by \(a.composite)")
            }
            for band in ["t < 0.01", "0.01 <= t < 1", "t >= 1"] {
                let r = worstRuns[band]!, p = worstPixels[band]!
                print(
                    String(
                        format: "flex row runs %@ level %d %@: |d log Z| runs %.2e per-pixel %.2e; composite runs %.2e per-pixel %.2e",
                        c.name, inForce, band, r.logZ, p.logZ, r.composite, p.composite))
            }
        }
    }

    func testGreyMatchesTheLiteralAtEveryT() async throws {
        try await check(Self.greyCase())
    }

    func testColourMatchesTheLiteralAtEveryT() async throws {
        try await check(Self.colourCase())
    }

    /// Through the engine: PSPC-Flex from noisy heatmaps (scattered masks) with the row-run kernel equals
    /// Reference.composite, the literal float64 composite, at every grid t.
    func testEngineMatchesReferenceComposite() async throws {
        let (train, test) = Self.fashion
        let shape = train.shape, p = shape.pixelCount, n = 48
        let noise = NormalNoise(seed: 9)
        var maps: [Double] = []
        for out in 0..<p {
            let u = noise.normals(stream: UInt64(out), count: p)
            for q in 0..<p {
                let dy = Double(q / 28 - out / 28), dx = Double(q % 28 - out % 28)
                maps.append(exp(-(dy * dy + dx * dx) / 8) + 0.02 * exp(u[q]))
            }
        }
        let flex = try FlexMasks(
            maps: maps, levels: 1, height: 28, width: 28, levelTimes: [1], lambda: .constant(0.5))
        let pixels = Array(train.pixels[0..<(n * shape.dimension)])
        let engine = try DenoisingEngine(sources: [
            InProcessShard(images: try ImageSet(pixels: pixels, count: n, shape: shape, xflip: true), threads: 2)
        ])
        let images = Reference.trainingSet(pixels, count: n, shape: shape, xflip: true)
        let masks = flex.masks(at: 1)
        var crops: [[Int]] = []
        for k in 0..<masks.count {
            let mask = masks.pixels[masks.offsets[k]..<masks.offsets[k + 1]].map(Int.init)
            crops += Array(repeating: mask, count: Int(masks.multiplicity[k]))
        }
        var worst = 0.0
        for (i, t) in Self.grid.enumerated() {
            let z = Self.query((0..<p).map { Double(test.pixels[i * p + $0]) / 127.5 - 1 }, step: i)
            let out = try await engine.denoise(z, t: t, method: .pspcFlex(flex)).values
            let expected = Reference.composite(
                z: z, t: t, images: images, crops: crops, shape: shape,
                fallback: Reference.empirical(z: z, t: t, images: images))
            let error = maxAbsDifference(out, expected)
            worst = max(worst, error)
            XCTAssertLessThanOrEqual(error, 1e-9, "t = \(t)")
        }
        print("flex row runs engine vs Reference.composite: worst max abs error \(worst)")
    }
}
