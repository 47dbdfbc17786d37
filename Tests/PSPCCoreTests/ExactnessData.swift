import Foundation
import PSPCCore
import PSPCData

/// The data of the exactness tests: real Fashion-MNIST images, as they are (1x28x28) and made into colour
/// scenes of other shapes (3x24x40, 3x32x32), deterministically and without downloads.
struct ExactnessCase: Sendable {
    let name: String
    let train: ImageArray
    /// The images the queries start from (not in `train`).
    let sources: ImageArray
    let xflip: Bool
    /// Patch sizes PSPC-Square is checked at, every grid t.
    let squareSizes: [Int]

    var shape: ImageShape { train.shape }

    /// The reference's training set, x-flipped copies included.
    var images: [[Double]] { Reference.trainingSet(train.pixels, count: train.count, shape: shape, xflip: xflip) }

    /// Query `i`: source image i (cycling) plus t times seeded noise.
    func query(_ i: Int, t: Double) -> [Double] {
        let dim = shape.dimension, k = i % sources.count
        let eps = NormalNoise(seed: 7).normals(stream: UInt64(i), count: dim)
        return (0..<dim).map { Double(sources.pixels[k * dim + $0]) / 127.5 - 1 + t * eps[$0] }
    }

    /// The engine over `splits` (image boundaries, first 0, last `train.count`): one in-process shard per
    /// part, small BLAS blocks so block edges fall inside shards.
    func engine(splits: [Int]? = nil) throws -> DenoisingEngine {
        let splits = splits ?? [0, train.count]
        let shards = try zip(splits, splits.dropFirst()).map { lo, hi -> InProcessShard in
            let part = train.slice(lo..<hi)
            return InProcessShard(
                images: try ImageSet(pixels: part.pixels, count: part.count, shape: shape, xflip: xflip),
                threads: 2, blockImages: 24)
        }
        return try DenoisingEngine(sources: shards)
    }

    /// 1x28x28 Fashion-MNIST as it is.
    static func gray28(trainCount: Int, xflip: Bool) -> ExactnessCase {
        ExactnessCase(
            name: "1x28x28" + (xflip ? " xflip" : ""), train: FashionData.train.prefix(trainCount),
            sources: FashionData.test.prefix(8), xflip: xflip, squareSizes: [3, 7, 15, 28])
    }

    /// 3x24x40 (H != W): s = 24 = H is one row of 17 crops, not the whole image.
    static func wide(trainCount: Int) -> ExactnessCase {
        let shape = ImageShape(channels: 3, height: 24, width: 40)
        return ExactnessCase(
            name: "3x24x40 xflip", train: scenes(FashionData.train, first: 0, count: trainCount, shape: shape, seed: 1),
            sources: scenes(FashionData.test, first: 0, count: 8, shape: shape, seed: 2), xflip: true,
            squareSizes: [1, 3, 8, 24])
    }

    /// 3x32x32, the CIFAR-10 shape.
    static func colour32(trainCount: Int) -> ExactnessCase {
        let shape = ImageShape(channels: 3, height: 32, width: 32)
        return ExactnessCase(
            name: "3x32x32", train: scenes(FashionData.train, first: 100, count: trainCount, shape: shape, seed: 3),
            sources: scenes(FashionData.test, first: 8, count: 8, shape: shape, seed: 4), xflip: false,
            squareSizes: [3, 7, 16, 32])
    }

    /// Colour scenes from Fashion-MNIST items `first..<first + count`: each item rescaled (nearest neighbour)
    /// to a side between 16 and min(H, W), tinted with a colour per channel and laid over a background whose
    /// colour runs linearly across the image, at a seeded offset. Every draw comes from the seeded noise of
    /// (seed, item), so the scenes are the same on every machine.
    static func scenes(_ items: ImageArray, first: Int, count: Int, shape: ImageShape, seed: UInt64) -> ImageArray {
        let (c, h, w) = (shape.channels, shape.height, shape.width)
        var pixels = [UInt8](repeating: 0, count: count * shape.dimension)
        for k in 0..<count {
            // Seeded draws: |normal| scaled to a large integer, reduced mod n.
            let draws = NormalNoise(seed: seed).normals(stream: UInt64(k), count: 16)
            var used = 0
            func next(_ n: Int) -> Int {
                used += 1
                return Int(abs(draws[used - 1]) * 1_000_003) % n
            }
            let side = 16 + next(min(h, w) - 15)
            let oy = next(h - side + 1), ox = next(w - side + 1)
            let tint = (0..<c).map { _ in Double(next(256)) }
            let left = (0..<c).map { _ in Double(next(256)) }, right = (0..<c).map { _ in Double(next(256)) }
            let item = (first + k) * 784
            for ch in 0..<c {
                for y in 0..<h {
                    for x in 0..<w {
                        let background = left[ch] + (right[ch] - left[ch]) * Double(x) / Double(w - 1)
                        var alpha = 0.0
                        if (oy..<(oy + side)).contains(y) && (ox..<(ox + side)).contains(x) {
                            let sy = (y - oy) * 28 / side, sx = (x - ox) * 28 / side
                            alpha = Double(items.pixels[item + sy * 28 + sx]) / 255
                        }
                        let value = background * (1 - alpha) + tint[ch] * alpha
                        pixels[k * shape.dimension + (ch * h + y) * w + x] = UInt8(value.rounded())
                    }
                }
            }
        }
        return ImageArray(pixels: pixels, count: count, shape: shape)
    }
}

/// Fashion-MNIST read once: the first 1000 training images and the first 64 test images.
enum FashionData {
    static let train = try! IDXReader.read(path: FashionMNIST.directory + "/train-images-idx3-ubyte.gz", limit: 1000)
    static let test = try! IDXReader.read(path: FashionMNIST.directory + "/t10k-images-idx3-ubyte.gz", limit: 64)
}
