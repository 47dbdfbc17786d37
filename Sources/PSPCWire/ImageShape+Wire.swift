import PSPCCore

extension Pspc_V1_ImageShape {
    public init(_ shape: ImageShape) {
        self.init()
        channels = UInt32(clamping: shape.channels)
        height = UInt32(clamping: shape.height)
        width = UInt32(clamping: shape.width)
    }
}

extension ImageShape {
    /// Rejects a shape with an empty side.
    public init(wire: Pspc_V1_ImageShape, field: String = "shape") throws {
        guard wire.channels > 0, wire.height > 0, wire.width > 0 else {
            throw WireError.invalidArgument(
                "\(field) \(wire.channels)x\(wire.height)x\(wire.width) has an empty side")
        }
        self.init(channels: Int(wire.channels), height: Int(wire.height), width: Int(wire.width))
    }
}
