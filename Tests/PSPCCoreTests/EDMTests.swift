import PSPCCore
import XCTest

final class EDMTests: XCTestCase {
    func testGridMatchesThePaper() {
        let paper = [
            80, 57.59, 40.79, 28.37, 19.35, 12.91, 8.40, 5.32, 3.26, 1.92, 1.09, 0.585, 0.296, 0.140, 0.060, 0.023,
            0.0075, 0.002,
        ]
        let grid = EDM.grid(steps: 18)
        XCTAssertEqual(grid.count, 18)
        for (g, p) in zip(grid, paper) { XCTAssertEqual(g, p, accuracy: max(0.005, p * 0.01)) }
        XCTAssertEqual(grid.first!, 80, accuracy: 1e-12)
        XCTAssertEqual(grid.last!, 0.002, accuracy: 1e-15)
    }

    func testNearestIndexUsesLogDistance() {
        let grid = EDM.grid(steps: 18)
        XCTAssertEqual(EDM.nearestIndex(of: 0.0021, in: grid), 17)
        XCTAssertEqual(EDM.nearestIndex(of: 0.007, in: grid), 16)
        XCTAssertEqual(EDM.nearestIndex(of: 1000, in: grid), 0)
    }

    /// With the exact posterior mean of a single-point data set, D = x0, Euler lands exactly on x0.
    func testSamplersReachASinglePointDataSet() async throws {
        let x0 = [0.25, -0.5]
        for solver in EDM.Solver.allCases {
            let out = try await EDM.sample(from: [30, -12], grid: EDM.grid(steps: 18), solver: solver) { z, _ in
                Array(repeating: x0, count: z.count / 2).flatMap { $0 }
            }
            XCTAssertEqual(out[0], 0.25, accuracy: 1e-12)
            XCTAssertEqual(out[1], -0.5, accuracy: 1e-12)
        }
    }

    func testNoiseIsDeterministicAndStandard() {
        let a = NormalNoise(seed: 5).normals(stream: 9, count: 100_000)
        XCTAssertEqual(a, NormalNoise(seed: 5).normals(stream: 9, count: 100_000))
        XCTAssertNotEqual(a, NormalNoise(seed: 5).normals(stream: 10, count: 100_000))
        let mean = a.reduce(0, +) / Double(a.count)
        let variance = a.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(a.count)
        XCTAssertEqual(mean, 0, accuracy: 0.01)
        XCTAssertEqual(variance, 1, accuracy: 0.02)
    }
}
