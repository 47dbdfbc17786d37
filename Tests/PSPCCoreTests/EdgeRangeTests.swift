import PSPCCore
import XCTest

/// t at the ends of the representable range (DenoisingEngine.tRange): exact inside, a clear error outside.
final class EdgeRangeTests: XCTestCase {
    static let methods: [DenoiseMethod] = [
        .empirical, .pspcSquare(.constant(7)), .gaussian, .cfdm(smoothing: 1, copies: 2, seed: 1),
    ]

    /// At t = 1e-100 and 1e-140 the empirical denoiser is the nearest training image (float64 reference).
    func testTinyTGivesTheNearestTrainingImage() async throws {
        let fixture = ExactnessTests.fixture
        let shape = fixture.train.shape
        let images = Reference.trainingSet(fixture.train.pixels, count: fixture.train.count, shape: shape, xflip: true)
        let engine = try ExactnessTests.engine(xflip: true)
        for t in [1e-100, 1e-140] {
            let z = ExactnessTests.query(0, t: 1)
            let nearest = images.min { a, b in
                zip(z, a).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
                    < zip(z, b).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
            }!
            let out = try await engine.denoise(z, t: t, method: .empirical).values
            XCTAssertLessThanOrEqual(maxAbsDifference(out, nearest), 1e-12, "t = \(t)")
            for method in Self.methods {
                let values = try await engine.denoise(z, t: t, method: method).values
                XCTAssertTrue(values.allSatisfy(\.isFinite), "\(method.name) at t = \(t)")
                XCTAssertFalse(values.allSatisfy { $0 == 0 }, "\(method.name) at t = \(t) is all zeros")
            }
        }
    }

    /// At t = 1e100 every weight is equal: the empirical denoiser is the training mean.
    func testHugeTGivesTheTrainingMean() async throws {
        let fixture = ExactnessTests.fixture
        let shape = fixture.train.shape, dim = shape.dimension
        let images = Reference.trainingSet(fixture.train.pixels, count: fixture.train.count, shape: shape, xflip: true)
        let mean = (0..<dim).map { d in images.reduce(0) { $0 + $1[d] } / Double(images.count) }
        let engine = try ExactnessTests.engine(xflip: true)
        let z = ExactnessTests.query(0, t: 1)
        let out = try await engine.denoise(z, t: 1e100, method: .empirical).values
        XCTAssertLessThanOrEqual(maxAbsDifference(out, mean), 1e-12)
    }

    /// t outside the range (1e-155 returned zeros; 1e-160 claimed an empty training set) and huge query values
    /// are errors naming the range, for every method.
    func testOutOfRangeIsAnErrorNamingTheRange() async throws {
        let engine = try ExactnessTests.engine(xflip: false)
        let z = ExactnessTests.query(0, t: 1)
        for method in Self.methods {
            for t in [1e-155, 1e-160, 1e-300, 1e160, 1e300] {
                do {
                    _ = try await engine.denoise(z, t: t, method: method)
                    XCTFail("\(method.name): t = \(t) accepted")
                } catch let error as PSPCError {
                    XCTAssertTrue(error.description.contains("representable range [1e-140, 1e+140]"), error.description)
                    XCTAssertFalse(error.description.contains("empty training set"), error.description)
                }
            }
            var big = z
            big[5] = 1e200
            do {
                _ = try await engine.denoise(big, t: 1, method: method)
                XCTFail("\(method.name): query value 1e200 accepted")
            } catch let error as PSPCError {
                XCTAssertTrue(error.description.contains("index 5"), error.description)
                XCTAssertTrue(error.description.contains("representable range"), error.description)
            }
            var nan = z
            nan[9] = .nan
            do {
                _ = try await engine.denoise(nan, t: 1, method: method)
                XCTFail("\(method.name): NaN accepted")
            } catch let error as PSPCError {
                XCTAssertTrue(error.description.contains("non-finite"), error.description)
                XCTAssertTrue(error.description.contains("index 9"), error.description)
            }
        }
    }
}
