import Foundation
import PSPCCore
import PSPCData
import PSPCExperiments

/// Small synthetic training sets and a stand-in network for experiment tests.
enum Fixture {
    static let shape = ImageShape(channels: 1, height: 8, width: 8)

    /// `count` smooth-ish random images (seeded), uint8.
    static func images(count: Int = 60, seed: UInt64 = 1) -> ImageArray {
        let noise = NormalNoise(seed: seed)
        var pixels: [UInt8] = []
        for i in 0..<count {
            let v = noise.normals(stream: UInt64(i), count: shape.dimension)
            for (j, x) in v.enumerated() {
                let ramp = Double(j % shape.width) * 12
                pixels.append(UInt8(max(0, min(255, 100 + ramp + 40 * x))))
            }
        }
        return ImageArray(pixels: pixels, count: count, shape: shape)
    }

    /// An engine over the images split at `splits` (in-process shards, x-flipped).
    static func engine(_ images: ImageArray = images(), splits: [Int]? = nil) throws -> DenoisingEngine {
        let cuts = splits ?? [0, images.count]
        let shards = try zip(cuts, cuts.dropFirst()).map { lo, hi in
            let part = images.slice(lo..<hi)
            return InProcessShard(
                images: try ImageSet(pixels: part.pixels, count: part.count, shape: part.shape, xflip: true), threads: 2)
        }
        return try DenoisingEngine(sources: shards, batchSize: 5)
    }

    /// A deterministic stand-in for a trained network: shrinks z towards 0 like a Gaussian denoiser with unit
    /// data variance.
    static let network: BatchDenoiser = { z, t, progress in
        progress(z.count / shape.dimension)
        return z.map { $0 / (1 + t * t) }
    }

    /// The test's variants: network, empirical, gaussian, pspc-square s = 3 and 5, cfdm.
    static var variants: [Variant] {
        [
            .network, Variant(method: "empirical", engineMethod: .empirical),
            Variant(method: "gaussian", engineMethod: .gaussian),
            Variant(method: "pspc-square", param: .patchSize(3), engineMethod: .pspcSquare(.constant(3))),
            Variant(method: "pspc-square", param: .patchSize(5), engineMethod: .pspcSquare(.constant(5))),
            Variant(method: "cfdm", engineMethod: .cfdm(smoothing: 0.1, copies: 2, seed: 4)),
        ]
    }

    static func temporaryDirectory(_ name: String) throws -> String {
        let path = NSTemporaryDirectory() + "pspc-\(name)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static let grid = [20.0, 3.0, 0.5, 0.05, 0.002]

    static func x0(count: Int) -> [Double] {
        Array(images(count: count, seed: 9).pixels.map { Double($0) / 127.5 - 1 })
    }
}

struct InjectedFailure: Error {}
