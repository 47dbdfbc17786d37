import Logging
import PSPCCore

/// What a worker says about itself when it connects, as far as trust goes: which dataset it serves and which
/// of that dataset's shards it holds now.
public struct WorkerIdentity: Sendable, Equatable {
    public var datasetID: String
    public var shape: ImageShape
    public var xflip: Bool
    /// Shards in the whole dataset (not only this worker's).
    public var datasetShards: Int
    /// Shards this worker holds now: shard id to its images (x-flipped copies included).
    public var shards: [Int: Int]

    public init(datasetID: String, shape: ImageShape, xflip: Bool, datasetShards: Int, shards: [Int: Int]) {
        self.datasetID = datasetID
        self.shape = shape
        self.xflip = xflip
        self.datasetShards = datasetShards
        self.shards = shards
    }
}

/// The dataset a run computes over, fixed when it starts. Every worker it uses, at every connection and every
/// reconnection, must serve exactly this; anything else would change the answer without a word.
public struct RunDataset: Sendable, Equatable {
    public var datasetID: String
    public var shape: ImageShape
    public var xflip: Bool
    /// Images per shard, by shard id: the dataset's shard count is this array's length.
    public var shardImageCounts: [Int]

    public init(datasetID: String, shape: ImageShape, xflip: Bool, shardImageCounts: [Int]) {
        self.datasetID = datasetID
        self.shape = shape
        self.xflip = xflip
        self.shardImageCounts = shardImageCounts
    }

    /// Why a worker with this identity must not take part in the run; nil when it may.
    public func mismatch(_ worker: WorkerIdentity) -> String? {
        if worker.datasetID != datasetID {
            return "serves another dataset (id \(worker.datasetID.prefix(12)); the run's is \(datasetID.prefix(12)))"
        }
        if worker.shape != shape { return "serves \(worker.shape) images; the run's are \(shape)" }
        if worker.datasetShards != shardImageCounts.count {
            return "serves a dataset of \(worker.datasetShards) shards; the run's has \(shardImageCounts.count)"
        }
        if worker.xflip != xflip {
            return "serves the training set with x-flip \(worker.xflip ? "on" : "off"); the run has it \(xflip ? "on" : "off")"
        }
        for (shard, count) in worker.shards.sorted(by: { $0.key < $1.key }) {
            guard shardImageCounts.indices.contains(shard) else {
                return "announces shard \(shard), which the run's dataset does not have"
            }
            guard count == shardImageCounts[shard] else {
                return "announces \(count) images in shard \(shard); the run's shard has \(shardImageCounts[shard])"
            }
        }
        return nil
    }
}

/// The times that drive failover, in seconds.
public struct FailoverPolicy: Sendable, Equatable {
    /// A request unanswered this long is taken from its worker (which is then treated as hung) to a replica.
    public var deadline: Double = 300
    /// A worker marked down is tried again this often (a restarted worker is taken back).
    public var retryInterval: Double = 5
    /// A connected worker that has sent nothing for this long is sent a health check.
    public var heartbeatInterval: Double = 2
    /// A health check unanswered this long means the worker is gone (it answers them while it computes).
    public var heartbeatTimeout: Double = 10
    /// How long a request whose shard has no live holder waits for workers being connected.
    public var revivalWait: Double = 30
    /// Attempts per request before it is given up (workers that fail, revive and fail again).
    public var maxAttempts = 16

    public init() {}

    public init(deadline: Double, retryInterval: Double) {
        self.deadline = deadline
        self.retryInterval = retryInterval
    }
}

/// Failover as a plain state machine: no sockets, no timers, no clock of its own. The coordinator feeds it what
/// happened (a request to route, a worker connected or lost, an answer, an error, a tick of its clock) with the
/// time, and executes the directives it returns (connect, send, cancel, probe, disconnect, deliver, fail). The
/// same events always give the same directives, so tests drive it through any fault schedule without sleeping.
///
/// Rules. A request goes to the first live holder of its shard (`ShardRouter` order). A worker that dies, hangs
/// past the deadline, misses its heartbeat, or gives an answer that is not sound (an error of its own, non-finite
/// partials) is marked down, disconnected, and everything it had in flight goes to replicas. An error that blames
/// the request (an invalid argument) ends that request: every replica would say the same. A worker marked down
/// is retried every `retryInterval`; when it connects it is checked against the run's dataset, and refused (and
/// not used) when it differs; when it agrees, the shards it announces now are the ones routed to it, so late
/// workers become holders and placement changes are followed. A request whose shard has no live holder asks the
/// down holders to connect once, and is given up with "shards lost" when none comes back.
public struct Failover: Sendable {
    public typealias Worker = Int

    /// A request for one shard's partials, as the coordinator numbers them.
    public struct RequestID: Hashable, Comparable, Sendable, CustomStringConvertible {
        public let value: UInt64
        public init(_ value: UInt64) { self.value = value }
        public static func < (a: Self, b: Self) -> Bool { a.value < b.value }
        public var description: String { "r\(value)" }
    }

    /// One try of a request on one worker. An answer to an attempt that is no longer current (its worker was
    /// given up on and the request went elsewhere) is discarded.
    public struct AttemptID: Hashable, Comparable, Sendable, CustomStringConvertible {
        public let value: UInt64
        public init(_ value: UInt64) { self.value = value }
        public static func < (a: Self, b: Self) -> Bool { a.value < b.value }
        public var description: String { "a\(value)" }
    }

    /// What was wrong with an answer.
    public enum Fault: Sendable, Equatable {
        /// The request itself is refused (invalid argument and the like): no replica will differ.
        case invalidRequest(ClusterError)
        /// The answer would not fit in a frame: the caller asks again in smaller parts.
        case tooLarge(ClusterError)
        /// This worker is at fault (an internal error, unavailable, an answer that does not decode or holds
        /// non-finite numbers): a replica is asked.
        case worker(String)
    }

    public enum Event: Sendable, Equatable {
        case submit(RequestID, shard: Int)
        case connected(Worker, WorkerIdentity)
        case connectFailed(Worker, reason: String)
        case disconnected(Worker, reason: String)
        case answered(AttemptID)
        case refused(AttemptID, Fault)
        case healthAnswered(Worker)
        /// The caller no longer wants the answer.
        case cancel(RequestID)
        /// Time passed: deadlines, heartbeats and revivals are checked.
        case tick
    }

    public enum Directive: Sendable, Equatable {
        case connect(Worker)
        case send(AttemptID, request: RequestID, shard: Int, worker: Worker)
        /// Tell the worker to drop this attempt (its answer is no longer wanted).
        case cancel(AttemptID, worker: Worker)
        /// Send a health check.
        case probe(Worker)
        /// Close the connection to this worker; it no longer takes part until it reconnects and is checked.
        case disconnect(Worker)
        /// The answer of this attempt is the request's result.
        case deliver(RequestID, attempt: AttemptID)
        /// The answer of this attempt came too late: drop it.
        case discard(AttemptID)
        case fail(RequestID, ClusterError)
        /// Something an operator should see: a worker lost, refused, back or joined, with its cause.
        case log(Logger.Level, String)
    }

    enum Link: Equatable {
        case up(lastHeard: Double, probeSentAt: Double?)
        case connecting
        case down(lastTry: Double)
    }

    struct Attempt {
        var request: RequestID
        var worker: Worker
        var sentAt: Double
    }

    struct Pending {
        var shard: Int
        var attempt: AttemptID?
        var attempts = 0
        var revivalAsked = false
        /// Since when it has had no live holder to go to.
        var waitingSince: Double?
        var lastFailure = "no replica was tried"
    }

    public let dataset: RunDataset
    public let policy: FailoverPolicy
    /// Worker addresses, for messages.
    public let names: [String]
    /// Holders of each shard (from what workers announced at their last accepted connection) and who is down.
    public private(set) var router: ShardRouter
    private var links: [Link]
    /// Shards each worker announced at its last accepted connection; nil for a worker never accepted.
    private var announced: [Set<Int>?]
    /// The last refusal logged per worker, so a worker refused at every retry is logged once per cause.
    private var refusal: [String?]
    private var pending: [RequestID: Pending] = [:]
    private var attempts: [AttemptID: Attempt] = [:]
    private var nextAttempt: UInt64 = 1

    /// `connected` holds the identities of the workers connected at the start (already checked against
    /// `dataset`); the others start down and are tried every `retryInterval`.
    public init(
        dataset: RunDataset, names: [String], connected: [Worker: WorkerIdentity], policy: FailoverPolicy,
        now: Double
    ) {
        self.dataset = dataset
        self.policy = policy
        self.names = names
        links = names.indices.map { connected[$0] == nil ? .down(lastTry: now) : .up(lastHeard: now, probeSentAt: nil) }
        let announced = names.indices.map { connected[$0].map { Set($0.shards.keys) } }
        self.announced = announced
        refusal = Array(repeating: nil, count: names.count)
        router = ShardRouter(
            shardCount: dataset.shardImageCounts.count,
            workerShards: names.indices.map { (announced[$0] ?? []).sorted() })
        for worker in names.indices where connected[worker] == nil { router.markDown(worker) }
    }

    /// Requests waiting for an answer.
    public var pendingCount: Int { pending.count }
    /// Workers currently taking part.
    public var liveWorkers: [Worker] { names.indices.filter { if case .up = links[$0] { return true } else { return false } } }

    public mutating func handle(_ event: Event, now: Double) -> [Directive] {
        var out: [Directive] = []
        switch event {
        case .submit(let id, let shard):
            guard dataset.shardImageCounts.indices.contains(shard), pending[id] == nil else {
                out.append(.fail(id, .invalidConfiguration("request \(id) names shard \(shard), which the run does not have")))
                break
            }
            pending[id] = Pending(shard: shard)
            dispatch(id, now: now, into: &out)

        case .connected(let worker, let identity):
            guard links[worker] == .connecting else {
                // Not asked for (or already given up on): keep the state as it is.
                out.append(.disconnect(worker))
                break
            }
            if let why = dataset.mismatch(identity) {
                links[worker] = .down(lastTry: now)
                out.append(.disconnect(worker))
                if refusal[worker] != why {
                    refusal[worker] = why
                    out.append(.log(.warning, "worker \(names[worker]) is refused and not used: it \(why)"))
                }
            } else {
                let shards = Set(identity.shards.keys)
                let wasKnown = announced[worker] != nil
                refusal[worker] = nil
                announced[worker] = shards
                router.setShards(shards, of: worker)
                links[worker] = .up(lastHeard: now, probeSentAt: nil)
                router.markUp(worker)
                let list = shards.sorted().map(String.init).joined(separator: ", ")
                out.append(.log(.notice, "worker \(names[worker]) \(wasKnown ? "is back" : "joined") (shards \(list))"))
            }
            redispatchWaiting(now: now, into: &out)

        case .connectFailed(let worker, _):
            guard links[worker] == .connecting else { break }
            links[worker] = .down(lastTry: now)
            redispatchWaiting(now: now, into: &out)

        case .disconnected(let worker, let reason):
            switch links[worker] {
            case .up: markDown(worker, because: reason, now: now, into: &out)
            case .connecting:
                links[worker] = .down(lastTry: now)
                redispatchWaiting(now: now, into: &out)
            case .down: break
            }

        case .answered(let id):
            guard let attempt = attempts.removeValue(forKey: id) else {
                out.append(.discard(id))
                break
            }
            heard(from: attempt.worker, now: now)
            pending[attempt.request] = nil
            out.append(.deliver(attempt.request, attempt: id))

        case .refused(let id, let fault):
            guard let attempt = attempts.removeValue(forKey: id) else { break }
            switch fault {
            case .invalidRequest(let error), .tooLarge(let error):
                heard(from: attempt.worker, now: now)
                pending[attempt.request] = nil
                out.append(.fail(attempt.request, error))
            case .worker(let reason):
                pending[attempt.request]?.attempt = nil
                pending[attempt.request]?.lastFailure = "worker \(names[attempt.worker]): \(reason)"
                markDown(attempt.worker, because: reason, now: now, into: &out)
                dispatch(attempt.request, now: now, into: &out)
            }

        case .healthAnswered(let worker):
            if case .up = links[worker] { links[worker] = .up(lastHeard: now, probeSentAt: nil) }

        case .cancel(let id):
            guard let request = pending.removeValue(forKey: id) else { break }
            if let attemptID = request.attempt, let attempt = attempts.removeValue(forKey: attemptID) {
                out.append(.cancel(attemptID, worker: attempt.worker))
            }
            out.append(.fail(id, .cancelled))

        case .tick:
            for (id, attempt) in attempts.sorted(by: { $0.key < $1.key })
            where attempts[id] != nil && now - attempt.sentAt >= policy.deadline {
                out.append(.cancel(id, worker: attempt.worker))
                markDown(attempt.worker, because: "did not answer within \(policy.deadline) s", now: now, into: &out)
            }
            for (id, request) in pending.sorted(by: { $0.key < $1.key })
            where request.attempt == nil && now - (request.waitingSince ?? now) >= policy.revivalWait {
                pending[id] = nil
                out.append(.fail(id, lost(request, "no holder came back within \(policy.revivalWait) s; last: \(request.lastFailure)")))
            }
            for worker in names.indices {
                switch links[worker] {
                case .up(let lastHeard, let probeSentAt):
                    if let probeSentAt {
                        if now - probeSentAt >= policy.heartbeatTimeout {
                            markDown(
                                worker, because: "no answer to a health check for \(policy.heartbeatTimeout) s",
                                now: now, into: &out)
                        }
                    } else if now - lastHeard >= policy.heartbeatInterval {
                        links[worker] = .up(lastHeard: lastHeard, probeSentAt: now)
                        out.append(.probe(worker))
                    }
                case .down(let lastTry) where now - lastTry >= policy.retryInterval:
                    links[worker] = .connecting
                    out.append(.connect(worker))
                default: break
                }
            }
        }
        return out
    }

    private mutating func heard(from worker: Worker, now: Double) {
        if case .up(_, let probe) = links[worker] { links[worker] = .up(lastHeard: now, probeSentAt: probe) }
    }

    /// Takes `worker` out of the run: disconnects it and sends what it had in flight to replicas.
    private mutating func markDown(_ worker: Worker, because reason: String, now: Double, into out: inout [Directive]) {
        guard case .up = links[worker] else { return }
        links[worker] = .down(lastTry: now)
        router.markDown(worker)
        out.append(.log(.warning, "worker \(names[worker]) is down (\(reason)); its shards go to replicas"))
        out.append(.disconnect(worker))
        let orphans = attempts.filter { $0.value.worker == worker }.keys.sorted()
        for id in orphans {
            let attempt = attempts.removeValue(forKey: id)!
            pending[attempt.request]?.attempt = nil
            pending[attempt.request]?.lastFailure = "worker \(names[worker]): \(reason)"
        }
        redispatchWaiting(now: now, into: &out)
    }

    /// Every request without an attempt in flight is routed again (a holder came back, or was lost).
    private mutating func redispatchWaiting(now: Double, into out: inout [Directive]) {
        for id in pending.filter({ $0.value.attempt == nil }).keys.sorted() {
            dispatch(id, now: now, into: &out)
        }
    }

    private mutating func dispatch(_ id: RequestID, now: Double, into out: inout [Directive]) {
        guard var request = pending[id], request.attempt == nil else { return }
        if let worker = router.candidates(for: request.shard).first {
            guard request.attempts < policy.maxAttempts else {
                pending[id] = nil
                let reason = "gave up after \(request.attempts) attempts; last: \(request.lastFailure)"
                out.append(.fail(id, lost(request, reason)))
                return
            }
            let attemptID = AttemptID(nextAttempt)
            nextAttempt += 1
            attempts[attemptID] = Attempt(request: id, worker: worker, sentAt: now)
            request.attempt = attemptID
            request.attempts += 1
            request.waitingSince = nil
            pending[id] = request
            out.append(.send(attemptID, request: id, shard: request.shard, worker: worker))
            return
        }
        // No live holder. Any worker may hold the shard after a restart with another placement, so: wait while
        // some worker is being connected (at most `revivalWait`); otherwise ask every down worker to connect, once
        // per request; otherwise the shard is lost.
        if request.waitingSince == nil {
            request.waitingSince = now
            pending[id] = request
        }
        if links.contains(.connecting) { return }
        if !request.revivalAsked {
            request.revivalAsked = true
            pending[id] = request
            let revivable = names.indices.filter { if case .down = links[$0] { return true } else { return false } }
            for worker in revivable {
                links[worker] = .connecting
                out.append(.connect(worker))
            }
            if !revivable.isEmpty { return }
        }
        pending[id] = nil
        out.append(.fail(id, lost(request, request.lastFailure)))
    }

    private func lost(_ request: Pending, _ reason: String) -> ClusterError {
        let lost = router.lostShards
        return .shardsLost(lost.contains(request.shard) ? lost : [request.shard], reason: reason)
    }
}
