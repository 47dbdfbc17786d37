/// Failures of the cluster, each one line naming what went wrong and where.
public enum ClusterError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidConfiguration(String)
    /// No live worker holds these shards: the answer cannot be computed exactly.
    case shardsLost([Int], reason: String)
    case workerFailed(worker: String, reason: String)
    case deadlineExceeded(worker: String, seconds: Double)
    case remote(worker: String, message: String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let message): return message
        case .shardsLost(let shards, let reason):
            return "shards lost: \(shards.map(String.init).joined(separator: ", ")) (no live replica; \(reason))"
        case .workerFailed(let worker, let reason): return "worker \(worker) failed: \(reason)"
        case .deadlineExceeded(let worker, let seconds):
            return "worker \(worker) did not answer within \(seconds) s"
        case .remote(let worker, let message): return "worker \(worker) answered with an error: \(message)"
        }
    }
}
