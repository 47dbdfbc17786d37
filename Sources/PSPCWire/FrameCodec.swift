import NIOCore
import SwiftProtobuf

/// The framing of a pspc connection: a 4-byte big-endian length N, then N bytes of one serialized
/// `pspc.v1.Frame` (protobuf binary). Nothing else travels on the connection.
///
/// ```
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |               length N (UInt32, big-endian, <= limit)         |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                                                               |
/// +          pspc.v1.Frame { request_id, oneof body }             +
/// |                     N bytes, protobuf binary                  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///
///  BEFORE DECODE (4 + 13 bytes)                   AFTER DECODE
///  +------------+--------------------------+      +----------------------+
///  | 00 00 00 0D| 13 bytes of Frame        | ---> | Pspc_V1_Frame        |
///  +------------+--------------------------+      +----------------------+
/// ```
///
/// The length is checked against the receiver's limit as soon as its 4 bytes arrive, before any
/// buffer for the frame is allocated; an oversized frame ends the connection. After the handshake N also
/// covers a 32-byte MAC at the end (`SessionKeys`, `FrameSecurity`).
public enum FrameCodec {
    /// Bytes of the length prefix.
    public static let headerSize = 4
    /// The default limit on N: 64 MiB, room for a batch of 256 64x64x3 float64 queries with crops.
    public static let defaultMaxFrameSize = 64 << 20

    /// One frame as the bytes that travel, prefix included.
    public static func encodeFrame(_ frame: Pspc_V1_Frame, maxFrameSize: Int = defaultMaxFrameSize) throws -> [UInt8] {
        var buffer = ByteBufferAllocator().buffer(capacity: 0)
        try FrameEncoder(maxFrameSize: maxFrameSize).encode(data: frame, out: &buffer)
        return buffer.readBytes(length: buffer.readableBytes) ?? []
    }

    /// Every whole frame in `bytes`, in order, and how many bytes at the end belong to a frame not yet
    /// complete. Throws at the first frame that is too large or does not parse.
    public static func decodeFrames(
        _ bytes: [UInt8], maxFrameSize: Int = defaultMaxFrameSize
    ) throws -> (frames: [Pspc_V1_Frame], pendingBytes: Int) {
        var buffer = ByteBufferAllocator().buffer(bytes: bytes)
        var decoder = FrameDecoder(maxFrameSize: maxFrameSize)
        var frames: [Pspc_V1_Frame] = []
        while let frame = try decoder.decode(buffer: &buffer) { frames.append(frame) }
        return (frames, buffer.readableBytes)
    }

    static func checkLimit(_ maxFrameSize: Int) {
        precondition(maxFrameSize >= 0 && maxFrameSize <= Int(UInt32.max), "frame limit must fit the 4-byte length")
    }
}

/// Turns bytes into frames (see `FrameCodec` for the layout); returns nil while a frame is incomplete.
/// It only parses: buffering and back-pressure belong to the handler that drives it.
public struct FrameDecoder: NIOSingleStepByteToMessageDecoder, Sendable {
    public typealias InboundOut = Pspc_V1_Frame

    /// The largest N accepted when no `security` is given; a larger length prefix throws `frameTooLarge`
    /// before allocation.
    public let maxFrameSize: Int
    /// The connection's limit in force and MAC check, when the decoder serves a connection.
    public let security: FrameSecurity?

    public init(maxFrameSize: Int = FrameCodec.defaultMaxFrameSize) {
        FrameCodec.checkLimit(maxFrameSize)
        self.maxFrameSize = maxFrameSize
        self.security = nil
    }

    /// A decoder for one connection: the limit is the handshake's until `security` is established, and frames
    /// after that must carry a valid MAC.
    public init(security: FrameSecurity) {
        self.maxFrameSize = security.establishedLimit
        self.security = security
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> Pspc_V1_Frame? {
        guard let prefix = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt32.self) else {
            return nil
        }
        let length = Int(prefix)
        let limit = security?.inboundLimit ?? maxFrameSize
        guard length <= limit else { throw WireError.frameTooLarge(length: length, limit: limit) }
        guard buffer.readableBytes >= FrameCodec.headerSize + length else { return nil }
        buffer.moveReaderIndex(forwardBy: FrameCodec.headerSize)
        let bytes = buffer.readBytes(length: length)!
        guard let security, security.opener != nil else { return try Self.parse(bytes[...]) }
        let payload: ArraySlice<UInt8>
        do {
            payload = try security.open(bytes)
        } catch {
            // The server refusing the client's proof answers in plain text: read it, it can only end things.
            if security.acceptsPlainErrors, let plain = try? Self.parse(bytes[...]), case .error = plain.body {
                return plain
            }
            throw error
        }
        return try Self.parse(payload)
    }

    static func parse(_ bytes: ArraySlice<UInt8>) throws -> Pspc_V1_Frame {
        do {
            return try Pspc_V1_Frame(serializedBytes: bytes)
        } catch {
            throw WireError.malformedFrame("\(bytes.count) bytes do not parse as a pspc.v1.Frame (\(error))")
        }
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> Pspc_V1_Frame? {
        if let frame = try decode(buffer: &buffer) { return frame }
        if seenEOF && buffer.readableBytes > 0 {
            throw WireError.malformedFrame(
                "the connection closed inside a frame (\(buffer.readableBytes) bytes of it had arrived)")
        }
        return nil
    }
}

/// Writes frames as length prefix + protobuf; refuses a frame above the limit rather than send what the
/// peer would reject.
public struct FrameEncoder: MessageToByteEncoder, Sendable {
    public typealias OutboundIn = Pspc_V1_Frame

    public let maxFrameSize: Int
    /// Seals frames once the connection's handshake has set a sealer.
    public let security: FrameSecurity?

    public init(maxFrameSize: Int = FrameCodec.defaultMaxFrameSize) {
        FrameCodec.checkLimit(maxFrameSize)
        self.maxFrameSize = maxFrameSize
        self.security = nil
    }

    public init(security: FrameSecurity) {
        self.maxFrameSize = security.establishedLimit
        self.security = security
    }

    public func encode(data: Pspc_V1_Frame, out: inout ByteBuffer) throws {
        let bytes: [UInt8]
        do {
            bytes = try data.serializedBytes()
        } catch {
            throw WireError.malformedFrame("the frame does not serialize (\(error))")
        }
        let sealed = security?.sealer != nil
        let length = bytes.count + (sealed ? FrameSealer.tagSize : 0)
        guard length <= maxFrameSize else {
            throw WireError.frameTooLarge(length: length, limit: maxFrameSize)
        }
        // The sequence number is spent only on a frame that is written.
        let tag = security?.tag(for: bytes)
        out.reserveCapacity(minimumWritableBytes: FrameCodec.headerSize + length)
        out.writeInteger(UInt32(length), endianness: .big)
        out.writeBytes(bytes)
        if let tag { out.writeBytes(tag) }
    }
}
