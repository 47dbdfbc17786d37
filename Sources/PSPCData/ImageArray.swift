import PSPCCore

/// Images in memory as uint8 `[count, C, H, W]` row-major: what every reader returns and a shard stores.
public struct ImageArray: Sendable, Equatable {
    public var pixels: [UInt8]
    public var count: Int
    public var shape: ImageShape

    public init(pixels: [UInt8], count: Int, shape: ImageShape) {
        precondition(pixels.count == count * shape.dimension, "image buffer does not match count x shape")
        self.pixels = pixels
        self.count = count
        self.shape = shape
    }

    /// The first `n` images (all of them when n >= count).
    public func prefix(_ n: Int) -> ImageArray {
        let k = min(n, count)
        return ImageArray(pixels: Array(pixels[0..<(k * shape.dimension)]), count: k, shape: shape)
    }

    /// Images [from, to).
    public func slice(_ range: Range<Int>) -> ImageArray {
        let dim = shape.dimension
        return ImageArray(
            pixels: Array(pixels[(range.lowerBound * dim)..<(range.upperBound * dim)]), count: range.count, shape: shape
        )
    }
}
