import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import PSPCCore
import PSPCWire

/// The coordinator's view of a cluster: a connection per worker, the dataset the run agreed on at the start, and
/// failover. Each shard is a `PartialSumSource`. Which worker answers what is decided by `Failover`, a plain state
/// machine; this actor is its shell: it executes the machine's directives on sockets (connect, send, cancel,
/// health checks, close) and feeds back what happened, with a tick of a monotonic clock twice a second.
public actor Cluster {
    public let addresses: [HostPort]
    public nonisolated let shape: ImageShape
    /// Images per shard (x-flipped copies included), by shard id.
    public nonisolated let shardImageCounts: [Int]
    public nonisolated let dataset: RunDataset
    let token: [UInt8]
    let group: EventLoopGroup
    private var machine: Failover
    private var connections: [Int: WorkerConnection] = [:]
    /// What each request waiting for an answer asks, the batch it belongs to (requests of one batch going to
    /// the same worker travel in one frame), who waits for it, and outcomes that came before their waiter.
    private var kinds: [Failover.RequestID: PartialRequest] = [:]
    private var batchOf: [Failover.RequestID: UInt64] = [:]
    private var waiters: [Failover.RequestID: CheckedContinuation<PartialResponse, Error>] = [:]
    private var outcomes: [Failover.RequestID: Result<PartialResponse, Error>] = [:]
    /// Sends the machine asked for while handling the current events, put in frames when they are handled.
    private var sends: [Send] = []
    /// The frame each attempt travels in, and the attempts of each frame still wanted.
    private var frameOf: [Failover.AttemptID: FrameKey] = [:]
    private var frameAttempts: [FrameKey: Set<Failover.AttemptID>] = [:]
    private var answers: [Failover.AttemptID: PartialResponse] = [:]
    private var nextBatch: UInt64 = 1
    private var nextRequest: UInt64 = 1

    struct Send {
        var attempt: Failover.AttemptID
        var request: Failover.RequestID
        var shard: Int
        var worker: Int
    }

    /// A frame on the wire: its worker and the connection's request id.
    struct FrameKey: Hashable {
        var worker: Int
        var id: UInt64
    }
    private var events: [Failover.Event] = []
    private var handling = false
    private var ticker: Task<Void, Never>?
    private var closed = false
    private let clock: @Sendable () -> Double
    private let log: @Sendable (String) -> Void
    private let logger: Logger
    /// Bytes on the wire to and from the workers since connecting (handshakes included).
    public nonisolated let traffic: WireTraffic
    /// Float64 queries and partials are mostly noise to zstd (it saves a few percent for a CPU cost that
    /// competes with the kernels on the same cores), so requests travel uncompressed unless asked.
    public var compression: TensorCompression = .none

    /// Seconds on a monotonic clock (wall-clock jumps never fire deadlines).
    public static let monotonic: @Sendable () -> Double = { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// Connects to every worker (all at once) and learns which shards each holds. Unreachable workers start
    /// marked down and are tried again every `retryInterval`; it fails when the reachable workers disagree on the
    /// dataset, or some shard has no reachable holder.
    public static func connect(
        to addresses: [HostPort], token: [UInt8], group: EventLoopGroup, deadline: Double = 300,
        retryInterval: Double = 5, xflip: Bool? = nil, policy: FailoverPolicy? = nil,
        log: @escaping @Sendable (String) -> Void = { _ in }, logger: Logger = Cluster.silent
    ) async throws -> Cluster {
        let traffic = WireTraffic()
        // All at once: with many workers, one slow or blackholed host must not delay the others.
        let attempts = await withTaskGroup(of: FirstContact.self) { tasks in
            for (i, address) in addresses.enumerated() {
                tasks.addTask {
                    do {
                        let connection = try await WorkerConnection.connect(
                            to: address, token: token, group: group, traffic: traffic)
                        return FirstContact(worker: i, connection: connection, failure: nil)
                    } catch {
                        return FirstContact(worker: i, connection: nil, failure: "\(error)")
                    }
                }
            }
            var all: [FirstContact] = []
            for await attempt in tasks { all.append(attempt) }
            return all.sorted { $0.worker < $1.worker }
        }
        var peers: [Int: WorkerConnection] = [:]
        var failures: [String] = []
        for attempt in attempts {
            if let connection = attempt.connection {
                peers[attempt.worker] = connection
            } else {
                let reason = attempt.failure ?? "unknown"
                failures.append("\(addresses[attempt.worker]): \(reason)")
                log("worker \(addresses[attempt.worker]) is unreachable: \(reason)")
                logger.warning(
                    "worker \(addresses[attempt.worker]) is unreachable: \(reason)",
                    metadata: ["worker": "\(addresses[attempt.worker])"])
            }
        }
        do {
            let identities = try peers.mapValues { try WorkerIdentity(info: $0.peer.info) }
            let dataset = try agreedDataset(identities, addresses: addresses, failures: failures, xflip: xflip)
            let machine = Failover(
                dataset: dataset, names: addresses.map(\.description), connected: identities,
                policy: policy ?? FailoverPolicy(deadline: deadline, retryInterval: retryInterval), now: monotonic())
            let cluster = Cluster(
                addresses: addresses, dataset: dataset, machine: machine, token: token, group: group,
                traffic: traffic, clock: monotonic, log: log, logger: logger)
            await cluster.start(peers)
            return cluster
        } catch {
            for connection in peers.values { connection.close() }
            throw error
        }
    }

    struct FirstContact: Sendable {
        var worker: Int
        var connection: WorkerConnection?
        var failure: String?
    }

    /// The dataset the reachable workers agree on: the same fingerprint, shape, x-flip and shard count, the same
    /// size for every shard, every shard held by someone.
    static func agreedDataset(
        _ identities: [Int: WorkerIdentity], addresses: [HostPort], failures: [String], xflip: Bool?
    ) throws -> RunDataset {
        guard let (firstIndex, first) = identities.min(by: { $0.key < $1.key }) else {
            throw ClusterError.invalidConfiguration("no worker could be reached: \(failures.joined(separator: "; "))")
        }
        for (i, info) in identities.sorted(by: { $0.key < $1.key }) {
            guard info.datasetShards == first.datasetShards, info.datasetID == first.datasetID else {
                throw ClusterError.invalidConfiguration(
                    "worker \(addresses[i]) serves another dataset (\(info.datasetShards) shards, id \(info.datasetID.prefix(12))) than worker \(addresses[firstIndex]) (\(first.datasetShards) shards, id \(first.datasetID.prefix(12)))"
                )
            }
            guard info.xflip == first.xflip else {
                throw ClusterError.invalidConfiguration(
                    "workers disagree on x-flip (worker \(addresses[i]): \(info.xflip ? "on" : "off"))")
            }
            guard info.shape == first.shape else {
                throw ClusterError.invalidConfiguration(
                    "worker \(addresses[i]) serves \(info.shape) images, others \(first.shape)")
            }
        }
        if let xflip, xflip != first.xflip {
            throw ClusterError.invalidConfiguration(
                "the workers serve the training set with x-flip \(first.xflip ? "on" : "off"), this command asked for \(xflip ? "on" : "off"): start them with the same --xflip"
            )
        }
        var counts: [Int: Int] = [:]
        for (_, info) in identities.sorted(by: { $0.key < $1.key }) {
            for (shard, count) in info.shards {
                if let known = counts[shard], known != count {
                    throw ClusterError.invalidConfiguration("workers disagree on the size of shard \(shard)")
                }
                counts[shard] = count
            }
        }
        // The dataset's own shard count, not the highest id seen: shards whose every holder is unreachable
        // must be noticed, not silently left out.
        let shardCount = first.datasetShards
        let missing = (0..<shardCount).filter { counts[$0] == nil }
        guard missing.isEmpty, shardCount > 0, counts.keys.allSatisfy({ $0 < shardCount }) else {
            throw ClusterError.shardsLost(missing, reason: "no reachable worker holds them")
        }
        return RunDataset(
            datasetID: first.datasetID, shape: first.shape, xflip: first.xflip,
            shardImageCounts: (0..<shardCount).map { counts[$0]! })
    }

    private init(
        addresses: [HostPort], dataset: RunDataset, machine: Failover, token: [UInt8], group: EventLoopGroup,
        traffic: WireTraffic, clock: @escaping @Sendable () -> Double, log: @escaping @Sendable (String) -> Void,
        logger: Logger
    ) {
        self.traffic = traffic
        self.addresses = addresses
        self.dataset = dataset
        self.shape = dataset.shape
        self.shardImageCounts = dataset.shardImageCounts
        self.machine = machine
        self.token = token
        self.group = group
        self.clock = clock
        self.log = log
        self.logger = logger
    }

    /// A logger that drops everything (the default of library callers that pass `log` instead).
    public static let silent = Logger(label: "pspc.coordinator", factory: { _ in SwiftLogNoOpLogHandler() })

    private func start(_ peers: [Int: WorkerConnection]) {
        for (worker, connection) in peers { register(connection, of: worker) }
        ticker = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: 500_000_000)
                await self?.post(.tick)
            }
        }
    }

    /// Holders of each shard and the workers down, as failover sees them now.
    public var router: ShardRouter { machine.router }
    public var policy: FailoverPolicy { machine.policy }

    /// One partial-sum source per shard, in shard order.
    public nonisolated func sources() -> [any PartialSumSource] {
        shardImageCounts.indices.map { RemoteShardSource(cluster: self, shard: $0) }
    }

    public func close() {
        closed = true
        ticker?.cancel()
        for connection in connections.values { connection.close() }
        connections.removeAll()
        for (_, waiter) in waiters { waiter.resume(throwing: ClusterError.invalidConfiguration("the cluster was closed")) }
        waiters.removeAll()
        outcomes.removeAll()
    }

    /// Evaluates `request` on `shard` at its first live replica, failing over until one answers. A worker whose
    /// answer would not fit in a frame says so; the batch is then asked in two halves (recursively) and the
    /// halves' partials are put back together in query order.
    func evaluate(_ request: PartialRequest, shard: Int) async throws -> PartialResponse {
        do {
            return try await evaluateWhole(request, shard: shard)
        } catch let error as ClusterError where error.isReplyTooLarge {
            guard let (first, second) = request.halves() else { throw error }
            let a = try await evaluate(first, shard: shard)
            let b = try await evaluate(second, shard: shard)
            return try a.concatenated(b)
        }
    }

    private func evaluateWhole(_ request: PartialRequest, shard: Int) async throws -> PartialResponse {
        guard !closed else { throw ClusterError.invalidConfiguration("the cluster was closed") }
        try Task.checkCancellation()
        let id = newRequest(request, batch: newBatch())
        post([.submit(id, shard: shard)])
        return try await outcome(of: id)
    }

    /// The answers of `shards` to `request`, each shard's own, in that order. The shards that go to the same
    /// worker travel in one frame (the queries once), answered shard by shard; failover still works per shard.
    public func evaluate(_ request: PartialRequest, shards: [Int]) async throws -> [PartialResponse] {
        guard !closed else { throw ClusterError.invalidConfiguration("the cluster was closed") }
        try Task.checkCancellation()
        let batch = newBatch()
        let ids = shards.map { _ in newRequest(request, batch: batch) }
        post(zip(ids, shards).map { .submit($0, shard: $1) })
        do {
            return try await Self.inOrder(ids) { try await self.outcome(of: $0) }
        } catch let error as ClusterError where error.isReplyTooLarge {
            // Together the answers exceed a frame: shard by shard, each split further when it must be.
            return try await Self.inOrder(shards) { try await self.evaluate(request, shard: $0) }
        }
    }

    /// `body` of every item at once, the results in the items' order.
    private static func inOrder<Item: Sendable>(
        _ items: [Item], _ body: @escaping @Sendable (Item) async throws -> PartialResponse
    ) async throws -> [PartialResponse] {
        try await withThrowingTaskGroup(of: (Int, PartialResponse).self) { tasks in
            for (i, item) in items.enumerated() { tasks.addTask { (i, try await body(item)) } }
            var answers = [PartialResponse?](repeating: nil, count: items.count)
            for try await (i, answer) in tasks { answers[i] = answer }
            return answers.map { $0! }
        }
    }

    private func newBatch() -> UInt64 {
        defer { nextBatch += 1 }
        return nextBatch
    }

    private func newRequest(_ request: PartialRequest, batch: UInt64) -> Failover.RequestID {
        let id = Failover.RequestID(nextRequest)
        nextRequest += 1
        kinds[id] = request
        batchOf[id] = batch
        return id
    }

    /// Waits for the outcome of request `id` (which may have come already). A cancelled wait cancels the request.
    private func outcome(of id: Failover.RequestID) async throws -> PartialResponse {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (waiter: CheckedContinuation<PartialResponse, Error>) in
                if let outcome = outcomes.removeValue(forKey: id) {
                    waiter.resume(with: outcome)
                } else {
                    waiters[id] = waiter
                }
            }
        } onCancel: {
            Task { await self.post([.cancel(id)]) }
        }
    }

    private func resolve(_ request: Failover.RequestID, _ outcome: Result<PartialResponse, Error>) {
        kinds[request] = nil
        batchOf[request] = nil
        if let waiter = waiters.removeValue(forKey: request) {
            waiter.resume(with: outcome)
        } else if case .failure(ClusterError.cancelled) = outcome {
            // Cancelled before anyone waited: nobody will.
        } else {
            outcomes[request] = outcome
        }
    }

    private func post(_ event: Failover.Event) { post([event]) }

    /// Feeds events to the machine and executes what it says; events raised while executing are queued and
    /// handled in order after it, never inside it. The sends of one round go out grouped into frames.
    private func post(_ batch: [Failover.Event]) {
        events.append(contentsOf: batch)
        guard !handling else { return }
        handling = true
        defer { handling = false }
        while !events.isEmpty {
            let next = events.removeFirst()
            for directive in machine.handle(next, now: clock()) { execute(directive) }
            if events.isEmpty { flushSends() }
        }
    }

    /// Puts the sends asked for into frames: one per worker and batch, naming its shards in order.
    private func flushSends() {
        var index: [FrameGroup: Int] = [:]
        var grouped: [[Send]] = []
        for send in sends {
            let key = FrameGroup(worker: send.worker, batch: batchOf[send.request] ?? 0)
            if let i = index[key] {
                grouped[i].append(send)
            } else {
                index[key] = grouped.count
                grouped.append([send])
            }
        }
        sends.removeAll()
        for items in grouped {
            let worker = items[0].worker
            guard let connection = connections[worker], let kind = kinds[items[0].request] else {
                events.append(.disconnected(worker, reason: "connection closed"))
                continue
            }
            var wire = Pspc_V1_PartialRequest(kind, shards: items.map(\.shard), compression: compression)
            wire.perShard = items.count > 1
            guard let (id, answer) = connection.start(.partialRequest(wire)) else {
                events.append(.disconnected(worker, reason: "connection closed"))
                continue
            }
            let key = FrameKey(worker: worker, id: id)
            let attempts = items.map(\.attempt)
            frameAttempts[key] = Set(attempts)
            for attempt in attempts { frameOf[attempt] = key }
            let shape = self.shape, name = addresses[worker].description
            answer.whenComplete { result in
                let outcomes = Self.judge(result, for: kind, count: attempts.count, shape: shape, worker: name)
                Task { await self.finished(attempts, frame: key, on: connection, outcomes) }
            }
        }
    }

    struct FrameGroup: Hashable {
        var worker: Int
        var batch: UInt64
    }

    private func execute(_ directive: Failover.Directive) {
        switch directive {
        case .connect(let worker):
            guard !closed else { return }
            let address = addresses[worker], token = self.token, group = self.group, traffic = self.traffic
            Task {
                do {
                    let connection = try await WorkerConnection.connect(
                        to: address, token: token, group: group, traffic: traffic)
                    self.connected(connection, of: worker)
                } catch {
                    self.post(.connectFailed(worker, reason: "\(error)"))
                }
            }
        case .send(let attempt, let request, let shard, let worker):
            sends.append(Send(attempt: attempt, request: request, shard: shard, worker: worker))
        case .cancel(let attempt, _):
            // A frame is cancelled on the worker once none of its attempts is wanted.
            guard let key = frameOf.removeValue(forKey: attempt) else { return }
            frameAttempts[key]?.remove(attempt)
            if frameAttempts[key]?.isEmpty == true {
                frameAttempts[key] = nil
                connections[key.worker]?.cancel(key.id)
            }
        case .probe(let worker):
            guard let connection = connections[worker], let (_, answer) = connection.start(.healthRequest(.init()))
            else { return }
            answer.whenSuccess { frame in
                guard case .healthResponse = frame.body else { return }
                Task { await self.post(.healthAnswered(worker)) }
            }
        case .disconnect(let worker):
            connections.removeValue(forKey: worker)?.close()
        case .deliver(let request, let attempt):
            if let answer = answers.removeValue(forKey: attempt) {
                resolve(request, .success(answer))
            } else {
                resolve(request, .failure(ClusterError.invalidConfiguration("attempt \(attempt) has no answer")))
            }
        case .discard(let attempt):
            answers[attempt] = nil
        case .fail(let request, let error):
            resolve(request, .failure(error))
        case .log(let level, let message):
            log(message)
            logger.log(level: level, "\(message)")
        }
    }

    private func register(_ connection: WorkerConnection, of worker: Int) {
        connections[worker]?.close()
        connections[worker] = connection
        connection.closeFuture.whenComplete { _ in
            Task { await self.connectionClosed(connection, of: worker) }
        }
    }

    private func connected(_ connection: WorkerConnection, of worker: Int) {
        guard !closed else { return connection.close() }
        do {
            let identity = try WorkerIdentity(info: connection.peer.info)
            register(connection, of: worker)
            post(.connected(worker, identity))
        } catch {
            connection.close()
            post(.connectFailed(worker, reason: "\(error)"))
        }
    }

    /// A connection closed: news to the machine only while it is still the one in use (not one it closed).
    private func connectionClosed(_ connection: WorkerConnection, of worker: Int) {
        guard connections[worker] === connection else { return }
        connections[worker] = nil
        post(.disconnected(worker, reason: "connection closed"))
    }

    private func finished(
        _ attempts: [Failover.AttemptID], frame: FrameKey, on connection: WorkerConnection, _ outcomes: [Outcome]
    ) {
        frameAttempts[frame] = nil
        for attempt in attempts { frameOf[attempt] = nil }
        var events: [Failover.Event] = []
        for (attempt, outcome) in zip(attempts, outcomes) {
            switch outcome {
            case .answer(let response):
                answers[attempt] = response
                events.append(.answered(attempt))
            case .fault(let fault):
                events.append(.refused(attempt, fault))
            case .lost(let reason):
                // The connection failed under this frame: the worker is lost, if that connection is still in use.
                if connections[frame.worker] === connection {
                    connections.removeValue(forKey: frame.worker)?.close()
                    events.append(.disconnected(frame.worker, reason: reason))
                }
            }
        }
        post(events)
    }

    enum Outcome: Sendable {
        case answer(PartialResponse)
        case fault(Failover.Fault)
        case lost(String)
    }

    /// What a worker's answer to a frame of `count` attempts means for each, decided off the actor: a sound
    /// answer, a fault of the request or of the worker (an error frame, an answer that does not decode), or a
    /// lost connection. A frame of several shards is answered per shard.
    static func judge(
        _ result: Result<Pspc_V1_Frame, Error>, for request: PartialRequest, count: Int, shape: ImageShape,
        worker: String
    ) -> [Outcome] {
        let all = { (outcome: Outcome) in [Outcome](repeating: outcome, count: count) }
        let frame: Pspc_V1_Frame
        switch result {
        case .success(let value): frame = value
        case .failure(let error as ClusterError) where error == .cancelled: return all(.fault(.worker("cancelled")))
        case .failure(let error): return all(.lost("\(error)"))
        }
        switch frame.body {
        case .partialResponse(let wire):
            do {
                let responses =
                    count > 1
                    ? try wire.perShardPartials(count: count, shape: shape)
                    : [try PartialResponse(wire: wire, shape: shape)]
                if let problem = responses.lazy.compactMap({ $0.unsoundness(for: request) }).first {
                    return all(.fault(.worker(problem)))
                }
                return responses.map { .answer($0) }
            } catch {
                return all(.fault(.worker("its answer does not decode: \(error)")))
            }
        case .error(let reply):
            let error = ClusterError.remote(worker: worker, message: WireError(reply: reply).description, code: reply.code)
            if error.isReplyTooLarge { return all(.fault(.tooLarge(error))) }
            if !error.isRetryable && reply.code != .cancelled { return all(.fault(.invalidRequest(error))) }
            return all(.fault(.worker(error.description)))
        default:
            return all(.fault(.worker("answered with the wrong kind of frame (\(frame.bodyName))")))
        }
    }
}

extension WorkerIdentity {
    init(info: Pspc_V1_WorkerInfo?) throws {
        guard let info else { throw ClusterError.invalidConfiguration("the worker did not describe itself") }
        try self.init(
            datasetID: info.datasetID, shape: ImageShape(wire: info.shape), xflip: info.xflip,
            datasetShards: Int(info.datasetShards),
            shards: Dictionary(info.shards.map { (Int($0.id), Int($0.count)) }, uniquingKeysWith: { a, _ in a }))
    }
}

extension PartialResponse {
    /// Why this cannot be a shard's answer to `request`: partials of another kind. (Decoding already refuses
    /// non-finite numbers.) Nil when sound.
    func unsoundness(for request: PartialRequest) -> String? {
        switch (request, self) {
        case (.empirical, .softmax), (.cropNormalizers, .softmax), (.cropComposite, .sums), (.moments, .moments),
            (.windowPosterior, .softmax):
            return nil
        default: return "answered with partials of another kind"
        }
    }
}

/// One shard of a cluster as a partial-sum source for the engine.
public struct RemoteShardSource: PartialSumSource {
    let cluster: Cluster
    public let shard: Int

    public var shape: ImageShape { cluster.shape }
    public var imageCount: Int { cluster.shardImageCounts[shard] }

    public func evaluate(_ request: PartialRequest) async throws -> PartialResponse {
        try await cluster.evaluate(request, shard: shard)
    }
}

extension Cluster: PartialSumGroup {}
