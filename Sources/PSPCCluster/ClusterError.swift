import PSPCWire

/// Failures of the cluster, each one line naming what went wrong and where.
public enum ClusterError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidConfiguration(String)
    /// No live worker holds these shards: the answer cannot be computed exactly.
    case shardsLost([Int], reason: String)
    case workerFailed(worker: String, reason: String)
    case deadlineExceeded(worker: String, seconds: Double)
    /// The worker refused the request with an error frame of this code.
    case remote(worker: String, message: String, code: Pspc_V1_ErrorCode = .invalidArgument)
    /// The caller gave the request up.
    case cancelled

    public var description: String {
        switch self {
        case .invalidConfiguration(let message): return message
        case .shardsLost(let shards, let reason):
            return "shards lost: \(shards.map(String.init).joined(separator: ", ")) (no live replica; \(reason))"
        case .workerFailed(let worker, let reason): return "worker \(worker) failed: \(reason)"
        case .deadlineExceeded(let worker, let seconds):
            return "worker \(worker) did not answer within \(seconds) s"
        case .remote(let worker, let message, _): return "worker \(worker) answered with an error: \(message)"
        case .cancelled: return "the request was cancelled"
        }
    }

    /// Whether a replica may answer where this worker did not: false when the request itself is at fault (an
    /// invalid argument), so the run stops instead of trying every replica.
    public var isRetryable: Bool {
        if case .cancelled = self { return false }
        guard case .remote(_, _, let code) = self else { return true }
        switch code {
        case .invalidArgument, .unknownOperation, .malformedFrame, .unexpectedMessage, .cancelled: return false
        default: return true
        }
    }

    /// The connection closed before the answer came (the peer's idle timeout, a restart, a cut link).
    public var isConnectionClosed: Bool {
        if case .workerFailed(_, let reason) = self { return reason == Self.connectionClosed }
        return false
    }

    static let connectionClosed = "connection closed"

    /// The worker could not fit its answer in a frame: the request must be split.
    public var isReplyTooLarge: Bool {
        if case .remote(_, _, .frameTooLarge) = self { return true }
        return false
    }
}
