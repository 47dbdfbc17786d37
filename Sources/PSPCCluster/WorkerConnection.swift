import Foundation
import NIOCore
import NIOPosix
import PSPCCore
import PSPCData
import PSPCWire

/// The coordinator's connection to one worker: the handshake, then requests matched to answers by id, each
/// with a deadline. A deadline that passes closes the connection (a hung worker's late answers are dropped);
/// a closed connection fails every request still waiting on it.
final class WorkerConnection: @unchecked Sendable {
    let address: HostPort
    let channel: Channel
    let peer: HandshakePeer
    private let state: ConnectionState
    /// Where the requests written on this connection are counted, by op.
    private let traffic: WireTraffic

    private init(address: HostPort, channel: Channel, peer: HandshakePeer, state: ConnectionState, traffic: WireTraffic) {
        self.address = address
        self.channel = channel
        self.peer = peer
        self.state = state
        self.traffic = traffic
    }

    static func connect(
        to address: HostPort, token: [UInt8], group: EventLoopGroup, timeout: TimeAmount = .seconds(10),
        maxFrameSize: Int = FrameCodec.defaultMaxFrameSize, traffic: WireTraffic = WireTraffic()
    ) async throws -> WorkerConnection {
        let state = ConnectionState(worker: address.description)
        let handshake = try HandshakeClient(token: token, role: .coordinator, nodeID: "coordinator-\(getpid())")
        let established = group.next().makePromise(of: HandshakePeer.self)
        state.established = established
        let security = FrameSecurity(maxFrameSize: maxFrameSize)
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(timeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandlers([
                            TrafficCounter(traffic),
                            ByteToMessageHandler(FrameDecoder(security: security)),
                            MessageToByteHandler(FrameEncoder(security: security)),
                            CoordinatorConnectionHandler(state: state, handshake: handshake, security: security),
                        ])
                    }
                }
                .connect(host: address.host, port: address.port).get()
        } catch {
            established.fail(error)
            throw ClusterError.workerFailed(worker: address.description, reason: "cannot connect: \(connectFailure(error))")
        }
        let timeoutTask = channel.eventLoop.scheduleTask(in: timeout) {
            established.fail(
                ClusterError.deadlineExceeded(worker: address.description, seconds: Double(timeout.nanoseconds) / 1e9))
            channel.close(promise: nil)
        }
        do {
            let peer = try await established.futureResult.get()
            timeoutTask.cancel()
            return WorkerConnection(address: address, channel: channel, peer: peer, state: state, traffic: traffic)
        } catch {
            timeoutTask.cancel()
            channel.close(promise: nil)
            if let error = error as? ClusterError { throw error }
            throw ClusterError.workerFailed(worker: address.description, reason: "handshake failed: \(error)")
        }
    }

    var isActive: Bool { channel.isActive && !state.isClosed }

    /// Sends `body` and waits for the answer, at most `deadline` seconds.
    func call(_ body: Pspc_V1_Frame.OneOf_Body, deadline: Double) async throws -> Pspc_V1_Frame.OneOf_Body {
        guard let (id, answer) = start(body) else {
            throw ClusterError.workerFailed(worker: address.description, reason: ClusterError.connectionClosed)
        }
        let channel = self.channel, worker = address.description, state = self.state
        let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(deadline * 1e9))) {
            state.fail(id, ClusterError.deadlineExceeded(worker: worker, seconds: deadline))
            channel.close(promise: nil)
        }
        defer { timer.cancel() }
        let frame = try await answer.get()
        let body = try frame.requireBody()
        if case .error(let reply) = body {
            throw ClusterError.remote(worker: worker, message: WireError(reply: reply).description, code: reply.code)
        }
        return body
    }

    /// Sends `body` and returns its request id and the frame that will answer it (an error frame included); nil
    /// when the connection is closed. The caller keeps the time: the cluster's failover watches deadlines.
    func start(_ body: Pspc_V1_Frame.OneOf_Body) -> (UInt64, EventLoopFuture<Pspc_V1_Frame>)? {
        let id = state.nextRequestID()
        let promise = channel.eventLoop.makePromise(of: Pspc_V1_Frame.self)
        let worker = address.description, state = self.state, traffic = self.traffic
        guard state.register(id, promise) else {
            // Closed already: the promise is completed all the same (NIO requires it; nobody waits on it).
            promise.fail(ClusterError.workerFailed(worker: worker, reason: ClusterError.connectionClosed))
            return nil
        }
        let frame = Pspc_V1_Frame(requestID: id, body: body)
        let op = frame.metricsOp
        // Counted once written, as the worker counts it once read (the frame itself is not kept for it).
        channel.writeAndFlush(frame).whenComplete { result in
            switch result {
            case .success: traffic.countRequest(op)
            case .failure(let error):
                state.fail(id, ClusterError.workerFailed(worker: worker, reason: "send failed: \(error)"))
            }
        }
        return (id, promise.futureResult)
    }

    /// Asks the worker to drop request `id` (it answers nothing more for it) and fails the local wait with
    /// `cancelled`.
    func cancel(_ id: UInt64) {
        var cancel = Pspc_V1_Cancel()
        cancel.targetRequestID = id
        let traffic = self.traffic
        channel.writeAndFlush(Pspc_V1_Frame(requestID: state.nextRequestID(), body: .cancel(cancel))).whenSuccess {
            traffic.countRequest("cancel")
        }
        state.fail(id, ClusterError.cancelled)
    }

    /// Completes when the connection is closed, whoever closed it.
    var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    func close() {
        channel.close(promise: nil)
    }
}

/// What the connection handler and callers share: pending requests by id.
final class ConnectionState: @unchecked Sendable {
    let worker: String
    private let lock = NSLock()
    private var pending: [UInt64: EventLoopPromise<Pspc_V1_Frame>] = [:]
    private var nextID: UInt64 = 1
    private(set) var isClosed = false
    var established: EventLoopPromise<HandshakePeer>?

    init(worker: String) { self.worker = worker }

    func nextRequestID() -> UInt64 {
        lock.withLock {
            defer { nextID += 1 }
            return nextID
        }
    }

    func register(_ id: UInt64, _ promise: EventLoopPromise<Pspc_V1_Frame>) -> Bool {
        lock.withLock {
            guard !isClosed else { return false }
            pending[id] = promise
            return true
        }
    }

    func resolve(_ frame: Pspc_V1_Frame) {
        let promise = lock.withLock { pending.removeValue(forKey: frame.requestID) }
        promise?.succeed(frame)
    }

    func fail(_ id: UInt64, _ error: Error) {
        let promise = lock.withLock { pending.removeValue(forKey: id) }
        promise?.fail(error)
    }

    func closeAll(_ error: Error) {
        let all = lock.withLock {
            isClosed = true
            defer { pending.removeAll() }
            return Array(pending.values)
        }
        for promise in all { promise.fail(error) }
        established?.fail(error)
    }
}

/// The coordinator side of one connection: drives the handshake, then hands answers to waiting callers.
final class CoordinatorConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = Pspc_V1_Frame
    typealias OutboundOut = Pspc_V1_Frame

    let state: ConnectionState
    var handshake: HandshakeClient
    let security: FrameSecurity

    init(state: ConnectionState, handshake: HandshakeClient, security: FrameSecurity) {
        self.state = state
        self.handshake = handshake
        self.security = security
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(handshake.start()), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard handshake.isEstablished else {
            switch handshake.receive(frame) {
            case .send(let reply):
                // The Proof: the last plain frame. Everything after it is sealed, the Welcome included (the
                // encoder runs within this call, so the switch cannot catch the Proof itself).
                context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
                if let keys = handshake.sessionKeys {
                    security.sealOutbound(key: keys.clientToServer)
                    security.sealInbound(key: keys.serverToClient)
                    security.acceptsPlainErrors = true
                }
            case .established(let peer, let reply):
                security.acceptsPlainErrors = false
                if let reply { context.writeAndFlush(wrapOutboundOut(reply), promise: nil) }
                state.established?.succeed(peer)
            case .fail(let error, let reply):
                state.established?.fail(ClusterError.workerFailed(worker: state.worker, reason: error.description))
                if let reply { context.writeAndFlush(wrapOutboundOut(reply), promise: nil) }
                context.close(promise: nil)
            }
            return
        }
        state.resolve(frame)
    }

    func channelInactive(context: ChannelHandlerContext) {
        state.closeAll(ClusterError.workerFailed(worker: state.worker, reason: ClusterError.connectionClosed))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        state.closeAll(ClusterError.workerFailed(worker: state.worker, reason: "\(error)"))
        context.close(promise: nil)
    }
}

/// Why a connection could not be made, in words: NIO's connection error holds one error per address tried; an
/// operating-system error reads "Connection refused (ECONNREFUSED)".
func connectFailure(_ error: Error) -> String {
    if let error = error as? NIOConnectionError {
        let causes = error.connectionErrors.map { attempt in
            (attempt.error as? IOError).map { SystemError.describe(errno: $0.errnoCode) } ?? "\(attempt.error)"
        }
        if let dns = error.dnsAAAAError ?? error.dnsAError, causes.isEmpty { return "cannot resolve \(error.host) (\(dns))" }
        if !causes.isEmpty { return Array(Set(causes)).sorted().joined(separator: "; ") }
    }
    if let error = error as? IOError { return SystemError.describe(errno: error.errnoCode) }
    if let error = error as? ChannelError, case .connectTimeout(let amount) = error {
        return "no connection within \(Double(amount.nanoseconds) / 1e9) s"
    }
    return "\(error)"
}
