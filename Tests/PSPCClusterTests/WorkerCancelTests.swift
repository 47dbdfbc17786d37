import Foundation
import NIOCore
import NIOPosix
import PSPCCluster
import PSPCCore
import PSPCData
import PSPCWire
import XCTest

/// `Cancel` on a worker, through a coordinator written out by hand (the handshake, then frames one by one): a
/// waiting request is dropped and never computed, a computing one stops at a safe point, a closed connection
/// cancels all of its requests, and an id the worker does not know is ignored. Every check reads the worker's
/// counters or the answers' codes, never the clock.
final class WorkerCancelTests: XCTestCase {
    typealias T = ClusterTests
    static let shape = ImageShape(channels: 1, height: 28, width: 28)

    /// One worker holding 4000 Fashion-MNIST training images, x-flipped (8000), in blocks of 256 images, so
    /// that an empirical request of a few hundred queries computes for a while and passes many safe points.
    static func startWorker() async throws -> (WorkerService, HostPort, Channel) {
        let train = try IDXReader.read(
            path: DatasetSource.fashionMNISTDirectory + "/train-images-idx3-ubyte.gz", limit: 4000)
        let set = try ImageSet(pixels: train.pixels, count: train.count, shape: shape, xflip: true)
        let shard = WorkerService.HostedShard(
            id: 0, first: 0, source: InProcessShard(images: set, threads: 2, blockImages: 256))
        let service = WorkerService(
            shards: [shard], shape: shape, token: T.token, nodeID: "cancel", threads: 2, datasetShards: 1,
            datasetID: "test", xflip: true)
        let channel = try await service.bind(host: "127.0.0.1", port: 0, group: T.group)
        return (service, T.addresses([channel])[0], channel)
    }

    /// An empirical request for `queries` noisy test images at t = 1.
    static func empirical(queries: Int) -> Pspc_V1_Frame.OneOf_Body {
        let values = (0..<queries).flatMap { T.query($0 % 8, t: 1) }
        return .partialRequest(
            Pspc_V1_PartialRequest(.empirical(queries: QueryBatch(values: values, shape: shape), t: 1)))
    }

    static func cancel(_ id: UInt64) -> Pspc_V1_Frame {
        var cancel = Pspc_V1_Cancel()
        cancel.targetRequestID = id
        return Pspc_V1_Frame(requestID: 0, body: .cancel(cancel))
    }

    /// Polls `condition` every 5 ms, at most 60 s (a bound against hanging, not a speed requirement).
    static func eventually(_ what: String, _ condition: () async throws -> Bool) async throws {
        for _ in 0..<12_000 {
            if try await condition() { return }
            try await Task.sleep(nanoseconds: 5_000_000)
        }
        XCTFail("never happened: \(what)")
    }

    static func cancelCode(_ frame: Pspc_V1_Frame) -> Pspc_V1_ErrorCode? {
        if case .error(let reply)? = frame.body { return reply.code }
        return nil
    }

    /// (a) A request waiting behind a computing one is dropped by its Cancel: answered CANCELLED, never
    /// computed; the computing one completes normally.
    func testWaitingRequestIsDroppedAndNeverComputed() async throws {
        let (service, address, channel) = try await Self.startWorker()
        let client = try await RawCoordinator.connect(to: address, token: T.token, group: T.group)
        try await client.send(Pspc_V1_Frame(requestID: 1, body: Self.empirical(queries: 256)))
        try await Self.eventually("request 1 computing") { service.statistics.computeStarted == 1 }
        try await client.send(Pspc_V1_Frame(requestID: 2, body: Self.empirical(queries: 8)))
        try await client.send(Self.cancel(2))
        let second = try await client.frame(for: 2)
        XCTAssertEqual(Self.cancelCode(second), .cancelled, "request 2: \(second)")
        let first = try await client.frame(for: 1)
        guard case .partialResponse(let response)? = first.body, case .softmax? = response.result else {
            return XCTFail("request 1: \(first)")
        }
        try await Self.eventually("both requests answered") { service.statistics.inFlight == 0 }
        var expected = WorkerService.Statistics()
        expected.served = 1
        expected.computeStarted = 1
        expected.cancelledWaiting = 1
        XCTAssertEqual(service.statistics, expected, "request 2 was computed, or the counts are off")
        client.close()
        try await channel.close()
    }

    /// (b) A computing request stops at a safe point when cancelled: its answer is CANCELLED, not partials.
    /// Health requests are answered while it computes.
    func testComputingRequestStopsEarly() async throws {
        let (service, address, channel) = try await Self.startWorker()
        let client = try await RawCoordinator.connect(to: address, token: T.token, group: T.group)
        try await client.send(Pspc_V1_Frame(requestID: 7, body: Self.empirical(queries: 2048)))
        try await Self.eventually("request 7 computing") { service.statistics.computeStarted == 1 }
        try await client.send(Pspc_V1_Frame(requestID: 8, body: .healthRequest(.init())))
        let health = try await client.frame(for: 8)
        guard case .healthResponse(let report)? = health.body else { return XCTFail("health: \(health)") }
        XCTAssertEqual(report.inFlight, 1, "the health answer waited for the computation")
        XCTAssertEqual(report.served, 0)
        XCTAssertFalse(client.hasFrame(for: 7), "request 7 finished before it could be cancelled: make it larger")
        try await client.send(Self.cancel(7))
        let answer = try await client.frame(for: 7)
        XCTAssertEqual(Self.cancelCode(answer), .cancelled, "request 7 was not stopped: \(answer)")
        if case .error(let reply)? = answer.body {
            XCTAssertTrue(reply.message.contains("while it was computing"), reply.message)
        }
        try await Self.eventually("request 7 counted out") { service.statistics.inFlight == 0 }
        var expected = WorkerService.Statistics()
        expected.computeStarted = 1
        expected.cancelledComputing = 1
        XCTAssertEqual(service.statistics, expected)
        // The worker computes again after the stop, and this request is not cancelled by the earlier Cancel.
        try await client.send(Pspc_V1_Frame(requestID: 9, body: Self.empirical(queries: 2)))
        guard case .partialResponse? = try await client.frame(for: 9).body else { return XCTFail("no partials") }
        client.close()
        try await channel.close()
    }

    /// (c) Closing a connection cancels its requests, waiting and computing: a second connection's health
    /// answers show nothing in flight and nothing served.
    func testClosingTheConnectionCancelsItsRequests() async throws {
        let (service, address, channel) = try await Self.startWorker()
        let client = try await RawCoordinator.connect(to: address, token: T.token, group: T.group)
        try await client.send(Pspc_V1_Frame(requestID: 1, body: Self.empirical(queries: 2048)))
        try await client.send(Pspc_V1_Frame(requestID: 2, body: Self.empirical(queries: 2048)))
        try await Self.eventually("request 1 computing, 2 waiting") {
            let now = service.statistics
            return now.computeStarted == 1 && now.inFlight == 2
        }
        client.close()
        let observer = try await RawCoordinator.connect(to: address, token: T.token, group: T.group)
        var next: UInt64 = 100
        var last = Pspc_V1_HealthResponse()
        try await Self.eventually("in_flight back to 0") {
            next += 1
            try await observer.send(Pspc_V1_Frame(requestID: next, body: .healthRequest(.init())))
            guard case .healthResponse(let report)? = try await observer.frame(for: next).body else { return false }
            last = report
            return report.inFlight == 0
        }
        XCTAssertEqual(last.served, 0, "a request of the closed connection was served")
        var expected = WorkerService.Statistics()
        expected.computeStarted = 1
        expected.cancelledWaiting = 1
        expected.cancelledComputing = 1
        XCTAssertEqual(service.statistics, expected)
        observer.close()
        try await channel.close()
    }

    /// (d) A Cancel for an id the worker does not know (never sent, or already answered) gets no reply and
    /// changes nothing; the connection keeps working.
    func testCancelOfAnUnknownIdIsIgnored() async throws {
        let (service, address, channel) = try await Self.startWorker()
        let client = try await RawCoordinator.connect(to: address, token: T.token, group: T.group)
        try await client.send(Self.cancel(999))
        try await client.send(Pspc_V1_Frame(requestID: 3, body: Self.empirical(queries: 2)))
        guard case .partialResponse? = try await client.frame(for: 3).body else { return XCTFail("no partials") }
        try await client.send(Self.cancel(3))
        try await client.send(Pspc_V1_Frame(requestID: 4, body: .healthRequest(.init())))
        guard case .healthResponse(let report)? = try await client.frame(for: 4).body else {
            return XCTFail("no health answer")
        }
        XCTAssertEqual(report.inFlight, 0)
        XCTAssertEqual(report.served, 1)
        XCTAssertEqual(client.received.map(\.requestID), [3, 4], "a Cancel was answered")
        XCTAssertTrue(client.isActive, "the worker closed the connection")
        var expected = WorkerService.Statistics()
        expected.served = 1
        expected.computeStarted = 1
        XCTAssertEqual(service.statistics, expected)
        client.close()
        try await channel.close()
    }

    /// The engine's safe points: a set flag stops the empirical softmax and both crop rounds with
    /// `CancellationError`; a flag never set changes no bit of any answer.
    func testTheEngineStopsAtItsSafePointsAndAnUnsetFlagChangesNothing() throws {
        let source = T.shards[4].source
        let queries = QueryBatch(values: T.query(0, t: 1) + T.query(1, t: 1), shape: Self.shape)
        let crops = CropSet.square(patchSize: 5)
        let logZ = [Double](repeating: 0, count: 2 * crops.cropCount(for: Self.shape))
        let requests: [(String, PartialRequest)] = [
            ("empirical", .empirical(queries: queries, t: 1)),
            ("crop normalizers", .cropNormalizers(queries: queries, t: 1, crops: crops)),
            ("crop composite", .cropComposite(queries: queries, t: 1, crops: crops, logZ: logZ)),
        ]
        for (name, request) in requests {
            let stopped = CancellationFlag()
            stopped.cancel()
            XCTAssertThrowsError(try source.evaluateNow(request, cancellation: stopped), name) { error in
                XCTAssertTrue(error is CancellationError, "\(name): \(error)")
            }
            let plain = try source.evaluateNow(request)
            let flagged = try source.evaluateNow(request, cancellation: CancellationFlag())
            switch (plain, flagged) {
            case (.softmax(let a), .softmax(let b)): XCTAssertEqual(a, b, name)
            case (.sums(let a), .sums(let b)): XCTAssertEqual(a, b, name)
            default: XCTFail("\(name): answers of different kinds")
            }
        }
    }
}

/// A coordinator's side of one connection, by hand: the handshake as `HandshakeClient` drives it (the same
/// steps as the cluster's own connection), then frames sent one by one and every frame received kept.
final class RawCoordinator: @unchecked Sendable {
    let channel: Channel
    private let inbox: Inbox

    private init(channel: Channel, inbox: Inbox) {
        self.channel = channel
        self.inbox = inbox
    }

    static func connect(to address: HostPort, token: [UInt8], group: EventLoopGroup) async throws -> RawCoordinator {
        let inbox = Inbox()
        let established = group.next().makePromise(of: Void.self)
        let security = FrameSecurity()
        let handshake = try HandshakeClient(token: token, role: .coordinator, nodeID: "raw-test")
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(FrameDecoder(security: security)),
                        MessageToByteHandler(FrameEncoder(security: security)),
                        Handler(handshake: handshake, security: security, inbox: inbox, established: established),
                    ])
                }
            }
            .connect(host: address.host, port: address.port).get()
        try await established.futureResult.get()
        return RawCoordinator(channel: channel, inbox: inbox)
    }

    var isActive: Bool { channel.isActive }

    /// Every frame received after the handshake, in arrival order.
    var received: [Pspc_V1_Frame] { inbox.frames }

    func send(_ frame: Pspc_V1_Frame) async throws { try await channel.writeAndFlush(frame).get() }

    func hasFrame(for id: UInt64) -> Bool { inbox.frames.contains { $0.requestID == id } }

    /// The first frame answering request `id`, waiting for it (at most 120 s, then the test fails).
    func frame(for id: UInt64) async throws -> Pspc_V1_Frame {
        for _ in 0..<24_000 {
            if let frame = inbox.frames.first(where: { $0.requestID == id }) { return frame }
            guard channel.isActive else { break }
            try await Task.sleep(nanoseconds: 5_000_000)
        }
        if let frame = inbox.frames.first(where: { $0.requestID == id }) { return frame }
        throw WireError.malformedFrame("no answer to request \(id) (connection active: \(channel.isActive))")
    }

    func close() { channel.close(promise: nil) }

    final class Inbox: @unchecked Sendable {
        private let lock = NSLock()
        private var kept: [Pspc_V1_Frame] = []
        var frames: [Pspc_V1_Frame] { lock.withLock { kept } }
        func append(_ frame: Pspc_V1_Frame) { lock.withLock { kept.append(frame) } }
    }

    final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = Pspc_V1_Frame
        typealias OutboundOut = Pspc_V1_Frame

        var handshake: HandshakeClient
        let security: FrameSecurity
        let inbox: Inbox
        let established: EventLoopPromise<Void>

        init(handshake: HandshakeClient, security: FrameSecurity, inbox: Inbox, established: EventLoopPromise<Void>) {
            self.handshake = handshake
            self.security = security
            self.inbox = inbox
            self.established = established
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
                    // The Proof is the last plain frame; the Welcome and everything after it are sealed.
                    context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
                    if let keys = handshake.sessionKeys {
                        security.sealOutbound(key: keys.clientToServer)
                        security.sealInbound(key: keys.serverToClient)
                        security.acceptsPlainErrors = true
                    }
                case .established(_, let reply):
                    security.acceptsPlainErrors = false
                    if let reply { context.writeAndFlush(wrapOutboundOut(reply), promise: nil) }
                    established.succeed(())
                case .fail(let error, let reply):
                    if let reply { context.writeAndFlush(wrapOutboundOut(reply), promise: nil) }
                    established.fail(error)
                    context.close(promise: nil)
                }
                return
            }
            inbox.append(frame)
        }

        func channelInactive(context: ChannelHandlerContext) {
            established.fail(WireError.unavailable("the connection closed during the handshake"))
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            established.fail(error)
            context.close(promise: nil)
        }
    }
}
