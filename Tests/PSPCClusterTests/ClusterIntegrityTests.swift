import Foundation
import NIOCore
import NIOPosix
import PSPCCore
import PSPCData
import PSPCWire
import XCTest

import PSPCCluster

/// Integrity and bounds of the cluster's connections: a proxy flipping one bit, strangers holding
/// connections open, too many connections, answers too large for one frame.
final class ClusterIntegrityTests: XCTestCase {
    typealias T = ClusterTests

    /// A worker behind a proxy that flips one bit of a partial response: the frame fails its MAC, the
    /// connection closes, the replica answers, and the output is the fault-free one bit for bit.
    func testABitFlippedByAProxyNeverChangesTheOutput() async throws {
        let channels = try await T.startWorkers(2, replication: 2)
        let addresses = T.addresses(channels)
        let proxy = try await TamperingProxy.start(to: addresses[0], flipAt: 20_000, group: T.group)
        let cluster = try await Cluster.connect(
            to: [proxy.address, addresses[1]], token: T.token, group: T.group, retryInterval: 3600)
        let remote = try DenoisingEngine(sources: cluster.sources(), batchSize: 4)
        let local = try DenoisingEngine(sources: T.shards.map { $0.source }, batchSize: 4)
        let z = (0..<8).flatMap { T.query($0, t: 1.09) }
        let expected = try await local.denoise(z, t: 1.09, method: .empirical).values
        let got = try await remote.denoise(z, t: 1.09, method: .empirical).values
        XCTAssertEqual(got, expected)
        XCTAssertTrue(proxy.flipped, "the proxy never flipped its bit: the test proves nothing")
        let down = await cluster.router.down
        XCTAssertTrue(down.contains(0), "the tampered connection was not dropped")
        await cluster.close()
        try await proxy.channel.close()
        for channel in channels { try await channel.close() }
    }

    /// Before authentication a stranger cannot make the worker buffer more than the handshake limit: a 64 MiB
    /// length prefix is refused at once, and the connection is closed.
    func testNoLargeFrameBeforeTheHandshake() async throws {
        let channels = try await T.startWorkers(1, replication: 1)
        let address = T.addresses(channels)[0]
        var header: [UInt8] = []
        withUnsafeBytes(of: UInt32(1 << 20).bigEndian) { header += $0 }
        let reply = try await Raw.exchange(header + Array(repeating: 0, count: 1000), with: address)
        let (frames, _) = try FrameCodec.decodeFrames(reply)
        guard case .error(let error) = frames.first?.body else { return XCTFail("no error frame: \(frames)") }
        XCTAssertEqual(error.code, .frameTooLarge)
        XCTAssertTrue(error.message.contains("limit of 65536"), error.message)
        for channel in channels { try await channel.close() }
    }

    /// A connection that never completes its handshake is closed after the handshake timeout; connections
    /// over the cap are told so and closed; a coordinator still gets in once one leaves.
    func testHandshakeTimeoutAndConnectionCap() async throws {
        var limits = WorkerService.Limits()
        limits.handshakeTimeout = .milliseconds(300)
        limits.maxConnections = 2
        let service = WorkerService(
            shards: T.shards, shape: ImageShape(channels: 1, height: 28, width: 28), token: T.token,
            nodeID: "capped", threads: 2, datasetShards: T.shards.count, datasetID: "test", xflip: true,
            limits: limits)
        let channel = try await service.bind(host: "127.0.0.1", port: 0, group: T.group)
        let address = T.addresses([channel])[0]
        let start = Date()
        let silent = try await Raw.exchange([], with: address, wait: 5)
        XCTAssertLessThan(Date().timeIntervalSince(start), 3, "the silent connection was not closed in time")
        let (timeoutFrames, _) = try FrameCodec.decodeFrames(silent)
        guard case .error(let timeout) = timeoutFrames.first?.body else { return XCTFail("no error: \(timeoutFrames)") }
        XCTAssertTrue(timeout.message.contains("a handshake within"), timeout.message)
        // Two strangers hold the two places; the third connection is refused in words.
        let holders = try await (0..<2).asyncMap { _ in
            try await ClientBootstrap(group: T.group).connect(host: address.host, port: address.port).get()
        }
        try await Task.sleep(nanoseconds: 50_000_000)
        let refused = try await Raw.exchange([], with: address, wait: 2)
        let (frames, _) = try FrameCodec.decodeFrames(refused)
        guard case .error(let error) = frames.first?.body else { return XCTFail("no error frame: \(frames)") }
        XCTAssertEqual(error.code, .unavailable)
        XCTAssertTrue(error.message.contains("too many connections (limit 2)"), error.message)
        // The strangers time out of their handshakes; then a coordinator connects.
        for holder in holders { try? await holder.closeFuture.get() }
        let cluster = try await Cluster.connect(to: [address], token: T.token, group: T.group)
        await cluster.close()
        try await channel.close()
    }

    /// A batch whose answer exceeds the worker's frame limit is refused in words (the worker does not crash)
    /// and asked again in halves; the output equals in-process.
    func testAnswersLargerThanAFrameAreSplit() async throws {
        let service = WorkerService(
            shards: T.shards, shape: ImageShape(channels: 1, height: 28, width: 28), token: T.token,
            nodeID: "small-frames", threads: 2, datasetShards: T.shards.count, datasetID: "test", xflip: true,
            maxFrameSize: 96 << 10)
        let channel = try await service.bind(host: "127.0.0.1", port: 0, group: T.group)
        let cluster = try await Cluster.connect(to: T.addresses([channel]), token: T.token, group: T.group)
        // 8 queries: a 50 KB request; round 1 of 3x3 crops answers 8 x 676 x 16 B = 86 KB plus framing.
        let remote = try DenoisingEngine(sources: cluster.sources(), batchSize: 8)
        let local = try DenoisingEngine(sources: T.shards.map { $0.source }, batchSize: 8)
        let z = (0..<8).flatMap { T.query($0, t: 0.3) }
        for method: DenoiseMethod in [.pspcSquare(.constant(3)), .empirical] {
            let expected = try await local.denoise(z, t: 0.3, method: method).values
            let got = try await remote.denoise(z, t: 0.3, method: method).values
            XCTAssertEqual(got, expected, method.name)
        }
        let down = await cluster.router.down
        XCTAssertTrue(down.isEmpty, "a worker answering 'too large' was taken for dead")
        await cluster.close()
        try await channel.close()
    }
}

extension Sequence {
    func asyncMap<U>(_ transform: (Element) async throws -> U) async rethrows -> [U] {
        var out: [U] = []
        for element in self { out.append(try await transform(element)) }
        return out
    }
}

/// Raw bytes to a worker, and whatever comes back before it closes (or `wait` seconds pass).
enum Raw {
    static func exchange(_ bytes: [UInt8], with address: HostPort, wait: Double = 5) async throws -> [UInt8] {
        let collector = Collector()
        let channel = try await ClientBootstrap(group: ClusterTests.group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
            }
            .connect(host: address.host, port: address.port).get()
        if !bytes.isEmpty {
            var buffer = channel.allocator.buffer(capacity: bytes.count)
            buffer.writeBytes(bytes)
            try? await channel.writeAndFlush(buffer).get()
        }
        let timeout = channel.eventLoop.scheduleTask(in: .milliseconds(Int64(wait * 1000))) {
            channel.close(promise: nil)
        }
        try? await channel.closeFuture.get()
        timeout.cancel()
        return collector.bytes
    }

    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        private let lock = NSLock()
        private var received: [UInt8] = []
        var bytes: [UInt8] { lock.withLock { received } }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            let chunk = buffer.readBytes(length: buffer.readableBytes) ?? []
            lock.withLock { received += chunk }
        }
    }
}

/// A TCP proxy in front of one worker that flips one bit of the byte at offset `flipAt` of the stream from the
/// worker to the coordinator (first connection only).
final class TamperingProxy: @unchecked Sendable {
    let channel: Channel
    let address: HostPort
    private let state: State

    final class State: @unchecked Sendable {
        let lock = NSLock()
        var connections = 0
        var didFlip = false
    }

    var flipped: Bool { state.lock.withLock { state.didFlip } }

    private init(channel: Channel, state: State) {
        self.channel = channel
        self.state = state
        address = HostPort(host: "127.0.0.1", port: channel.localAddress!.port!)
    }

    static func start(to upstream: HostPort, flipAt: Int, group: EventLoopGroup) async throws -> TamperingProxy {
        let state = State()
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { inbound in
                let first = state.lock.withLock { () -> Bool in
                    state.connections += 1
                    return state.connections == 1
                }
                return ClientBootstrap(group: inbound.eventLoop)
                    .connect(host: upstream.host, port: upstream.port)
                    .flatMap { outbound in
                        let toWorker = Glue(peer: outbound, flipAt: nil, state: state)
                        let toCoordinator = Glue(peer: inbound, flipAt: first ? flipAt : nil, state: state)
                        return outbound.pipeline.addHandler(toCoordinator).flatMap {
                            inbound.pipeline.addHandler(toWorker)
                        }.map {
                            outbound.closeFuture.whenComplete { _ in inbound.close(promise: nil) }
                            inbound.closeFuture.whenComplete { _ in outbound.close(promise: nil) }
                        }
                    }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return TamperingProxy(channel: server, state: state)
    }

    /// Forwards what one side reads to the other, flipping the bit when its offset passes.
    final class Glue: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let peer: Channel
        var flipAt: Int?
        var offset = 0
        let state: State

        init(peer: Channel, flipAt: Int?, state: State) {
            self.peer = peer
            self.flipAt = flipAt
            self.state = state
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            if let at = flipAt, at >= offset, at < offset + buffer.readableBytes {
                let index = buffer.readerIndex + (at - offset)
                buffer.setInteger(buffer.getInteger(at: index, as: UInt8.self)! ^ 0x10, at: index)
                flipAt = nil
                state.lock.withLock { state.didFlip = true }
            }
            offset += buffer.readableBytes
            peer.writeAndFlush(buffer, promise: nil)
        }
    }
}
