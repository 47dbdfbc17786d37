import Foundation
import Logging
import NIOCore
import NIOPosix
import PSPCCore
import PSPCWire

/// What a `DenoiseService` computes with: a request's method and options made into a `DenoiseMethod`, and that
/// method applied to queries that share one noise level. `pspc serve` backs it with a `DenoisingEngine`.
public protocol DenoiseBackend: Sendable {
    /// The method a request names (never "" or "network": the service refuses those), with its options; throws
    /// for an unknown method or options it does not take (the error names them).
    func resolve(method: String, options: Pspc_V1_DenoiseOptions) async throws -> DenoiseMethod
    /// D(z, t) for `queries`; `firstQueryIndex` is the index of the first of them in the request (seeded methods
    /// number their noise by it, as `pspc denoise` numbers the rows of its file).
    func denoise(_ queries: QueryBatch, t: Double, method: DenoiseMethod, firstQueryIndex: Int) async throws
        -> [Double]
}

/// A long-running coordinator's front door (`pspc serve`): answers `DenoiseRequest`s naming an exact denoiser
/// over the protocol and handshake of the network endpoint, so that one client speaks to both. The Welcome
/// carries the dataset's `WorkerInfo` (shape, image count, dataset id), its role is `coordinator`.
///
/// A request's queries are split into runs of equal t, each run going to the backend; query i keeps its index
/// `first_query_index + i`, so CFDM's noise is the one `pspc denoise` draws for that row of a file at that t. At most
/// `Configuration.concurrentRequests` requests compute at once, the others wait in arrival order. Bad input gets
/// an `ErrorReply` naming the problem and the connection goes on; a `Cancel` takes a waiting request out of the
/// queue at once, or stops a computing one between its runs of t, answered CANCELLED; a closed connection cancels
/// what it still had here.
public final class DenoiseService: Sendable {
    /// How the service answers.
    public struct Configuration: Sendable {
        /// Element type of `DenoiseResponse.denoised`: float64 (the engine's values, exactly) or float32.
        public var responseDType: Pspc_V1_DType = .float64
        /// Requests computing at once (others wait their turn, in arrival order).
        public var concurrentRequests = 1
        /// Handshake and idle timeouts, connection cap (as a worker's).
        public var limits = WorkerService.Limits()
        public var maxFrameSize = FrameCodec.defaultMaxFrameSize

        public init() {}
    }

    public let backend: any DenoiseBackend
    /// Requests by op (`denoise`, `health`, `cancel`), errors, durations, bytes, connections, queue depth: what
    /// `pspc serve --metrics-listen` serves.
    public let metrics: WorkerMetrics
    public let info: Pspc_V1_WorkerInfo
    public let nodeID: String
    public let configuration: Configuration
    /// Refused connections and error replies (warning), connections (info), each request (debug).
    public let logger: Logger
    let token: [UInt8]
    let shape: ImageShape
    let gate: RequestGate
    let counters = Counters()
    let connections = ConnectionCount()

    /// Requests waiting or computing now (`pspc serve` lets them finish before it exits).
    public var inFlight: Int { counters.snapshot().inFlight }
    /// Requests answered (results and errors alike).
    public var served: Int { counters.snapshot().served }

    /// `info` describes the dataset behind `backend` (its shape is the one queries must have).
    public init(
        backend: any DenoiseBackend, info: Pspc_V1_WorkerInfo, token: [UInt8], nodeID: String,
        configuration: Configuration = Configuration(),
        logger: Logger = Logger(label: "pspc.serve", factory: { _ in SwiftLogNoOpLogHandler() }),
        metrics: WorkerMetrics = WorkerMetrics(version: "unknown", ops: WorkerMetrics.serveOps)
    ) throws {
        self.backend = backend
        self.metrics = metrics
        metrics.hold(shards: Int(info.datasetShards), images: Int(info.imageCount))
        self.info = info
        self.shape = try ImageShape(wire: info.shape)
        guard !token.isEmpty else { throw WireError.invalidArgument("the token is empty") }
        self.token = token
        self.nodeID = nodeID
        self.configuration = configuration
        self.gate = RequestGate(limit: max(1, configuration.concurrentRequests))
        self.logger = logger
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
                    let security = FrameSecurity(maxFrameSize: service.configuration.maxFrameSize)
                    let admitted = service.connections.admit(limit: service.configuration.limits.maxConnections)
                    let handshake = try HandshakeServer(
                        token: service.token, role: .coordinator, nodeID: service.nodeID, info: service.info,
                        acceptedRoles: [.coordinator])
                    try channel.pipeline.syncOperations.addHandlers([
                        TrafficCounter(service.metrics),
                        ByteToMessageHandler(FrameDecoder(security: security)),
                        MessageToByteHandler(FrameEncoder(security: security)),
                        DenoiseConnectionHandler(
                            service: service, handshake: handshake, security: security, admitted: admitted),
                    ])
                }
            }
            .bind(host: host, port: port).get()
    }

    /// The answer to one authenticated frame other than a `Cancel` (which has none).
    public func answer(_ frame: Pspc_V1_Frame) async -> Pspc_V1_Frame {
        let id = frame.requestID
        do {
            switch try frame.requireBody() {
            case .denoiseRequest(let request):
                counters.started()
                defer { counters.finished(.served) }
                let denoised = try await denoise(request)
                return Pspc_V1_Frame(requestID: id, body: .denoiseResponse(denoised))
            case .healthRequest:
                var health = Pspc_V1_HealthResponse()
                health.info = info
                let counts = counters.snapshot()
                health.inFlight = UInt32(counts.inFlight)
                health.served = UInt64(counts.served)
                health.load = Double(counts.inFlight)
                return Pspc_V1_Frame(requestID: id, body: .healthResponse(health))
            case .partialRequest, .heatmapRequest:
                throw WireError.unknownOperation(
                    "pspc serve answers denoise_request and health_request, not \(frame.bodyName)")
            default:
                throw WireError.unexpectedMessage(
                    expected: "denoise_request, health_request or cancel", got: frame.bodyName)
            }
        } catch is CancellationError {
            return .error(.cancelled("request \(id) was cancelled"), requestID: id)
        } catch let error as ClusterError {
            switch error {
            case .cancelled:
                return .error(.cancelled("request \(id) was cancelled"), requestID: id)
            case .remote(_, let message, let code) where !error.isRetryable:
                // A worker refused the request itself: the client is told why, with the worker's code.
                return .error(.peerError(code: code, message: message), requestID: id)
            default:
                // The workers behind this server failed the request: the request itself may be fine.
                return .error(.unavailable(error.description), requestID: id)
            }
        } catch {
            return WorkerService.errorFrame(error, requestID: id)
        }
    }

    /// D(z, t) for a request: checked and resolved before it waits its turn, then computed run by run of t.
    func denoise(_ request: Pspc_V1_DenoiseRequest) async throws -> Pspc_V1_DenoiseResponse {
        if request.method.isEmpty || request.method == "network" {
            throw WireError.invalidArgument(
                "pspc serve computes the exact denoisers (empirical, pspc-square, pspc-flex, gaussian, cfdm); "
                    + "method '\(request.method)' is the trained network, which the network endpoint serves")
        }
        let (queries, t) = try request.decoded()
        guard queries.shape == shape else {
            throw WireError.invalidTensor(
                "denoise_request.z holds images of \(queries.shape), this server's training set is \(shape)")
        }
        let method = try await backend.resolve(method: request.method, options: request.options)
        guard request.firstQueryIndex <= 1 << 48 else {
            throw WireError.invalidArgument(
                "denoise_request.first_query_index must be at most 2^48, got \(request.firstQueryIndex)")
        }
        let first = Int(request.firstQueryIndex)
        try await gate.enter()
        defer { Task { await gate.leave() } }
        let dim = shape.dimension
        var values: [Double] = []
        values.reserveCapacity(queries.values.count)
        for run in Self.runs(of: t) {
            try Task.checkCancellation()
            let batch = QueryBatch(
                values: Array(queries.values[(run.lowerBound * dim)..<(run.upperBound * dim)]), shape: shape)
            let part = try await backend.denoise(
                batch, t: t[run.lowerBound], method: method, firstQueryIndex: first + run.lowerBound)
            guard part.count == batch.values.count else {
                throw WireError.invalidArgument("the engine returned \(part.count) values for \(batch.values.count)")
            }
            values += part
        }
        let denoised: Pspc_V1_Tensor
        let dims = [queries.count, shape.channels, shape.height, shape.width]
        if configuration.responseDType == .float32 {
            denoised = Pspc_V1_Tensor(float32: values.map(Float.init), shape: dims)
        } else {
            denoised = Pspc_V1_Tensor(float64: values, shape: dims)
        }
        var response = Pspc_V1_DenoiseResponse()
        response.denoised = denoised
        return response
    }

    /// The maximal runs of consecutive queries with the same t, in order.
    public static func runs(of t: [Double]) -> [Range<Int>] {
        guard !t.isEmpty else { return [] }
        var runs: [Range<Int>] = []
        var start = 0
        for i in 1...t.count where i == t.count || t[i] != t[start] {
            runs.append(start..<i)
            start = i
        }
        return runs
    }
}

/// At most `limit` holders at once; the others wait in arrival order. A waiter whose task is cancelled leaves the
/// queue at once (`CancellationError`).
actor RequestGate {
    let limit: Int
    private var holders = 0
    private var waiting: [(id: Int, continuation: CheckedContinuation<Void, Error>)] = []
    private var nextID = 0

    init(limit: Int) { self.limit = limit }

    func enter() async throws {
        try Task.checkCancellation()
        if holders < limit {
            holders += 1
            return
        }
        let id = nextID
        nextID += 1
        // The place is handed over by `leave()`, which does not decrement for a waiter it wakes.
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
                if Task.isCancelled {
                    continuation.resume(throwing: CancellationError())
                } else {
                    waiting.append((id, continuation))
                }
            }
        } onCancel: {
            Task { await self.drop(id) }
        }
    }

    func leave() {
        if waiting.isEmpty {
            holders -= 1
        } else {
            waiting.removeFirst().continuation.resume()
        }
    }

    private func drop(_ id: Int) {
        guard let i = waiting.firstIndex(where: { $0.id == id }) else { return }
        waiting.remove(at: i).continuation.resume(throwing: CancellationError())
    }
}

/// One connection of a `DenoiseService`: the handshake (within its timeout), then sealed requests answered in
/// the background, each in a task of its own that a `Cancel` or the connection's close cancels. Runs on its
/// channel's event loop only.
final class DenoiseConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = Pspc_V1_Frame
    typealias OutboundOut = Pspc_V1_Frame

    let service: DenoiseService
    var handshake: HandshakeServer
    let security: FrameSecurity
    let admitted: Bool
    private var closing = false
    /// Requests not yet answered, by request id.
    private var requests: [UInt64: Task<Void, Never>] = [:]
    private var lastRead = NIODeadline.now()
    private var timer: RepeatedTask?
    private var logger: Logger

    init(service: DenoiseService, handshake: HandshakeServer, security: FrameSecurity, admitted: Bool) {
        logger = service.logger
        self.service = service
        self.handshake = handshake
        self.security = security
        self.admitted = admitted
    }

    private var limits: WorkerService.Limits { service.configuration.limits }

    func channelActive(context: ChannelHandlerContext) {
        if let peer = context.remoteAddress, let ip = peer.ipAddress {
            logger[metadataKey: "peer"] = "\(ip):\(peer.port ?? 0)"
        }
        service.metrics.connectionsOpen.increment()
        guard admitted else {
            service.metrics.handshakeFailed(.tooManyConnections)
            let reason = "too many connections (limit \(limits.maxConnections))"
            closeAfter(.error(.unavailable(reason)), context: context, because: reason)
            return
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let opened = NIODeadline.now()
        let period = TimeAmount.nanoseconds(min(limits.handshakeTimeout.nanoseconds, limits.idleTimeout.nanoseconds) / 4 + 1)
        timer = context.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in
            let (handler, context) = bound.value
            handler.checkTimeouts(context: context, opened: opened)
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        service.metrics.connectionsOpen.decrement()
        if admitted { service.connections.leave() }
        closing = true
        for task in requests.values { task.cancel() }
        requests.removeAll()
        context.fireChannelInactive()
    }

    private func checkTimeouts(context: ChannelHandlerContext, opened: NIODeadline) {
        let now = NIODeadline.now()
        if !handshake.isEstablished {
            if now - opened >= limits.handshakeTimeout {
                service.metrics.handshakeFailed(.timeout)
                let seconds = limits.handshakeTimeout.nanoseconds / 1_000_000_000
                closeAfter(
                    .error(.unexpectedMessage(expected: "a handshake within \(seconds) s", got: "nothing")),
                    context: context, because: "no handshake within \(seconds) s")
            }
        } else if requests.isEmpty && now - lastRead >= limits.idleTimeout {
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
                if let keys = handshake.sessionKeys {
                    security.sealInbound(key: keys.clientToServer)
                    security.sealOutbound(key: keys.serverToClient)
                }
                if let reply { context.writeAndFlush(wrapOutboundOut(reply), promise: nil) }
                logger.info("client connected")
            case .fail(let error, let reply):
                service.metrics.handshakeFailed(WorkerMetrics.HandshakeFailure(error))
                closeAfter(reply, context: context, because: "handshake failed: \(error)")
            }
            return
        }
        let id = frame.requestID
        let op = frame.metricsOp
        if case .error? = frame.body {} else { service.metrics.requestRead(op: op) }
        if case .cancel(let cancel)? = frame.body {
            // No reply of its own: the cancelled request is answered CANCELLED, or with its result if it was done.
            requests[cancel.targetRequestID]?.cancel()
            return
        }
        if case .error(let error)? = frame.body {
            logger.warning("the client reported: \(WireError(reply: error))")
            return
        }
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let service = self.service, logger = self.logger, started = NIODeadline.now()
        service.metrics.queueDepth.increment()
        let task = Task {
            let reply = await service.answer(frame)
            service.metrics.queueDepth.decrement()
            service.metrics.requestAnswered(op: op, seconds: Double((NIODeadline.now() - started).nanoseconds) / 1e9)
            if case .error(let error)? = reply.body { service.metrics.requestFailed(op: op, code: error.code) }
            if case .error(let error)? = reply.body, error.code != .cancelled {
                logger.warning(
                    "request \(id) (\(op)) answered with an error: \(WireError(reply: error))",
                    metadata: ["request": "\(id)"])
            } else {
                let ms = Double((NIODeadline.now() - started).nanoseconds) / 1e6
                logger.debug(
                    "request \(id) (\(op)) answered in \(String(format: "%.1f", ms)) ms", metadata: ["request": "\(id)"])
            }
            bound.eventLoop.execute {
                handler.value.requests[id] = nil
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
        requests[id] = task
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard !closing else { return }
        if !handshake.isEstablished { service.metrics.handshakeFailed(.badFrame) }
        let wire = (error as? WireError) ?? .malformedFrame(String(describing: error))
        closeAfter(.error(wire), context: context, because: "bad frame: \(wire)")
    }

    /// Sends `frame` (if any) and closes, once. A `reason` is logged.
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
