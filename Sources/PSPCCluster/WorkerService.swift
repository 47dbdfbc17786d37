import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import PSPCCore
import PSPCWire

/// A worker: answers partial-sum requests over the shards it holds, to peers that proved they know the
/// cluster token. Requests are computed one at a time (each already uses every core), in arrival order;
/// coordinators keep several in flight to hide the network. A `Cancel` frame drops a request still waiting
/// or stops a computing one at its next safe point (both answered CANCELLED); a closed connection cancels
/// every request it still has here, so a coordinator that gave up never keeps the worker busy.
public final class WorkerService: Sendable {
    /// A shard this worker holds: its id in the dataset's manifest and what evaluates it (an `InProcessShard`).
    public struct HostedShard: Sendable {
        public var id: Int
        public var first: Int
        public var source: any BlockingPartialSumSource

        public init(id: Int, first: Int, source: any BlockingPartialSumSource) {
            self.id = id
            self.first = first
            self.source = source
        }
    }

    public let shards: [HostedShard]
    public let info: Pspc_V1_WorkerInfo
    public let nodeID: String
    let token: [UInt8]
    /// Requests being computed or waiting (a worker lets them finish before it exits).
    public var inFlight: Int { counters.snapshot().inFlight }
    /// What this worker has done with the partial requests it was sent, for health reports and tests.
    public var statistics: Statistics { counters.snapshot() }
    let maxFrameSize: Int
    let compute = ComputeQueue()
    let counters = Counters()
    let limits: Limits
    let connections = ConnectionCount()
    /// Refused connections, bad frames and error replies (warning), connections (info), each request (debug).
    public let logger: Logger
    /// Requests, errors, bytes, connections and what this worker holds, for `MetricsEndpoint`.
    public let metrics: WorkerMetrics

    /// What bounds a worker's exposure to its peers.
    public struct Limits: Sendable {
        /// A connection that has not completed its handshake by then is closed.
        public var handshakeTimeout: TimeAmount = .seconds(10)
        /// An authenticated connection with no frame read and nothing being computed for this long is closed
        /// (coordinators send health requests more often than this while they hold a connection).
        public var idleTimeout: TimeAmount = .seconds(300)
        /// Connections served at once; one more is answered `unavailable` and closed.
        public var maxConnections = 64

        public init() {}
    }

    /// `datasetShards`, `datasetID` and `xflip` describe the whole dataset the shards come from, so that a
    /// coordinator can check that its workers agree and notice shards nobody holds.
    public init(
        shards: [HostedShard], shape: ImageShape, token: [UInt8], nodeID: String, threads: Int,
        datasetShards: Int, datasetID: String, xflip: Bool, maxFrameSize: Int = FrameCodec.defaultMaxFrameSize,
        limits: Limits = Limits(),
        logger: Logger = Logger(label: "pspc.worker", factory: { _ in SwiftLogNoOpLogHandler() }),
        metrics: WorkerMetrics = WorkerMetrics(version: "unknown")
    ) {
        self.limits = limits
        self.metrics = metrics
        self.logger = logger
        self.shards = shards.sorted { $0.id < $1.id }
        self.token = token
        self.nodeID = nodeID
        self.maxFrameSize = maxFrameSize
        var info = Pspc_V1_WorkerInfo()
        info.shape = Pspc_V1_ImageShape(shape)
        info.imageCount = UInt64(shards.reduce(0) { $0 + $1.source.imageCount })
        info.shards = self.shards.map { shard in
            var s = Pspc_V1_ShardInfo()
            s.id = UInt32(shard.id)
            s.firstIndex = UInt64(shard.first)
            s.count = UInt64(shard.source.imageCount)
            return s
        }
        info.threads = UInt32(threads)
        info.datasetShards = UInt32(datasetShards)
        info.datasetID = datasetID
        info.xflip = xflip
        self.info = info
        metrics.hold(shards: shards.count, images: Int(info.imageCount))
    }

    /// Binds `host:port` (port 0 picks a free one) and serves until the returned channel is closed.
    public func bind(host: String, port: Int, group: EventLoopGroup) async throws -> Channel {
        let service = self
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let security = FrameSecurity(maxFrameSize: service.maxFrameSize)
                    let admitted = service.connections.admit(limit: service.limits.maxConnections)
                    let handshake = try HandshakeServer(
                        token: service.token, role: .worker, nodeID: service.nodeID,
                        info: service.info, acceptedRoles: [.coordinator])
                    try channel.pipeline.syncOperations.addHandlers([
                        TrafficCounter(service.metrics),
                        ByteToMessageHandler(FrameDecoder(security: security)),
                        MessageToByteHandler(FrameEncoder(security: security)),
                        WorkerConnectionHandler(
                            service: service, handshake: handshake, security: security, admitted: admitted),
                    ])
                }
            }
            .bind(host: host, port: port).get()
    }

    /// Counts a partial request in flight and queues it behind the ones already waiting; its answer comes from
    /// `reply(to:requestID:)`, and `cancel()` on the job drops it or stops it.
    func submit(_ request: Pspc_V1_PartialRequest) -> ComputeJob<Pspc_V1_PartialResponse> {
        counters.started()
        metrics.queueDepth.increment()
        return compute.submit { flag in
            self.counters.began()
            return try self.evaluate(request, cancellation: flag)
        }
    }

    /// The answer to a submitted partial request: its partials, CANCELLED, or the error that stopped it.
    func reply(to job: ComputeJob<Pspc_V1_PartialResponse>, requestID id: UInt64) async -> Pspc_V1_Frame {
        defer { metrics.queueDepth.decrement() }
        do {
            let response = try await job.value()
            counters.finished(.served)
            return Pspc_V1_Frame(requestID: id, body: .partialResponse(response))
        } catch is CancellationError {
            let dropped = job.wasDropped
            counters.finished(dropped ? .dropped : .stopped)
            let when = dropped ? "before it started" : "while it was computing"
            return .error(.cancelled("request \(id) was cancelled \(when)"), requestID: id)
        } catch {
            counters.finished(.served)
            return Self.errorFrame(error, requestID: id)
        }
    }

    /// The answer to one authenticated frame other than a partial request or a cancel (which have their own).
    func answer(_ frame: Pspc_V1_Frame) async -> Pspc_V1_Frame {
        let id = frame.requestID
        do {
            switch try frame.requireBody() {
            case .healthRequest:
                var health = Pspc_V1_HealthResponse()
                health.info = info
                let counts = counters.snapshot()
                health.inFlight = UInt32(counts.inFlight)
                health.served = UInt64(counts.served)
                health.load = Double(counts.inFlight)
                return Pspc_V1_Frame(requestID: id, body: .healthResponse(health))
            default:
                throw WireError.unexpectedMessage(
                    expected: "partial_request, health_request or cancel", got: frame.bodyName)
            }
        } catch {
            return Self.errorFrame(error, requestID: id)
        }
    }

    /// The error reply telling the peer why request `id` failed.
    static func errorFrame(_ error: Error, requestID id: UInt64) -> Pspc_V1_Frame {
        switch error {
        case let error as WireError: return .error(error, requestID: id)
        case let error as PSPCError: return .error(.invalidArgument(error.description), requestID: id)
        default: return .error(.invalidArgument(String(describing: error)), requestID: id)
        }
    }

    /// Evaluates a request on the shards it names (all when it names none), merging their partials in shard
    /// order, so that the same request gives the same bits on any worker holding those shards. A set
    /// `cancellation` flag stops it between shards and at the engine's safe points (`CancellationError`).
    func evaluate(
        _ wire: Pspc_V1_PartialRequest, cancellation: CancellationFlag? = nil
    ) throws -> Pspc_V1_PartialResponse {
        let shape = try ImageShape(wire: info.shape)
        let request = try PartialRequest(wire: wire, shape: shape)
        if case .moments(let rows) = request {
            // Its size is known before it is computed: a block of rows that cannot fit is refused at no cost.
            let dim = shape.dimension
            try requireFrameFits(PartialResponse.momentsPayloadBytes(rows: rows?.count ?? dim, dimension: dim))
        }
        let wanted = wire.shards.map(Int.init)
        func held(_ id: Int) throws -> HostedShard {
            guard let shard = shards.first(where: { $0.id == id }) else {
                throw WireError.invalidArgument("this worker does not hold shard \(id)")
            }
            return shard
        }
        if wire.perShard {
            // Each named shard's own answer, in the order asked: the coordinator merges them in shard order.
            guard !wanted.isEmpty, Set(wanted).count == wanted.count else {
                throw WireError.invalidArgument("a per-shard request must name distinct shards")
            }
            var answers: [PartialResponse] = []
            for id in wanted {
                let shard = try held(id)
                try cancellation?.check()
                answers.append(try shard.source.evaluateNow(request, cancellation: cancellation))
            }
            try requireFrameFits(answers.reduce(0) { $0 + $1.payloadBytes + 64 })
            var perShard = Pspc_V1_PerShardPartials()
            perShard.shards = answers.map { Pspc_V1_PartialResponse($0, compression: .none) }
            var response = Pspc_V1_PartialResponse()
            response.result = .perShard(perShard)
            return response
        }
        let selected = wanted.isEmpty ? shards : try wanted.sorted().map(held)
        var merged: PartialResponse?
        for shard in selected {
            try cancellation?.check()
            let answer = try shard.source.evaluateNow(request, cancellation: cancellation)
            merged = try merged.map { try $0.merging(answer) } ?? answer
        }
        guard let merged else { throw WireError.invalidArgument("the request names no shard") }
        try requireFrameFits(merged.payloadBytes)
        // Partial sums are float64 with little redundancy: zstd would cost more CPU than it saves on the wire.
        return Pspc_V1_PartialResponse(merged, compression: .none)
    }

    /// An answer the frame cannot carry is refused in words, never written: the coordinator splits the request
    /// (its queries, or the rows of moments) and asks again. Its size is the float64 payload plus framing (a few
    /// bytes per tensor, the MAC).
    private func requireFrameFits(_ payloadBytes: Int) throws {
        let size = payloadBytes + 4096
        guard size <= maxFrameSize else { throw WireError.replyTooLarge(length: size, limit: maxFrameSize) }
    }
}

extension PartialResponse {
    /// Bytes of float64 numbers this answer carries on the wire.
    var payloadBytes: Int {
        switch self {
        case .softmax(let p): return 8 * (p.m.count + p.s.count + p.v.count)
        case .sums(let s): return 8 * s.count
        case .moments(let m): return Self.momentsPayloadBytes(rows: m.rows.count, dimension: m.sum.count)
        }
    }

    /// Bytes of a moments answer over `rows` rows of the outer sum of `dimension`-pixel images: the sum, those
    /// rows, the count and the first row.
    static func momentsPayloadBytes(rows: Int, dimension: Int) -> Int { 8 * (dimension + rows * dimension) + 16 }

    /// Combines two shards' answers to the same request.
    func merging(_ other: PartialResponse) throws -> PartialResponse {
        switch (self, other) {
        case (.softmax(var a), .softmax(let b)):
            a.merge(b)
            return .softmax(a)
        case (.sums(var a), .sums(let b)) where a.count == b.count:
            for i in a.indices { a[i] += b[i] }
            return .sums(a)
        case (.moments(var a), .moments(let b)):
            try a.merge(b)
            return .moments(a)
        default:
            throw PSPCError.shapeMismatch("shards answered one request with partials of different kinds")
        }
    }
}

/// Runs jobs one at a time, in submission order, on one dedicated thread (each job already uses the worker's
/// threads; running two at once would only oversubscribe the cores).
final class ComputeQueue: Sendable {
    private let queue = DispatchQueue(label: "pspc.worker.compute")

    /// Queues `work` behind the jobs already submitted. It is handed the job's cancellation flag.
    func submit<T: Sendable>(_ work: @escaping @Sendable (CancellationFlag) throws -> T) -> ComputeJob<T> {
        let job = ComputeJob<T>()
        queue.async { job.runIfWaiting(work) }
        return job
    }
}

/// One job of a `ComputeQueue`: waiting its turn, computing, or finished with an outcome that `value()`
/// returns (to any number of callers, before or after it is known).
final class ComputeJob<T: Sendable>: @unchecked Sendable {
    private enum Phase { case waiting, computing, finished }

    /// Set by `cancel()` while the job computes; the work reads it at its safe points.
    let flag = CancellationFlag()
    private let lock = NSLock()
    private var phase = Phase.waiting
    private var dropped = false
    private var outcome: Result<T, Error>?
    private var waiters: [CheckedContinuation<T, Error>] = []

    /// Whether `cancel()` removed the job before it started (it was never computed).
    var wasDropped: Bool { lock.withLock { dropped } }

    /// A waiting job is dropped: it finishes at once with `CancellationError` and its turn on the queue does
    /// nothing. A computing job gets its flag set and stops at its next safe point. A finished job keeps its
    /// outcome.
    func cancel() {
        let drop: Bool = lock.withLock {
            switch phase {
            case .waiting:
                dropped = true
                return true
            case .computing:
                flag.cancel()
                return false
            case .finished:
                return false
            }
        }
        if drop { finish(.failure(CancellationError())) }
    }

    /// The queue's turn for this job: computes it unless it was dropped meanwhile.
    fileprivate func runIfWaiting(_ work: @Sendable (CancellationFlag) throws -> T) {
        let start: Bool = lock.withLock {
            guard phase == .waiting else { return false }
            phase = .computing
            return true
        }
        guard start else { return }
        let flag = self.flag
        finish(Result { try work(flag) })
    }

    private func finish(_ result: Result<T, Error>) {
        let resumed: [CheckedContinuation<T, Error>] = lock.withLock {
            guard outcome == nil else { return [] }
            phase = .finished
            outcome = result
            defer { waiters.removeAll() }
            return waiters
        }
        for waiter in resumed { waiter.resume(with: result) }
    }

    /// The job's result, once it has finished.
    func value() async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let known: Result<T, Error>? = lock.withLock {
                if let outcome { return outcome }
                waiters.append(continuation)
                return nil
            }
            if let known { continuation.resume(with: known) }
        }
    }
}

extension WorkerService {
    /// What a worker has done with its partial requests since it started.
    public struct Statistics: Sendable, Equatable {
        /// Requests waiting or computing now.
        public var inFlight = 0
        /// Requests answered with their partials or an error other than CANCELLED.
        public var served = 0
        /// Requests that started computing (each once; dropped ones never do).
        public var computeStarted = 0
        /// Requests cancelled while they waited: never computed.
        public var cancelledWaiting = 0
        /// Requests cancelled while computing, which stopped at a safe point.
        public var cancelledComputing = 0

        public init() {}
    }
}

/// Requests in flight and how they ended, for health reports.
final class Counters: @unchecked Sendable {
    enum Ending { case served, dropped, stopped }

    private let lock = NSLock()
    private var counts = WorkerService.Statistics()

    func started() { lock.withLock { counts.inFlight += 1 } }
    func began() { lock.withLock { counts.computeStarted += 1 } }
    func finished(_ ending: Ending) {
        lock.withLock {
            counts.inFlight -= 1
            switch ending {
            case .served: counts.served += 1
            case .dropped: counts.cancelledWaiting += 1
            case .stopped: counts.cancelledComputing += 1
            }
        }
    }
    func snapshot() -> WorkerService.Statistics { lock.withLock { counts } }
}

/// One connection on a worker: the handshake (within its timeout, under the handshake's frame limit), then
/// sealed requests answered in the background. Runs on its channel's event loop only.
final class WorkerConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = Pspc_V1_Frame
    typealias OutboundOut = Pspc_V1_Frame

    let service: WorkerService
    var handshake: HandshakeServer
    let security: FrameSecurity
    /// False when the connection is over the worker's cap: it is told so and closed.
    let admitted: Bool
    private var closing = false
    private var computing = 0
    /// This connection's partial requests not yet answered, by request id, for `Cancel` and for closing.
    private var requests: [UInt64: ComputeJob<Pspc_V1_PartialResponse>] = [:]
    private var lastRead = NIODeadline.now()
    private var timer: RepeatedTask?
    private var logger: Logger

    init(service: WorkerService, handshake: HandshakeServer, security: FrameSecurity, admitted: Bool) {
        logger = service.logger
        self.service = service
        self.handshake = handshake
        self.security = security
        self.admitted = admitted
    }

    func channelActive(context: ChannelHandlerContext) {
        service.metrics.connectionsOpen.increment()
        if let peer = context.remoteAddress, let ip = peer.ipAddress {
            logger[metadataKey: "peer"] = "\(ip):\(peer.port ?? 0)"
        }
        guard admitted else {
            service.metrics.handshakeFailed(.tooManyConnections)
            closeAfter(
                .error(.unavailable("too many connections (limit \(service.limits.maxConnections))")),
                context: context, because: "too many connections (limit \(service.limits.maxConnections))")
            return
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let opened = NIODeadline.now()
        let limits = service.limits
        let period = TimeAmount.nanoseconds(min(limits.handshakeTimeout.nanoseconds, limits.idleTimeout.nanoseconds) / 4 + 1)
        timer = context.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in
            let (handler, context) = bound.value
            handler.checkTimeouts(context: context, opened: opened)
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        service.metrics.connectionsOpen.decrement()
        timer?.cancel()
        if admitted { service.connections.leave() }
        // Nobody is left to read the answers: drop the waiting requests and stop the computing one.
        closing = true
        let orphans = requests.values
        requests.removeAll()
        for job in orphans { job.cancel() }
        context.fireChannelInactive()
    }

    private func checkTimeouts(context: ChannelHandlerContext, opened: NIODeadline) {
        let now = NIODeadline.now()
        if !handshake.isEstablished {
            if now - opened >= service.limits.handshakeTimeout {
                let seconds = service.limits.handshakeTimeout.nanoseconds / 1_000_000_000
                service.metrics.handshakeFailed(.timeout)
                closeAfter(
                    .error(.unexpectedMessage(expected: "a handshake within \(seconds) s", got: "nothing")),
                    context: context, because: "no handshake within \(seconds) s")
            }
        } else if computing == 0 && now - lastRead >= service.limits.idleTimeout {
            logger.info("closing an idle connection")
            closeAfter(nil, context: context)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        let frame = unwrapInboundIn(data)
        lastRead = .now()
        if !handshake.isEstablished {
            switch handshake.receive(frame) {
            case .send(let reply):
                context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
            case .established(_, let reply):
                // The Welcome is the first sealed frame; the coordinator's next frame is sealed as well.
                if let keys = handshake.sessionKeys {
                    security.sealInbound(key: keys.clientToServer)
                    security.sealOutbound(key: keys.serverToClient)
                }
                if let reply { context.writeAndFlush(wrapOutboundOut(reply), promise: nil) }
                logger.info("coordinator connected")
            case .fail(let error, let reply):
                service.metrics.handshakeFailed(WorkerMetrics.HandshakeFailure(error))
                closeAfter(reply, context: context, because: "handshake failed: \(error)")
            }
            return
        }
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let service = self.service
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let id = frame.requestID
        let op = frame.metricsOp
        service.metrics.requestRead(op: op)
        // A partial request is queued here, on the event loop, so that requests compute in arrival order.
        let job: ComputeJob<Pspc_V1_PartialResponse>?
        switch frame.body {
        case .cancel(let cancel)?:
            // No reply of its own: the cancelled request is answered CANCELLED (or with its result, if it had
            // finished). An id this connection has not sent, or already had answered, is ignored.
            requests[cancel.targetRequestID]?.cancel()
            return
        case .partialRequest(let request)?:
            job = service.submit(request)
            requests[id] = job
        default:
            job = nil
        }
        computing += 1
        let logger = self.logger, started = NIODeadline.now(), body = frame.bodyName
        Task {
            let reply: Pspc_V1_Frame
            if let job { reply = await service.reply(to: job, requestID: id) } else { reply = await service.answer(frame) }
            let seconds = Double((NIODeadline.now() - started).nanoseconds) / 1e9
            service.metrics.requestAnswered(op: op, seconds: seconds)
            if case .error(let error)? = reply.body { service.metrics.requestFailed(op: op, code: error.code) }
            if case .error(let error)? = reply.body, error.code != .cancelled {
                logger.warning(
                    "request \(id) (\(body)) answered with an error: \(WireError(reply: error))",
                    metadata: ["request": "\(id)"])
            } else {
                logger.debug(
                    "request \(id) (\(body)) answered in \(String(format: "%.1f", seconds * 1e3)) ms",
                    metadata: ["request": "\(id)"])
            }
            bound.eventLoop.execute {
                handler.value.computing -= 1
                handler.value.lastRead = .now()
                if let job, handler.value.requests[id] === job { handler.value.requests[id] = nil }
                guard !handler.value.closing else { return }
                bound.value.writeAndFlush(handler.value.wrapOutboundOut(reply)).whenFailure { error in
                    // The encoder refused it (too large for a frame): say so in a frame that fits.
                    let wire = (error as? WireError) ?? .malformedFrame(String(describing: error))
                    service.metrics.requestFailed(op: op, code: wire.code)
                    guard !handler.value.closing else { return }
                    bound.value.writeAndFlush(
                        handler.value.wrapOutboundOut(.error(wire, requestID: reply.requestID)), promise: nil)
                }
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard !closing else { return }
        let wire = (error as? WireError) ?? .malformedFrame(String(describing: error))
        if !handshake.isEstablished { service.metrics.handshakeFailed(.badFrame) }
        closeAfter(.error(wire), context: context, because: "bad frame: \(wire)")
    }

    /// Sends `frame` (if any) and closes, once: errors while closing do not start it again. A `reason` is logged
    /// (a connection refused or dropped for a fault of its peer).
    private func closeAfter(_ frame: Pspc_V1_Frame?, context: ChannelHandlerContext, because reason: String? = nil) {
        guard !closing else { return }
        if let reason { logger.warning("closing the connection: \(reason)") }
        closing = true
        timer?.cancel()
        guard let frame else {
            context.close(promise: nil)
            return
        }
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in bound.value.close(promise: nil) }
    }
}

/// Connections a worker serves now, against its cap.
final class ConnectionCount: @unchecked Sendable {
    private let lock = NSLock()
    private var open = 0

    /// Counts a new connection in when there is room; false (and not counted) when the cap is reached.
    func admit(limit: Int) -> Bool {
        lock.withLock {
            guard open < limit else { return false }
            open += 1
            return true
        }
    }

    func leave() { lock.withLock { open -= 1 } }

    var count: Int { lock.withLock { open } }
}
