import PSPCCore
import XCTest

/// The extremes of the noise range: one-hot weights at t = 0.002, near-uniform ones at t = 80 and 1e4.
final class NumericsTests: XCTestCase {
    func testSmallestTReturnsNearestTrainingImageAndPatches() async throws {
        let fixture = ExactnessTests.fixture
        let shape = fixture.train.shape
        let images = Reference.trainingSet(fixture.train.pixels, count: fixture.train.count, shape: shape, xflip: true)
        let engine = try ExactnessTests.engine(xflip: true)
        let t = 0.002
        for qi in 0..<3 {
            let z = ExactnessTests.query(qi, t: t)
            let nearest = images.min { a, b in
                zip(z, a).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
                    < zip(z, b).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
            }!
            let out = try await engine.denoise(z, t: t, method: .empirical).values
            XCTAssertLessThanOrEqual(maxAbsDifference(out, nearest), 1e-4)

        }
    }

    /// At t = 0.002 each crop's patch posterior mean is its nearest training patch wherever the posterior is
    /// one-hot (the runner-up patch at least 30 logits behind). Closer runners-up (pixels one grey level
    /// apart) genuinely share the weight; the exactness tests cover those against the reference.
    func testSmallestTPatchMeansAreNearestPatches() async throws {
        let fixture = ExactnessTests.fixture
        let shape = fixture.train.shape
        let images = Reference.trainingSet(fixture.train.pixels, count: fixture.train.count, shape: shape, xflip: true)
        let shard = InProcessShard(
            images: try ImageSet(pixels: fixture.train.pixels, count: fixture.train.count, shape: shape, xflip: true))
        let t = 0.002, s = 5
        var oneHot = 0, nearTies = 0
        for qi in 0..<2 {
            let z = ExactnessTests.query(qi, t: t)
            for (k, crop) in Reference.squareCrops(s, shape: shape).enumerated() where k % 3 == 0 {
                let distances = images.map { x in crop.reduce(0.0) { $0 + (z[$1] - x[$1]) * (z[$1] - x[$1]) } }
                let best = distances.indices.min { distances[$0] < distances[$1] }!
                let nearest = crop.map { images[best][$0] }
                // The runner-up among patches that differ from the nearest one.
                let runnerUp =
                    distances.indices.filter { i in crop.contains { images[i][$0] != nearest[crop.firstIndex(of: $0)!] }
                    }
                    .map { distances[$0] }.min() ?? .infinity
                guard (runnerUp - distances[best]) / (2 * t * t) > 30 else {
                    nearTies += 1
                    continue
                }
                oneHot += 1
                let crops = CropSet.masks(MaskSet(masks: [crop], pixelCount: shape.pixelCount))
                let batch = QueryBatch(values: z, shape: shape)
                guard
                    case .softmax(let normalizers) = try await shard.evaluate(
                        .cropNormalizers(queries: batch, t: t, crops: crops)),
                    case .sums(let numerator) = try await shard.evaluate(
                        .cropComposite(queries: batch, t: t, crops: crops, logZ: normalizers.logNormalizers))
                else { return XCTFail("wrong response kind") }
                XCTAssertLessThanOrEqual(maxAbsDifference(crop.map { numerator[$0] }, nearest), 1e-4, "crop \(k)")
            }
        }
        print(
            "t = 0.002: \(oneHot) one-hot crops match their nearest patch; \(nearTies) near-tie crops left to the exactness tests"
        )
        XCTAssertGreaterThan(oneHot, 50)
    }

    func testLargeTStaysFiniteAndTendsToTheMean() async throws {
        let fixture = ExactnessTests.fixture
        let shape = fixture.train.shape, dim = shape.dimension
        let images = Reference.trainingSet(fixture.train.pixels, count: fixture.train.count, shape: shape, xflip: true)
        let mean = (0..<dim).map { d in images.reduce(0) { $0 + $1[d] } / Double(images.count) }
        let engine = try ExactnessTests.engine(xflip: true)
        let (flex, _) = try ExactnessTests.flexMasks()
        let methods: [DenoiseMethod] = [
            .empirical, .pspcSquare(.constant(7)), .pspcFlex(flex), .gaussian,
            .cfdm(smoothing: 1, copies: 2, seed: 1),
        ]
        for t in [80.0, 1e4] {
            let z = ExactnessTests.query(0, t: t)
            for method in methods {
                let out = try await engine.denoise(z, t: t, method: method).values
                XCTAssertTrue(out.allSatisfy { $0.isFinite }, "\(method.name) at t=\(t) is not finite")
                if t == 1e4 {
                    XCTAssertLessThanOrEqual(
                        maxAbsDifference(out, mean), 1e-3, "\(method.name) at t=1e4 should be the mean")
                }
            }
        }
    }

    func testBadQueriesAreRejected() async throws {
        let engine = try ExactnessTests.engine(xflip: false)
        var z = ExactnessTests.query(0, t: 1)
        z[17] = .nan
        do {
            _ = try await engine.denoise(z, t: 1, method: .empirical)
            XCTFail("NaN query accepted")
        } catch let error as PSPCError {
            XCTAssertTrue(error.description.contains("non-finite"), error.description)
        }
        for t in [0.0, -1.0, .infinity, .nan] {
            do {
                _ = try await engine.denoise(ExactnessTests.query(0, t: 1), t: t, method: .empirical)
                XCTFail("t = \(t) accepted")
            } catch let error as PSPCError {
                XCTAssertTrue(error.description.contains("t must be positive"), error.description)
            }
        }
        do {
            _ = try await engine.denoise(ExactnessTests.query(0, t: 1), t: 1, method: .pspcSquare(.constant(29)))
            XCTFail("patch larger than the image accepted")
        } catch let error as PSPCError {
            XCTAssertTrue(error.description.contains("larger than the 28x28 image"), error.description)
        }
        do {
            _ = try await engine.denoise([1, 2, 3], t: 1, method: .empirical)
            XCTFail("wrong query size accepted")
        } catch let error as PSPCError {
            XCTAssertTrue(error.description.contains("not a multiple"), error.description)
        }
    }
}
