import PSPCKernels

/// A set of training images held as uint8 in the lane-interleaved layout the kernels read:
/// tile k holds images 8k..8k+7 as `[dimension][8]` (see PSPCKernels.h). Values map to [-1, 1] as
/// u / 127.5 - 1 when read. Padding lanes of the last tile are zero and never contribute.
public final class ImageSet: Sendable {
    public let shape: ImageShape
    public let count: Int
    /// `[tileCount][dimension][PSPC_LANES]` uint8.
    let tiles: [UInt8]

    public static let lanes = Int(PSPC_LANES)
    public var tileCount: Int { (count + Self.lanes - 1) / Self.lanes }

    /// Builds the set from images `[n, C, H, W]` uint8 row-major. With `xflip`, horizontally mirrored copies
    /// of every image follow the originals (2n images), as the paper's reference code does.
    public init(pixels: [UInt8], count n: Int, shape: ImageShape, xflip: Bool) throws {
        guard pixels.count == n * shape.dimension else {
            throw PSPCError.shapeMismatch(
                "image buffer holds \(pixels.count) bytes, expected \(n) x \(shape) = \(n * shape.dimension)")
        }
        self.shape = shape
        let total = xflip ? 2 * n : n
        self.count = total
        let dim = shape.dimension, lanes = Self.lanes
        let tileCount = (total + lanes - 1) / lanes
        var tiles = [UInt8](repeating: 0, count: tileCount * dim * lanes)
        let width = shape.width
        pixels.withUnsafeBufferPointer { src in
            tiles.withUnsafeMutableBufferPointer { dst in
                for image in 0..<total {
                    let source = image % n
                    let flipped = image >= n
                    let base = (image / lanes) * dim * lanes + image % lanes
                    let from = source * dim
                    for d in 0..<dim {
                        var s = d
                        if flipped {
                            let x = d % width
                            s = d - x + (width - 1 - x)
                        }
                        dst[base + d * lanes] = src[from + s]
                    }
                }
            }
        }
        self.tiles = tiles
    }

    /// Concatenates sets of the same shape (used by tests and to merge shards in one process).
    public convenience init(concatenating sets: [ImageSet]) throws {
        guard let first = sets.first else { throw PSPCError.invalidArgument("no image sets to concatenate") }
        var pixels: [UInt8] = []
        for set in sets {
            guard set.shape == first.shape else {
                throw PSPCError.shapeMismatch("cannot concatenate \(set.shape) images with \(first.shape) images")
            }
            pixels += set.images()
        }
        try self.init(pixels: pixels, count: pixels.count / first.shape.dimension, shape: first.shape, xflip: false)
    }

    /// The images back in `[count, C, H, W]` row-major uint8 (x-flipped copies included).
    public func images() -> [UInt8] {
        let dim = shape.dimension, lanes = Self.lanes
        var out = [UInt8](repeating: 0, count: count * dim)
        for image in 0..<count {
            let base = (image / lanes) * dim * lanes + image % lanes
            for d in 0..<dim { out[image * dim + d] = tiles[base + d * lanes] }
        }
        return out
    }

    /// Calls `body` with the C view of the tiles.
    func withTiles<R>(_ body: (UnsafePointer<pspc_image_tiles>) throws -> R) rethrows -> R {
        try tiles.withUnsafeBufferPointer { buffer in
            var view = pspc_image_tiles(
                tiles: buffer.baseAddress, count: count, channels: Int32(shape.channels),
                height: Int32(shape.height), width: Int32(shape.width))
            return try body(&view)
        }
    }
}
