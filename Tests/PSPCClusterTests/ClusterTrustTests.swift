import Foundation
import NIOCore
import NIOPosix
import PSPCCluster
import PSPCCore
import PSPCWire
import XCTest

/// The cluster's shell around `Failover`, on real sockets in this process: a worker answering NaN partials is
/// taken out and its replica answers (bit for bit the in-process result); a worker that reconnects with another
/// dataset is refused; a worker that joins late becomes a holder; a hung worker is noticed by its heartbeat.
final class ClusterTrustTests: XCTestCase {
    typealias Base = ClusterTests

    /// A quick policy: revivals every half second, heartbeats every second, gone after three.
    static var quick: FailoverPolicy {
        var policy = FailoverPolicy(deadline: 60, retryInterval: 0.5)
        policy.heartbeatInterval = 1
        policy.heartbeatTimeout = 3
        return policy
    }

    /// A worker on its own event loop, so that stopping it closes every connection it has (as a killed process).
    struct Running {
        let service: WorkerService
        let channel: Channel
        let group: MultiThreadedEventLoopGroup
        var port: Int { channel.localAddress!.port! }
        func stop() async throws { try await group.shutdownGracefully() }
    }

    static func worker(_ shards: [WorkerService.HostedShard], datasetID: String = "test", port: Int = 0) async throws
        -> Running
    {
        let service = WorkerService(
            shards: shards, shape: ImageShape(channels: 1, height: 28, width: 28), token: Base.token,
            nodeID: "trust-\(datasetID)", threads: 2, datasetShards: Base.shards.count, datasetID: datasetID,
            xflip: true)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        return Running(service: service, channel: try await service.bind(host: "127.0.0.1", port: port, group: group), group: group)
    }

    func queries() -> [Double] { (0..<6).flatMap { Base.query($0, t: 1.09) } }

    func testANaNPartialFromOneWorkerGoesToItsReplicaAndTheBitsStay() async throws {
        let local = try DenoisingEngine(sources: Base.shards.map { $0.source }, batchSize: 3)
        let expected = try await local.denoise(queries(), t: 1.09, method: .empirical).values
        let fake = try await NaNWorker.start(shards: Base.shards)
        let good = try await Self.worker(Base.shards)
        let addresses = [HostPort(host: "127.0.0.1", port: fake.port), HostPort(host: "127.0.0.1", port: good.port)]
        let lines = LogLines()
        let cluster = try await Cluster.connect(
            to: addresses, token: Base.token, group: Base.group, policy: Self.quick, log: lines.add)
        let remote = try DenoisingEngine(sources: cluster.sources(), batchSize: 3, concurrentSources: true)
        let values = try await remote.denoise(queries(), t: 1.09, method: .empirical).values
        XCTAssertEqual(values.map(\.bitPattern), expected.map(\.bitPattern))
        XCTAssertGreaterThan(fake.answered.value, 0, "the NaN worker was never asked")
        XCTAssertTrue(
            lines.joined.contains("worker 127.0.0.1:\(fake.port) is down (its answer does not decode: invalid tensor: softmax.v[0] is nan"),
            lines.joined)
        await cluster.close()
        try await good.stop()
        try await fake.channel.close()
    }

    func testALateWorkerWithAnotherDatasetIsRefusedAndALateGoodOneJoins() async throws {
        let local = try DenoisingEngine(sources: Base.shards.map { $0.source }, batchSize: 3)
        let expected = try await local.denoise(queries(), t: 1.09, method: .empirical).values
        // Worker 0 holds everything; the ports of workers 1 and 2 are free at the start (late workers).
        let first = try await Self.worker(Base.shards)
        var ports = [first.port]
        for _ in 0..<2 {
            let placeholder = try await Self.worker(Base.shards)
            ports.append(placeholder.port)
            try await placeholder.stop()
        }
        let lines = LogLines()
        let cluster = try await Cluster.connect(
            to: ports.map { HostPort(host: "127.0.0.1", port: $0) }, token: Base.token, group: Base.group,
            policy: Self.quick, log: lines.add)
        let downAtStart = await cluster.router.down
        XCTAssertEqual(downAtStart, [1, 2])
        let remote = try DenoisingEngine(sources: cluster.sources(), batchSize: 3, concurrentSources: true)
        // Worker 1 comes up with another dataset of the same shape and shard sizes: refused, never used.
        let wrong = try await Self.worker(Base.shards, datasetID: "another", port: ports[1])
        try await waitUntil { lines.joined.contains("is refused and not used") }
        XCTAssertTrue(
            lines.joined.contains("127.0.0.1:\(ports[1]) is refused and not used: it serves another dataset"),
            lines.joined)
        // Worker 2 comes up with the run's dataset, holding shards 0-3: it joins as their holder.
        let late = try await Self.worker(Array(Base.shards[0..<4]), port: ports[2])
        try await waitUntil { await cluster.router.down == [1] }
        XCTAssertTrue(lines.joined.contains("127.0.0.1:\(ports[2]) joined (shards 0, 1, 2, 3)"), lines.joined)
        let holders = await cluster.router.holders
        XCTAssertEqual(holders, (0..<7).map { $0 < 4 ? [0, 2] : [0] })
        // Worker 0 goes away: shards 0-3 are answered by the late worker, 4-6 are lost.
        try await first.stop()
        do {
            _ = try await remote.denoise(queries(), t: 1.09, method: .empirical)
            XCTFail("shards 4-6 have no live holder")
        } catch let error as ClusterError {
            guard case .shardsLost(let lost, _) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(lost.allSatisfy { $0 >= 4 }, "\(lost)")
        }
        // Back with every shard: the run's answer, bit for bit, with worker 1 still refused.
        let back = try await Self.worker(Base.shards, port: ports[0])
        try await waitUntil { await cluster.router.down == [1] }
        let values = try await remote.denoise(queries(), t: 1.09, method: .empirical).values
        XCTAssertEqual(values.map(\.bitPattern), expected.map(\.bitPattern))
        await cluster.close()
        for worker in [wrong, late, back] { try await worker.stop() }
    }

    func testAHungWorkerIsNoticedByItsHeartbeatAndItsRequestsGoToTheReplica() async throws {
        let local = try DenoisingEngine(sources: Base.shards.map { $0.source }, batchSize: 3)
        let expected = try await local.denoise(queries(), t: 1.09, method: .empirical).values
        let silent = try await NaNWorker.start(shards: Base.shards, silent: true)
        let good = try await Self.worker(Base.shards)
        let lines = LogLines()
        let cluster = try await Cluster.connect(
            to: [HostPort(host: "127.0.0.1", port: silent.port), HostPort(host: "127.0.0.1", port: good.port)],
            token: Base.token, group: Base.group, policy: Self.quick, log: lines.add)
        let remote = try DenoisingEngine(sources: cluster.sources(), batchSize: 3, concurrentSources: true)
        let values = try await remote.denoise(queries(), t: 1.09, method: .empirical).values
        XCTAssertEqual(values.map(\.bitPattern), expected.map(\.bitPattern))
        XCTAssertTrue(lines.joined.contains("no answer to a health check"), lines.joined)
        await cluster.close()
        try await good.stop()
        try await silent.channel.close()
    }

    /// A caller that stops waiting (its task cancelled) stops the worker: every request it had sent there ends
    /// CANCELLED, dropped while it waited or stopped while it computed, and none is served. The worker's shards
    /// hold each computation until its Cancel arrives, so the outcome does not depend on how fast either side
    /// runs on a loaded machine.
    func testACancelledRunCancelsItsRequestsOnTheWorker() async throws {
        let held = Base.shards.map {
            WorkerService.HostedShard(id: $0.id, first: $0.first, source: HeldUntilCancelled($0.source))
        }
        let worker = try await Self.worker(held)
        let cluster = try await Cluster.connect(
            to: [HostPort(host: "127.0.0.1", port: worker.port)], token: Base.token, group: Base.group,
            policy: Self.quick)
        let remote = try DenoisingEngine(
            sources: cluster.sources(), batchSize: 100, concurrentSources: true, batchesInFlight: 4)
        let z = (0..<2000).flatMap { Base.query($0 % 8, t: 1.09) }
        let run = Task { try await remote.denoise(z, t: 1.09, method: .empirical) }
        try await waitUntil { worker.service.statistics.computeStarted >= 1 }
        run.cancel()
        do {
            _ = try await run.value
            XCTFail("the cancelled run finished")
        } catch is CancellationError {
        } catch ClusterError.cancelled {
        }
        try await waitUntil { worker.service.statistics.inFlight == 0 }
        let stats = worker.service.statistics
        XCTAssertEqual(stats.served, 0, "a request was computed to the end: \(stats)")
        XCTAssertGreaterThan(stats.cancelledComputing, 0, "\(stats)")
        XCTAssertEqual(stats.cancelledComputing, stats.computeStarted, "a started request did not stop: \(stats)")
        await cluster.close()
        try await worker.stop()
    }

    /// Polls `condition` every 50 ms for up to 20 s.
    func waitUntil(_ condition: () async -> Bool, file: StaticString = #filePath, line: UInt = #line) async throws {
        for _ in 0..<400 {
            if await condition() { return }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        XCTFail("condition not met within 20 s", file: file, line: line)
    }
}

/// Log lines collected from the cluster.
final class LogLines: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    var add: @Sendable (String) -> Void { { [self] line in lock.withLock { lines.append(line) } } }
    var joined: String { lock.withLock { lines.joined(separator: "\n") } }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}

/// A worker that passes the handshake and then either answers every partial request with NaN in its first
/// number, or (`silent`) never answers anything, health checks included: a hung process.
final class NaNWorker: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = Pspc_V1_Frame
    typealias OutboundOut = Pspc_V1_Frame

    let shards: [WorkerService.HostedShard]
    let security: FrameSecurity
    var handshake: HandshakeServer
    let silent: Bool
    let answered: Counter

    init(shards: [WorkerService.HostedShard], security: FrameSecurity, silent: Bool, answered: Counter) throws {
        self.shards = shards
        self.security = security
        self.silent = silent
        self.answered = answered
        var info = Pspc_V1_WorkerInfo()
        info.shape = Pspc_V1_ImageShape(ImageShape(channels: 1, height: 28, width: 28))
        info.shards = shards.map { shard in
            var s = Pspc_V1_ShardInfo()
            s.id = UInt32(shard.id)
            s.firstIndex = UInt64(shard.first)
            s.count = UInt64(shard.source.imageCount)
            return s
        }
        info.datasetShards = UInt32(shards.count)
        info.datasetID = "test"
        info.xflip = true
        handshake = try HandshakeServer(
            token: ClusterTests.token, role: .worker, nodeID: "nan", info: info, acceptedRoles: [.coordinator])
    }

    struct Started {
        let channel: Channel
        let answered: Counter
        var port: Int { channel.localAddress!.port! }
    }

    static func start(shards: [WorkerService.HostedShard], silent: Bool = false) async throws -> Started {
        let answered = Counter()
        let channel = try await ServerBootstrap(group: ClusterTests.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let security = FrameSecurity()
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(FrameDecoder(security: security)),
                        MessageToByteHandler(FrameEncoder(security: security)),
                        try NaNWorker(shards: shards, security: security, silent: silent, answered: answered),
                    ])
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return Started(channel: channel, answered: answered)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard handshake.isEstablished else {
            switch handshake.receive(frame) {
            case .send(let reply): context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
            case .established(_, let reply):
                if let keys = handshake.sessionKeys {
                    security.sealInbound(key: keys.clientToServer)
                    security.sealOutbound(key: keys.serverToClient)
                }
                if let reply { context.writeAndFlush(wrapOutboundOut(reply), promise: nil) }
            case .fail: context.close(promise: nil)
            }
            return
        }
        guard !silent, case .partialRequest(let wire) = frame.body else { return }
        do {
            let request = try PartialRequest(wire: wire, shape: ImageShape(channels: 1, height: 28, width: 28))
            guard let shard = shards.first(where: { $0.id == Int(wire.shards.first ?? 0) }) else { return }
            var response = try shard.source.evaluateNow(request)
            switch response {
            case .softmax(var p) where !p.v.isEmpty:
                p.v[0] = .nan
                response = .softmax(p)
            case .softmax(var p):
                p.s[0] = .nan
                response = .softmax(p)
            case .sums(var s):
                s[0] = .nan
                response = .sums(s)
            case .moments(var m):
                m.sum[0] = .nan
                response = .moments(m)
            }
            answered.increment()
            context.writeAndFlush(
                wrapOutboundOut(Pspc_V1_Frame(requestID: frame.requestID, body: .partialResponse(.init(response, compression: .none)))),
                promise: nil)
        } catch {
            context.close(promise: nil)
        }
    }
}

/// A shard whose every evaluation waits, at a safe point, until it is cancelled; without a cancel within 60 s it
/// evaluates as the shard it wraps (and a test expecting cancellation sees a served request).
final class HeldUntilCancelled: BlockingPartialSumSource {
    let wrapped: any BlockingPartialSumSource
    var shape: ImageShape { wrapped.shape }
    var imageCount: Int { wrapped.imageCount }

    init(_ wrapped: any BlockingPartialSumSource) { self.wrapped = wrapped }

    func evaluate(_ request: PartialRequest) async throws -> PartialResponse {
        try evaluateNow(request, cancellation: nil)
    }

    func evaluateNow(_ request: PartialRequest, cancellation: CancellationFlag?) throws -> PartialResponse {
        if let cancellation {
            let deadline = Date().addingTimeInterval(60)
            while !cancellation.isCancelled && Date() < deadline { usleep(1000) }
            try cancellation.check()
        }
        return try wrapped.evaluateNow(request, cancellation: cancellation)
    }
}
