import PSPCCore
import XCTest

/// Answers must not depend on how the training set is split: 1, 3 and 7 parts of uneven sizes (one of a
/// single image, one empty) give outputs within 1e-5 for every method at every grid t.
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
                        let difference = maxAbsDifference(outputs[0], other)
                        worst = max(worst, difference)
                        XCTAssertLessThanOrEqual(difference, 1e-5, "\(method.name) xflip=\(xflip) t=\(t)")
                    }
                }
                print("sharding \(method.name) xflip=\(xflip): worst difference \(worst)")
            }
        }
    }
}
