import Crypto
import Foundation

/// Integrity of every frame after the handshake (protocol version 2): each direction has its own key, derived
/// from the cluster token and both handshake nonces, and every frame carries a MAC over its sequence number
/// and its bytes, as TLS records and SSH packets do.
///
/// ```
///  k_c2s = HMAC-SHA256(token, "pspc-session-c2s" || client nonce || server nonce)
///  k_s2c = HMAC-SHA256(token, "pspc-session-s2c" || client nonce || server nonce)
///
///  sealed frame:  | length N (UInt32 BE) | P: protobuf Frame (N - 32 bytes) | tag (32 bytes) |
///  tag = HMAC-SHA256(k_dir, seq (UInt64 BE) || P),  seq = 0, 1, 2, ... per direction
/// ```
///
/// The coordinator seals every frame after its Proof; the server seals its Welcome (sequence 0) and everything
/// after it, so the Welcome's dataset description is covered too. A flipped bit, a dropped, replayed or
/// reordered frame, or a frame from another connection fails the check, and the connection is closed.
public struct SessionKeys: Sendable, Equatable {
    public var clientToServer: [UInt8]
    public var serverToClient: [UInt8]

    static let clientToServerLabel = Array("pspc-session-c2s".utf8)
    static let serverToClientLabel = Array("pspc-session-s2c".utf8)

    public init(token: [UInt8], clientNonce: [UInt8], serverNonce: [UInt8]) {
        let key = SymmetricKey(data: token)
        clientToServer = Array(
            HMAC<SHA256>.authenticationCode(for: Self.clientToServerLabel + clientNonce + serverNonce, using: key))
        serverToClient = Array(
            HMAC<SHA256>.authenticationCode(for: Self.serverToClientLabel + clientNonce + serverNonce, using: key))
    }
}

/// Appends the MAC of the next sequence number to each outgoing frame payload.
public struct FrameSealer: Sendable {
    public static let tagSize = 32
    private let key: [UInt8]
    public private(set) var sequence: UInt64 = 0

    public init(key: [UInt8]) { self.key = key }

    /// The tag of `payload` at sequence number `sequence`.
    static func tag(key: [UInt8], sequence: UInt64, payload: ArraySlice<UInt8>) -> [UInt8] {
        var mac = HMAC<SHA256>(key: SymmetricKey(data: key))
        withUnsafeBytes(of: sequence.bigEndian) { mac.update(data: $0) }
        mac.update(data: payload)
        return Array(mac.finalize())
    }

    /// `payload` followed by its 32-byte tag; the next call uses the next sequence number.
    public mutating func seal(_ payload: [UInt8]) -> [UInt8] {
        defer { sequence &+= 1 }
        return payload + Self.tag(key: key, sequence: sequence, payload: payload[...])
    }

    /// The tag alone, for an encoder that writes the payload itself.
    public mutating func nextTag(for payload: [UInt8]) -> [UInt8] {
        defer { sequence &+= 1 }
        return Self.tag(key: key, sequence: sequence, payload: payload[...])
    }
}

/// Checks and strips the MAC of each incoming frame, in sequence.
public struct FrameOpener: Sendable {
    private let key: [UInt8]
    public private(set) var sequence: UInt64 = 0

    public init(key: [UInt8]) { self.key = key }

    /// The payload of a sealed frame, or `integrityFailed` when its tag does not verify at the expected
    /// sequence number (the sequence number is consumed either way: the connection is over).
    public mutating func open(_ sealed: [UInt8]) throws -> ArraySlice<UInt8> {
        defer { sequence &+= 1 }
        guard sealed.count >= FrameSealer.tagSize else {
            throw WireError.integrityFailed(sequence: sequence, reason: "\(sealed.count) bytes are too few to hold a MAC")
        }
        let payload = sealed[..<(sealed.count - FrameSealer.tagSize)]
        let tag = sealed[(sealed.count - FrameSealer.tagSize)...]
        var mac = HMAC<SHA256>(key: SymmetricKey(data: key))
        withUnsafeBytes(of: sequence.bigEndian) { mac.update(data: $0) }
        mac.update(data: payload)
        // Constant-time comparison (swift-crypto's MAC equality against raw bytes).
        guard mac.finalize() == Data(tag) else {
            throw WireError.integrityFailed(sequence: sequence, reason: "bad MAC")
        }
        return payload
    }
}

/// What a connection's decoder and encoder share with its handshake handler: the frame limit in force and,
/// once the handshake has set them, the sealer and opener. Confined to the channel's event loop (the
/// handler sets it synchronously between two frames, so no frame is read or written under the wrong mode).
public final class FrameSecurity: @unchecked Sendable {
    /// The limit before the handshake: a stranger cannot make the peer buffer more than this.
    public static let handshakeMaxFrameSize = 64 << 10

    /// The limit on incoming frames now: `handshakeMaxFrameSize` until `established` raises it.
    public private(set) var inboundLimit: Int
    public let establishedLimit: Int
    public private(set) var opener: FrameOpener?
    public private(set) var sealer: FrameSealer?
    /// While the client waits for the sealed Welcome, a plain error frame (the server refusing its proof) is
    /// still read: unauthenticated, it can only end the connection.
    public var acceptsPlainErrors = false

    public init(maxFrameSize: Int = FrameCodec.defaultMaxFrameSize) {
        FrameCodec.checkLimit(maxFrameSize)
        establishedLimit = maxFrameSize
        inboundLimit = min(maxFrameSize, Self.handshakeMaxFrameSize)
    }

    /// From now on incoming frames must carry a valid MAC under `key`, up to the established limit.
    public func sealInbound(key: [UInt8]) {
        opener = FrameOpener(key: key)
        inboundLimit = establishedLimit
    }

    /// From now on outgoing frames carry a MAC under `key`.
    public func sealOutbound(key: [UInt8]) { sealer = FrameSealer(key: key) }

    func open(_ bytes: [UInt8]) throws -> ArraySlice<UInt8> {
        guard opener != nil else { return bytes[...] }
        return try opener!.open(bytes)
    }

    func tag(for payload: [UInt8]) -> [UInt8]? {
        guard sealer != nil else { return nil }
        return sealer!.nextTag(for: payload)
    }
}
