import Dispatch
import Foundation
import NIOCore
import NIOPosix
import PSPCCore
import PSPCWire

/// A worker: answers partial-sum requests over the shards it holds, to peers that proved they know the
/// cluster token. Requests are computed one at a time (each already uses every core), in arrival order;
/// coordinators keep several in flight to hide the network.
public final class WorkerService: Sendable {
    /// A shard this worker holds: its id in the dataset's manifest and its images.
    public struct HostedShard: Sendable {
        public var id: Int
        public var first: Int
        public var source: InProcessShard

        public init(id: Int, first: Int, source: InProcessShard) {
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
    public var inFlight: Int { counters.snapshot().0 }
    /// Partial requests answered so far, refused ones included.
    public var served: Int { counters.snapshot().1 }
    let maxFrameSize: Int
    let compute = ComputeQueue()
    let counters = Counters()
    let limits: Limits
    let connections = ConnectionCount()

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
        limits: Limits = Limits()
    ) {
        self.limits = limits
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
                        ByteToMessageHandler(FrameDecoder(security: security)),
                        MessageToByteHandler(FrameEncoder(security: security)),
                        WorkerConnectionHandler(
                            service: service, handshake: handshake, security: security, admitted: admitted),
                    ])
                }
            }
            .bind(host: host, port: port).get()
    }

    /// The answer to one authenticated frame.
    func answer(_ frame: Pspc_V1_Frame) async -> Pspc_V1_Frame {
        let id = frame.requestID
        do {
            switch try frame.requireBody() {
            case .partialRequest(let request):
                counters.started()
                defer { counters.finished() }
                let response = try await compute.run { try self.evaluate(request) }
                return Pspc_V1_Frame(requestID: id, body: .partialResponse(response))
            case .healthRequest:
                var health = Pspc_V1_HealthResponse()
                health.info = info
                let (inFlight, served) = counters.snapshot()
                health.inFlight = UInt32(inFlight)
                health.served = UInt64(served)
                health.load = Double(inFlight)
                return Pspc_V1_Frame(requestID: id, body: .healthResponse(health))
            default:
                throw WireError.unexpectedMessage(expected: "partial_request or health_request", got: frame.bodyName)
            }
        } catch let error as WireError {
            return .error(error, requestID: id)
        } catch let error as PSPCError {
            return .error(.invalidArgument(error.description), requestID: id)
        } catch {
            return .error(.invalidArgument(String(describing: error)), requestID: id)
        }
    }

    /// Evaluates a request on the shards it names (all when it names none), merging their partials in shard
    /// order, so that the same request gives the same bits on any worker holding those shards.
    func evaluate(_ wire: Pspc_V1_PartialRequest) throws -> Pspc_V1_PartialResponse {
        let shape = try ImageShape(wire: info.shape)
        let request = try PartialRequest(wire: wire, shape: shape)
        if case .moments(let rows) = request {
            // Its size is known before it is computed: a block of rows that cannot fit is refused at no cost.
            let dim = shape.dimension
            try requireFrameFits(PartialResponse.momentsPayloadBytes(rows: rows?.count ?? dim, dimension: dim))
        }
        let wanted = wire.shards.map(Int.init)
        let selected =
            wanted.isEmpty
            ? shards
            : try wanted.sorted().map { id in
                guard let shard = shards.first(where: { $0.id == id }) else {
                    throw WireError.invalidArgument("this worker does not hold shard \(id)")
                }
                return shard
            }
        var merged: PartialResponse?
        for shard in selected {
            let answer = try shard.source.evaluateNow(request)
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

    func run<T: Sendable>(_ job: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try job() }) }
        }
    }
}

/// Requests in flight and served, for health reports.
final class Counters: @unchecked Sendable {
    private let lock = NSLock()
    private var inFlight = 0
    private var served = 0

    func started() { lock.withLock { inFlight += 1 } }
    func finished() {
        lock.withLock {
            inFlight -= 1; served += 1
        }
    }
    func snapshot() -> (Int, Int) { lock.withLock { (inFlight, served) } }
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
    private var lastRead = NIODeadline.now()
    private var timer: RepeatedTask?

    init(service: WorkerService, handshake: HandshakeServer, security: FrameSecurity, admitted: Bool) {
        self.service = service
        self.handshake = handshake
        self.security = security
        self.admitted = admitted
    }

    func channelActive(context: ChannelHandlerContext) {
        guard admitted else {
            closeAfter(
                .error(.unavailable("too many connections (limit \(service.limits.maxConnections))")),
                context: context)
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
        timer?.cancel()
        if admitted { service.connections.leave() }
        context.fireChannelInactive()
    }

    private func checkTimeouts(context: ChannelHandlerContext, opened: NIODeadline) {
        let now = NIODeadline.now()
        if !handshake.isEstablished {
            if now - opened >= service.limits.handshakeTimeout {
                closeAfter(
                    .error(.unexpectedMessage(
                        expected: "a handshake within \(service.limits.handshakeTimeout.nanoseconds / 1_000_000_000) s",
                        got: "nothing")),
                    context: context)
            }
        } else if computing == 0 && now - lastRead >= service.limits.idleTimeout {
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
            case .fail(_, let reply):
                closeAfter(reply, context: context)
            }
            return
        }
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let service = self.service
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        computing += 1
        Task {
            let reply = await service.answer(frame)
            bound.eventLoop.execute {
                handler.value.computing -= 1
                handler.value.lastRead = .now()
                guard !handler.value.closing else { return }
                bound.value.writeAndFlush(handler.value.wrapOutboundOut(reply)).whenFailure { error in
                    // The encoder refused it (too large for a frame): say so in a frame that fits.
                    let wire = (error as? WireError) ?? .malformedFrame(String(describing: error))
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
        closeAfter(.error(wire), context: context)
    }

    /// Sends `frame` (if any) and closes, once: errors while closing do not start it again.
    private func closeAfter(_ frame: Pspc_V1_Frame?, context: ChannelHandlerContext) {
        guard !closing else { return }
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
