/// The shape of one image: `channels` planes of `height` x `width` pixels, stored `[C, H, W]` row-major.
public struct ImageShape: Sendable, Hashable, Codable, CustomStringConvertible {
    public var channels: Int
    public var height: Int
    public var width: Int

    public init(channels: Int, height: Int, width: Int) {
        self.channels = channels
        self.height = height
        self.width = width
    }

    /// Pixel positions per channel, `H * W`.
    public var pixelCount: Int { height * width }
    /// Values per image, `C * H * W`.
    public var dimension: Int { channels * height * width }

    public var description: String { "\(channels)x\(height)x\(width)" }
}
