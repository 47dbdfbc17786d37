import PSPCCore
import XCTest

/// The engine's PSPC-Flex masks (FlexMasks) against the lambda rule implemented from its definition in the test
/// (Reference.lambdaMasks): the same pixel sets, as multisets of masks (the engine merges identical masks and
/// drops empty ones), for random heatmaps of square and non-square images and many lambdas.
final class FlexMaskRuleTests: XCTestCase {
    /// The engine's masks, one entry per output pixel they serve, each sorted, the list sorted.
    static func engineMasks(_ set: MaskSet) -> [[Int]] {
        var out: [[Int]] = []
        for k in 0..<set.count {
            let mask = set.pixels[set.offsets[k]..<set.offsets[k + 1]].map(Int.init).sorted()
            out += Array(repeating: mask, count: Int(set.multiplicity[k]))
        }
        return out.sorted { $0.lexicographicallyPrecedes($1) }
    }

    static func referenceMasks(_ maps: [Double], pixels p: Int, lambda: Double) -> [[Int]] {
        Reference.lambdaMasks(maps: maps, pixels: p, lambda: lambda).filter { !$0.isEmpty }
            .sorted { $0.lexicographicallyPrecedes($1) }
    }

    /// Integer heatmaps without ties in a row: a random permutation of the ranks 1...H W through a power law, so
    /// the mass is spread (exponent 0: ties broken by the rank in the low bits only) or concentrated (exponent 3),
    /// plus rows of all zeros (no mass). Values stay below 2^43 and rows (H W <= 1024) below 2^53: every sum is
    /// exact.
    static func randomMaps(height h: Int, width w: Int, seed: UInt64, exponent: Double) -> [Double] {
        let p = h * w
        let noise = NormalNoise(seed: seed)
        var maps: [Double] = []
        for out in 0..<p {
            if out % 17 == 5 {
                maps += [Double](repeating: 0, count: p)
                continue
            }
            // Ranks of seeded normals: a permutation of 0..<p.
            let keys = noise.normals(stream: UInt64(out), count: p)
            let order = (0..<p).sorted { keys[$0] < keys[$1] }
            var row = [Double](repeating: 0, count: p)
            for (rank, q) in order.enumerated() {
                let weight = (pow(Double(rank + 1) / Double(p), exponent) * 0x1p32).rounded(.down)
                row[q] = weight * 1024 + Double(rank)
            }
            maps += row
        }
        return maps
    }

    func testMasksMatchTheIndependentLambdaRule() throws {
        let lambdas = [0, 1e-9, 0.05, 0.3, 0.5, 0.7, 0.85, 0.999, 1, 1.5]
        for (h, w) in [(1, 1), (1, 9), (5, 7), (24, 40), (32, 32)] {
            precondition(h * w <= 1024)
            let p = h * w
            for exponent in [0.0, 3] {
                let maps = Self.randomMaps(height: h, width: w, seed: UInt64(h * 100 + w), exponent: exponent)
                for lambda in lambdas {
                    let flex = try FlexMasks(
                        maps: maps, levels: 1, height: h, width: w, levelTimes: [1], lambda: .constant(lambda))
                    let engine = Self.engineMasks(flex.masks(at: 1))
                    let reference = Self.referenceMasks(maps, pixels: p, lambda: lambda)
                    XCTAssertEqual(engine.count, reference.count, "\(h)x\(w) exponent \(exponent) lambda \(lambda)")
                    XCTAssertTrue(engine == reference, "\(h)x\(w) exponent \(exponent) lambda \(lambda): masks differ")
                }
            }
        }
    }

    /// Several heatmap levels and a lambda schedule: at each grid t the engine uses the level and lambda of the
    /// nearest grid time, as the reference does.
    func testMasksFollowTheLevelAndScheduleAtEveryGridT() throws {
        for shape in [ImageShape(channels: 3, height: 24, width: 40), ImageShape(channels: 3, height: 32, width: 32)] {
            let (flex, maps) = try ExactnessTests.flex(for: shape)
            var sizes: Set<Int> = []
            for t in ExactnessTests.grid {
                let level = Reference.nearest(t, in: ExactnessTests.flexLevels)
                let lambda = ExactnessTests.flexLambdas[Reference.nearest(t, in: ExactnessTests.grid)]
                let engine = Self.engineMasks(flex.masks(at: t))
                let reference = Self.referenceMasks(maps[level], pixels: shape.pixelCount, lambda: lambda)
                XCTAssertTrue(engine == reference, "\(shape) t = \(t): masks differ")
                sizes.formUnion(reference.map(\.count))
            }
            XCTAssertGreaterThan(sizes.count, 4, "\(shape): the masks should vary in size")
        }
    }
}
