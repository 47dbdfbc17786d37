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
                let expected = Reference.composite(
                    z: z, t: t, images: images, crops: crops, shape: shape,
                    fallback: Reference.empirical(z: z, t: t, images: images))
                let error = relativeError(out, expected)
                XCTAssertLessThanOrEqual(error, ExactnessTests.bounds["pspc-flex"]!, "lambda \(lambda) t = \(t): \(error)")
            }
        }
    }

    /// The same on 3x24x40 (H != W, three channels), against masks from the independent lambda rule: lambda = 0.85
    /// over maps of spread mass keeps about 60 % of the positions (complemented rows); rows without mass keep all.
    func testLargeMasksOnNonSquareColourImages() async throws {
        let c = ExactnessCase.wide(trainCount: 24)
        let shape = c.shape, p = shape.pixelCount
        let large = FlexMaskRuleTests.randomMaps(height: shape.height, width: shape.width, seed: 5, exponent: 0)
        let flex = try FlexMasks(
            maps: large, levels: 1, height: shape.height, width: shape.width, levelTimes: [1], lambda: .constant(0.85))
        let masks = Reference.lambdaMasks(maps: large, pixels: p, lambda: 0.85)
        XCTAssertGreaterThan(masks.filter { $0.count * 2 > p }.count, p / 2, "the test needs masks over half the image")
        let engine = try c.engine()
        let images = c.images
        for (i, t) in [80.0, 0.3, 0.002].enumerated() {
            let z = c.query(i, t: t)
            let out = try await engine.denoise(z, t: t, method: .pspcFlex(flex)).values
            let expected = Reference.flex(z: z, t: t, images: images, masks: masks, shape: shape)
            let error = relativeError(out, expected)
            print("flex complement 3x24x40 t = \(t): relative error \(error)")
            XCTAssertLessThanOrEqual(error, ExactnessTests.bounds["pspc-flex"]!, "t = \(t): \(error)")
        }
    }
}
