import PSPCCore

/// Images read one at a time in dataset order, so a dataset of any size goes into shards without being
/// held in memory: `count` and `shape` are known when the stream is opened, and each `next` appends one
/// image, uint8 `[C, H, W]`, to a buffer.
public final class ImageStream {
    public let shape: ImageShape
    public let count: Int
    /// Images handed out so far.
    public private(set) var position = 0
    private let produce: (Int, inout [UInt8]) throws -> Void

    /// A stream of `count` images of `shape`; `produce(index, &buffer)` appends image `index` (called for
    /// 0, 1, ... in order).
    public init(shape: ImageShape, count: Int, produce: @escaping (Int, inout [UInt8]) throws -> Void) {
        self.shape = shape
        self.count = count
        self.produce = produce
    }

    /// The images of an array already in memory.
    public convenience init(_ images: ImageArray) {
        let dimension = images.shape.dimension
        self.init(shape: images.shape, count: images.count) { index, buffer in
            buffer += images.pixels[(index * dimension)..<((index + 1) * dimension)]
        }
    }

    /// Appends the next image to `buffer`.
    public func next(into buffer: inout [UInt8]) throws {
        precondition(position < count, "read past the end of an image stream")
        let before = buffer.count
        try produce(position, &buffer)
        precondition(buffer.count - before == shape.dimension, "an image stream produced a wrong-sized image")
        position += 1
    }

    /// Every remaining image, in memory; `progress(done, total)` after each.
    public func readAll(progress: ((Int, Int) -> Void)? = nil) throws -> ImageArray {
        var pixels: [UInt8] = []
        pixels.reserveCapacity((count - position) * shape.dimension)
        let first = position
        while position < count {
            try next(into: &pixels)
            progress?(position, count)
        }
        return ImageArray(pixels: pixels, count: count - first, shape: shape)
    }
}
