/// Why a frame, a handshake or a message was rejected. Each case reads as one line, names the field at
/// fault where there is one, and maps to the `ErrorCode` sent to the peer in an `ErrorReply`.
public enum WireError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A length prefix above the receiver's limit; nothing was allocated for it.
    case frameTooLarge(length: Int, limit: Int)
    /// Bytes that do not parse as a `Frame`, or a frame cut short.
    case malformedFrame(String)
    /// A Hello that does not start with "PSPC": not a pspc peer.
    case badMagic(got: [UInt8])
    case unsupportedVersion(got: UInt32, supported: UInt32)
    /// A proof of the shared token that does not verify (or a peer that never sent one).
    case authenticationFailed
    /// A Hello from a role this server does not serve.
    case roleNotAccepted(Pspc_V1_Role)
    /// A frame of the wrong kind for the state of the connection (an op before the handshake, say).
    case unexpectedMessage(expected: String, got: String)
    /// An enum field holding its UNSPECIFIED value or one this build does not know.
    case unknownEnumValue(field: String, value: Int)
    /// A request naming no operation this side knows (an empty or newer oneof).
    case unknownOperation(String)
    /// A tensor whose dtype, shape, sizes, compression or values do not add up.
    case invalidTensor(String)
    /// A well-formed message whose values are not acceptable (non-finite t, a patch larger than the image).
    case invalidArgument(String)
    /// A frame after the handshake whose MAC does not verify at its sequence number (tampered, replayed,
    /// reordered or from another connection).
    case integrityFailed(sequence: UInt64, reason: String)
    /// An answer larger than the frame limit: it was not sent; ask for fewer queries at once.
    case replyTooLarge(length: Int, limit: Int)
    /// The peer cannot serve now (too many connections, shutting down): another replica may.
    case unavailable(String)
    /// The request was dropped because its sender asked so (a `Cancel` frame) or went away.
    case cancelled(String)
    /// The peer's `ErrorReply`, as it sent it.
    case peerError(code: Pspc_V1_ErrorCode, message: String)

    public var description: String {
        switch self {
        case .frameTooLarge(let length, let limit):
            return "frame of \(length) bytes exceeds the limit of \(limit) bytes"
        case .malformedFrame(let reason):
            return "malformed frame: \(reason)"
        case .badMagic(let got):
            let hex = got.prefix(8).map { String($0, radix: 16, uppercase: true) }.joined(separator: " ")
            return "bad magic [\(hex)]: the peer does not speak the pspc protocol"
        case .unsupportedVersion(let got, let supported):
            return "unsupported protocol version \(got) (this side speaks version \(supported))"
        case .authenticationFailed:
            return "authentication failed: the peer does not hold the same cluster token"
        case .roleNotAccepted(let role):
            return "this endpoint does not accept connections from a \(role) peer"
        case .unexpectedMessage(let expected, let got):
            return "unexpected message: expected \(expected), got \(got)"
        case .unknownEnumValue(let field, let value):
            return "\(field) holds \(value == 0 ? "the unspecified value 0" : "the unknown value \(value)")"
        case .unknownOperation(let what):
            return "unknown operation: \(what)"
        case .invalidTensor(let reason):
            return "invalid tensor: \(reason)"
        case .invalidArgument(let reason):
            return "invalid argument: \(reason)"
        case .integrityFailed(let sequence, let reason):
            return "frame \(sequence) failed its integrity check (\(reason))"
        case .replyTooLarge(let length, let limit):
            return "the answer of \(length) bytes exceeds the frame limit of \(limit) bytes"
        case .unavailable(let reason):
            return "unavailable: \(reason)"
        case .cancelled(let reason):
            return "cancelled: \(reason)"
        case .peerError(let code, let message):
            return "peer reported \(code): \(message)"
        }
    }

    /// The code sent to the peer for this error.
    public var code: Pspc_V1_ErrorCode {
        switch self {
        case .frameTooLarge, .replyTooLarge: return .frameTooLarge
        case .unavailable: return .unavailable
        case .cancelled: return .cancelled
        case .malformedFrame: return .malformedFrame
        case .badMagic: return .badMagic
        case .unsupportedVersion: return .unsupportedVersion
        case .authenticationFailed, .roleNotAccepted, .integrityFailed: return .authenticationFailed
        case .unexpectedMessage: return .unexpectedMessage
        case .unknownEnumValue, .invalidTensor, .invalidArgument: return .invalidArgument
        case .unknownOperation: return .unknownOperation
        case .peerError(let code, _): return code
        }
    }

    /// The reply that tells the peer about this error.
    public var reply: Pspc_V1_ErrorReply {
        var reply = Pspc_V1_ErrorReply()
        reply.code = code
        reply.message = description
        return reply
    }

    /// The error a peer reported.
    public init(reply: Pspc_V1_ErrorReply) {
        self = .peerError(code: reply.code, message: reply.message)
    }
}
