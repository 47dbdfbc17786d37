import PSPCCore
import XCTest

/// Answers must not depend on how the training set is split: 1, 3 and 7 parts of uneven sizes (one of a
/// single image, one empty) of 1000 images give outputs within 1e-10 relative for every method at every grid t
/// (worst measured 8e-12, the Gaussian: its eigendecomposition of moments summed in another order).
final class ShardingTests: XCTestCase {
    static func engine(splits: [Int], xflip: Bool) throws -> DenoisingEngine {
        let train = ExactnessTests.fixture.train
        let shards = try zip(splits, splits.dropFirst()).map { lo, hi -> InProcessShard in
            let part = train.slice(lo..<hi)
            // Small BLAS blocks force ragged block edges inside shards too.
            return InProcessShard(
                images: try ImageSet(pixels: part.pixels, count: part.count, shape: part.shape, xflip: xflip),
                threads: 2, blockImages: 136)
        }
        return try DenoisingEngine(sources: shards)
    }

    func testEveryMethodAgreesAcrossShardings() async throws {
        let (flex, _) = try ExactnessTests.flexMasks()
        let methods: [DenoiseMethod] = [
            .empirical, .pspcSquare(.constant(3)), .pspcSquare(.constant(7)), .pspcSquare(.constant(15)),
            .pspcFlex(flex), .gaussian, .cfdm(smoothing: 0.2, copies: 2, seed: 3),
        ]
        let n = ExactnessTests.trainCount
        let splits = [[0, n], [0, 13, 600, n], [0, 1, 1, 250, 251, 700, 999, n]]
        for xflip in [false, true] {
            let engines = try splits.map { try Self.engine(splits: $0, xflip: xflip) }
            for method in methods {
                var worst = 0.0
                for (ti, t) in ExactnessTests.grid.enumerated() {
                    let z = ExactnessTests.query(ti, t: t) + ExactnessTests.query(ti + 20, t: t)
                    var outputs: [[Double]] = []
                    for engine in engines { outputs.append(try await engine.denoise(z, t: t, method: method).values) }
                    for other in outputs.dropFirst() {
                        let difference = relativeError(other, outputs[0])
                        worst = max(worst, difference)
                        XCTAssertLessThanOrEqual(difference, 1e-10, "\(method.name) xflip=\(xflip) t=\(t)")
                    }
                }
                print("sharding \(method.name) xflip=\(xflip): worst difference \(worst)")
            }
        }
    }
}

/// 1, 3 and 7 uneven shards (one empty, two of a single image) at every shape of the exactness tests, every
/// method, every grid t. The engine merges shards in shard order, but the partials themselves depend on the split:
/// each shard's running maximum, BLAS blocks and tile chunks differ, and the kernels' exp (relative error
/// <= 7e-12) is evaluated at other arguments, so the outputs agree to rounding, not bit for bit.
final class ShapeShardingTests: XCTestCase {
    static let bound = 1e-11

    func testEveryShapeAndMethodAgreesAcrossShardings() async throws {
        for c in ExactnessTests.cases {
            let n = c.train.count
            let splits = [[0, n], [0, 5, n / 2 + 3, n], [0, 1, 1, 9, 10, n / 2 + 5, n - 1, n]]
            let engines = try splits.map { try c.engine(splits: $0) }
            let (flex, _) = try ExactnessTests.flex(for: c.shape)
            let methods: [(String, DenoiseMethod)] = [
                ("empirical", .empirical), ("pspc-square s=3", .pspcSquare(.constant(3))),
                ("pspc-square s=\(c.squareSizes[2])", .pspcSquare(.constant(c.squareSizes[2]))),
                ("pspc-flex", .pspcFlex(flex)), ("cfdm", .cfdm(smoothing: 0.2, copies: 2, seed: 3)),
            ]
                // The Gaussian merges moments, whatever the shape; its D x D eigendecomposition (seconds at
                // D = 3072) runs once per engine, so it is sharded at 1x28x28 only.
                + (c.shape.dimension <= 784 ? [("gaussian", DenoiseMethod.gaussian)] : [])
            for (name, method) in methods {
                let (worst, bitEqual) = try await Self.compare(
                    engines, splits: splits, on: c, name: name, method: method, bound: Self.bound)
                print("sharding \(name) \(c.name): worst relative difference \(worst), bit-equal \(bitEqual)")
            }
        }
    }

    /// Runs `method` through every engine (one per split) at every grid t, two queries of `c` each, and checks each
    /// output against the first engine's within `bound`; returns the worst relative difference and whether all
    /// were bit-equal.
    static func compare(
        _ engines: [DenoisingEngine], splits: [[Int]], on c: ExactnessCase, name: String, method: DenoiseMethod,
        bound: Double
    ) async throws -> (worst: Double, bitEqual: Bool) {
        var worst = 0.0, bitEqual = true
        for (ti, t) in ExactnessTests.grid.enumerated() {
            let z = c.query(2 * ti, t: t) + c.query(2 * ti + 1, t: t)
            var outputs: [[Double]] = []
            for engine in engines { outputs.append(try await engine.denoise(z, t: t, method: method).values) }
            for (k, other) in outputs.enumerated().dropFirst() {
                let difference = relativeError(other, outputs[0])
                worst = max(worst, difference)
                bitEqual = bitEqual && other == outputs[0]
                XCTAssertLessThanOrEqual(
                    difference, bound, "\(name) \(c.name) t=\(t): \(splits[k].count - 1) shards vs 1")
            }
        }
        return (worst, bitEqual)
    }
}
