import PSPCCore
import XCTest

/// Masks covering more than half of the image are evaluated through their complement (whole-image distance
/// less the uncovered part; weight everywhere less where the mask does not reach): the composite must equal the
/// literal one, mask by mask, at every t from 0.002 to 80.
final class FlexComplementTests: XCTestCase {
    func testLargeMasksMatchTheLiteralComposite() async throws {
        let train = ExactnessTests.fixture.train.prefix(60)
        let shape = train.shape
        let p = shape.pixelCount
        // Random positive maps: lambda = 0.85 keeps most of each map (about 70 % of the positions), lambda = 0.2
        // keeps a small part, so both kinds of rows meet in one composite.
        let noise = NormalNoise(seed: 11)
        var maps: [Double] = []
        for out in 0..<p { maps += noise.normals(stream: UInt64(out), count: p).map { exp(0.5 * $0) } }
        let times = [80.0, 0.3, 0.002]
        for lambda in [0.85, 0.2] {
            let flex = try FlexMasks(
                maps: maps, levels: 1, height: shape.height, width: shape.width, levelTimes: [1], lambda: .constant(lambda))
            let masks = flex.masks(at: 1)
            let sizes = (0..<masks.count).map { masks.offsets[$0 + 1] - masks.offsets[$0] }
            if lambda > 0.5 {
                XCTAssertTrue(sizes.allSatisfy { $0 * 2 > p }, "the test needs masks over half the image")
            } else {
                XCTAssertTrue(sizes.allSatisfy { $0 * 2 < p })
            }
            let set = try ImageSet(pixels: train.pixels, count: train.count, shape: shape, xflip: true)
            let engine = try DenoisingEngine(sources: [InProcessShard(images: set, threads: 2)])
            let images = Reference.trainingSet(train.pixels, count: train.count, shape: shape, xflip: true)
            var crops: [[Int]] = []
            for k in 0..<masks.count {
                let mask = masks.pixels[masks.offsets[k]..<masks.offsets[k + 1]].map(Int.init)
                crops += Array(repeating: mask, count: Int(masks.multiplicity[k]))
            }
            for (i, t) in times.enumerated() {
                let z = ExactnessTests.query(i, t: t)
                let out = try await engine.denoise(z, t: t, method: .pspcFlex(flex)).values
                let expected = Reference.compositeMemoized(
                    z: z, t: t, images: images, crops: crops, shape: shape,
                    fallback: Reference.empirical(z: z, t: t, images: images))
                let error = maxAbsDifference(out, expected)
                XCTAssertLessThanOrEqual(error, ExactnessTests.tolerance, "lambda \(lambda) t = \(t): \(error)")
            }
        }
    }
}
