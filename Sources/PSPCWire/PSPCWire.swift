/// The wire protocol (docs/design.md section 5): framed protobuf messages generated from
/// protos/pspc/v1/pspc.proto (`Generated/`, never edited), the frame codec, the handshake and the
/// conversions between the engine's types and the messages. No sockets: the cluster module wraps
/// these in NIO channel handlers.
public enum PSPCWire {
    /// The version of the wire protocol, independent of the package version. A server answers a Hello
    /// with any other version with `unsupportedVersion` and closes. Version 2 seals every frame after the
    /// handshake with a MAC and a sequence number (`SessionKeys`).
    public static let protocolVersion: UInt32 = 2

    /// The four bytes every Hello starts with, checked before anything else.
    public static let magic: [UInt8] = Array("PSPC".utf8)
}
