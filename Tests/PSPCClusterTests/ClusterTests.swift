import Foundation
import NIOCore
import NIOPosix
import PSPCCluster
import PSPCCore
import PSPCData
import PSPCWire
import XCTest

/// Workers served over loopback in this process (the same NIO code the `pspc worker` processes run): the
/// cluster answers like the in-process engine, bit for bit, refuses a wrong token, and keeps serving through a
/// flood of bad frames.
final class ClusterTests: XCTestCase {
    static let token = Array("a test token that is long enough".utf8)
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    /// 1000 Fashion-MNIST training images as 7 uneven shards, x-flipped.
    static let shards = hostedShards(cuts: [0, 90, 250, 251, 500, 620, 999, 1000])

    /// The first `cuts.last` Fashion-MNIST training images, x-flipped, as shards k = images cuts[k] ..< cuts[k + 1].
    static func hostedShards(cuts: [Int]) -> [WorkerService.HostedShard] {
        let train = try! IDXReader.read(
            path: DatasetSource.fashionMNISTDirectory + "/train-images-idx3-ubyte.gz", limit: cuts.last!)
        return (0..<(cuts.count - 1)).map { k in
            let part = train.slice(cuts[k]..<cuts[k + 1])
            let set = try! ImageSet(pixels: part.pixels, count: part.count, shape: part.shape, xflip: true)
            return WorkerService.HostedShard(id: k, first: cuts[k], source: InProcessShard(images: set, threads: 2))
        }
    }

    static let test = try! IDXReader.read(
        path: DatasetSource.fashionMNISTDirectory + "/t10k-images-idx3-ubyte.gz", limit: 8)

    static func query(_ i: Int, t: Double) -> [Double] {
        let eps = NormalNoise(seed: 3).normals(stream: UInt64(i), count: 784)
        return (0..<784).map { Double(test.pixels[i * 784 + $0]) / 127.5 - 1 + t * eps[$0] }
    }

    /// Starts workers holding shards by placement (index i of n, replication r); returns their channels.
    static func startWorkers(
        _ n: Int, replication: Int, token: [UInt8] = token, shards: [WorkerService.HostedShard] = ClusterTests.shards
    ) async throws -> [Channel] {
        var channels: [Channel] = []
        for i in 0..<n {
            let ids = Placement.shards(forWorker: i, of: n, shardCount: shards.count, replication: replication)
            let service = WorkerService(
                shards: ids.map { shards[$0] }, shape: ImageShape(channels: 1, height: 28, width: 28),
                token: token, nodeID: "test-\(i)", threads: 2, datasetShards: shards.count,
                datasetID: "test", xflip: true)
            channels.append(try await service.bind(host: "127.0.0.1", port: 0, group: group))
        }
        return channels
    }

    static func addresses(_ channels: [Channel]) -> [HostPort] {
        channels.map { HostPort(host: "127.0.0.1", port: $0.localAddress!.port!) }
    }

    func testClusterMatchesInProcessBitForBitAtEveryGridTime() async throws {
        let flexMaps: [Double] = (0..<(784 * 784)).map { i in
            let out = i / 784, q = i % 784
            let dy = Double(q / 28 - out / 28), dx = Double(q % 28 - out % 28)
            return exp(-(dy * dy + dx * dx) / 3)
        }
        let flex = try FlexMasks(
            maps: flexMaps, levels: 1, height: 28, width: 28, levelTimes: [1], lambda: .constant(0.4))
        let methods: [DenoiseMethod] = [
            .empirical, .pspcSquare(.constant(5)), .pspcFlex(flex), .gaussian,
            .cfdm(smoothing: 0.1, copies: 2, seed: 5),
        ]
        let local = try DenoisingEngine(sources: Self.shards.map { $0.source }, batchSize: 3)
        // Shard by shard (a frame per shard), and grouped (a frame per worker carrying its shards, answered per
        // shard): the same bits as in process either way.
        for (n, r, grouped) in [(1, 1, false), (3, 2, false), (1, 1, true), (3, 2, true)] {
            let channels = try await Self.startWorkers(n, replication: r)
            let cluster = try await Cluster.connect(to: Self.addresses(channels), token: Self.token, group: Self.group)
            let remote = try DenoisingEngine(
                sources: cluster.sources(), batchSize: 3, concurrentSources: true, batchesInFlight: 2,
                group: grouped ? cluster : nil)
            for method in methods {
                for (ti, t) in EDM.grid(steps: 18).enumerated() {
                    let z =
                        Self.query(ti % 8, t: t) + Self.query((ti + 3) % 8, t: t) + Self.query((ti + 5) % 8, t: t)
                        + Self.query(ti % 4, t: t)
                    let expected = try await local.denoise(z, t: t, method: method).values
                    let got = try await remote.denoise(z, t: t, method: method).values
                    XCTAssertEqual(
                        got, expected, "\(method.name) at t=\(t) through \(n) workers (r=\(r), grouped: \(grouped)) differs")
                }
            }
            await cluster.close()
            for channel in channels { try await channel.close() }
        }
    }

    /// Grouped requests send the queries once per worker instead of once per shard.
    func testGroupedRequestsSendTheQueriesOncePerWorker() async throws {
        let z = (0..<64).flatMap { Self.query($0 % 8, t: 1.09) }
        var sent: [Bool: Int] = [:]
        for grouped in [false, true] {
            let channels = try await Self.startWorkers(2, replication: 1)
            let cluster = try await Cluster.connect(to: Self.addresses(channels), token: Self.token, group: Self.group)
            let before = cluster.traffic.totals
            let remote = try DenoisingEngine(
                sources: cluster.sources(), batchSize: 32, concurrentSources: true, group: grouped ? cluster : nil)
            _ = try await remote.denoise(z, t: 1.09, method: .empirical)
            sent[grouped] = cluster.traffic.totals.sent - before.sent
            await cluster.close()
            for channel in channels { try await channel.close() }
        }
        // 64 queries of 784 float64 to 7 shards on 2 workers: 7 copies shard by shard, 2 grouped.
        let queryBytes = 64 * 784 * 8
        print("wire bytes sent for 64 queries: \(sent[false]!) shard by shard, \(sent[true]!) grouped")
        XCTAssertGreaterThan(sent[false]!, 7 * queryBytes)
        XCTAssertLessThan(sent[true]!, 3 * queryBytes)
    }

    func testUnheldShardsAndMismatchedSettingsAreRefused() async throws {
        // Nobody holds shard 6 (the highest): the dataset's shard count says it exists.
        let service = WorkerService(
            shards: Array(Self.shards[0..<6]), shape: ImageShape(channels: 1, height: 28, width: 28), token: Self.token,
            nodeID: "partial", threads: 2, datasetShards: 7, datasetID: "test", xflip: true)
        let channel = try await service.bind(host: "127.0.0.1", port: 0, group: Self.group)
        do {
            _ = try await Cluster.connect(to: Self.addresses([channel]), token: Self.token, group: Self.group)
            XCTFail("a cluster missing shard 6 was accepted")
        } catch let error as ClusterError {
            XCTAssertEqual(error, .shardsLost([6], reason: "no reachable worker holds them"))
        }
        // The workers x-flip; a coordinator asking for no x-flip is refused rather than silently served.
        let full = try await Self.startWorkers(1, replication: 1)
        do {
            _ = try await Cluster.connect(to: Self.addresses(full), token: Self.token, group: Self.group, xflip: false)
            XCTFail("an x-flip mismatch was accepted")
        } catch let error as ClusterError {
            XCTAssertTrue(error.description.contains("x-flip on, this command asked for off"), error.description)
        }
        try await channel.close()
        for channel in full { try await channel.close() }
    }

    func testWrongTokenIsRefused() async throws {
        let channels = try await Self.startWorkers(1, replication: 1)
        do {
            _ = try await Cluster.connect(
                to: Self.addresses(channels), token: Array("not the right token at all!!".utf8), group: Self.group)
            XCTFail("a coordinator with the wrong token connected")
        } catch let error as ClusterError {
            XCTAssertTrue(error.description.contains("no worker could be reached"), error.description)
        }
        for channel in channels { try await channel.close() }
    }

    /// >= 100k random and mutated frames from many connections while a well-behaved client keeps asking.
    func testWorkerSurvivesAFloodOfBadFrames() async throws {
        let channels = try await Self.startWorkers(1, replication: 1)
        let address = Self.addresses(channels)[0]
        let cluster = try await Cluster.connect(to: [address], token: Self.token, group: Self.group)
        let engine = try DenoisingEngine(sources: cluster.sources(), concurrentSources: true)
        let reference = try await engine.denoise(Self.query(0, t: 1), t: 1, method: .empirical).values

        var rng = SystemRandomNumberGenerator()
        var valid: [[UInt8]] = []
        var client = try HandshakeClient(token: Self.token)
        valid.append(try FrameCodec.encodeFrame(client.start()))
        var request = Pspc_V1_PartialRequest(
            .empirical(
                queries: QueryBatch(values: Self.query(1, t: 1), shape: ImageShape(channels: 1, height: 28, width: 28)),
                t: 1))
        request.shards = [0]
        valid.append(try FrameCodec.encodeFrame(Pspc_V1_Frame(requestID: 9, body: .partialRequest(request))))
        valid.append(try FrameCodec.encodeFrame(Pspc_V1_Frame(requestID: 1, body: .healthRequest(.init()))))
        var wrongMagic = Pspc_V1_Hello()
        wrongMagic.magic = Data("NOPE".utf8)
        wrongMagic.protocolVersion = 1
        valid.append(try FrameCodec.encodeFrame(Pspc_V1_Frame(requestID: 0, body: .hello(wrongMagic))))

        let connections = 200, framesPerConnection = 520
        var sent = 0
        for c in 0..<connections {
            var payload: [UInt8] = []
            for _ in 0..<framesPerConnection {
                var frame = valid[Int.random(in: 0..<valid.count, using: &rng)]
                switch Int.random(in: 0..<5, using: &rng) {
                case 0: frame = Array(frame.prefix(Int.random(in: 0...frame.count, using: &rng)))  // truncated
                case 1:
                    for _ in 0..<3 {
                        frame[Int.random(in: 0..<frame.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
                    }
                case 2:
                    frame = (0..<Int.random(in: 0..<64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng)
                    }
                case 3: frame.replaceSubrange(0..<4, with: [0x7f, 0xff, 0xff, 0xff])  // oversized length
                default: break  // a valid frame, possibly out of order (an op before the handshake)
                }
                payload += frame
                sent += 1
            }
            try await Self.blast(payload, to: address)
            if c % 50 == 49 {
                let answer = try await engine.denoise(Self.query(0, t: 1), t: 1, method: .empirical).values
                XCTAssertEqual(answer, reference, "the worker stopped serving a well-behaved client")
            }
        }
        XCTAssertGreaterThanOrEqual(sent, 100_000)
        let answer = try await engine.denoise(Self.query(0, t: 1), t: 1, method: .empirical).values
        XCTAssertEqual(answer, reference)
        await cluster.close()
        for channel in channels { try await channel.close() }
    }

    /// Writes raw bytes to a fresh connection and waits until the worker closes it (or 2 s pass).
    static func blast(_ bytes: [UInt8], to address: HostPort) async throws {
        let channel = try await ClientBootstrap(group: group).connect(host: address.host, port: address.port).get()
        var buffer = channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        try? await channel.writeAndFlush(buffer).get()
        let timeout = channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
        try? await channel.closeFuture.get()
        timeout.cancel()
    }
}
