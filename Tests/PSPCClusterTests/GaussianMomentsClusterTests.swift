import Foundation
import NIOCore
import NIOPosix
import PSPCCluster
import PSPCCore
import PSPCWire
import XCTest

/// The Gaussian baseline through workers that cannot send the D x D outer sum in one frame: the coordinator
/// asks for it in blocks of rows, halved until they fit, and the denoiser it builds is the in-process one,
/// bit for bit.
final class GaussianMomentsClusterTests: XCTestCase {
    static let token = Array("a test token that is long enough".utf8)
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    static let times = [0.002, 1, 80]

    /// `count` images of three smooth colour blobs on a coloured background, drawn from seeded normals.
    static func blobImages(count: Int, shape: ImageShape, seed: UInt64) -> [UInt8] {
        let noise = NormalNoise(seed: seed)
        let (channels, h, w) = (shape.channels, shape.height, shape.width)
        let perBlob = 3 + channels
        var pixels = [UInt8](repeating: 0, count: count * shape.dimension)
        for k in 0..<count {
            let draw = noise.normals(stream: UInt64(k), count: channels + 3 * perBlob)
            for c in 0..<channels {
                for y in 0..<h {
                    for x in 0..<w {
                        var value = 0.3 * draw[c]
                        for blob in 0..<3 {
                            let p = Array(draw[(channels + blob * perBlob)...])
                            let cy = (0.5 + 0.25 * p[0]) * Double(h), cx = (0.5 + 0.25 * p[1]) * Double(w)
                            let radius = (0.12 + 0.04 * abs(p[2])) * Double(w)
                            let dy = Double(y) - cy, dx = Double(x) - cx
                            value += 0.6 * p[3 + c] * exp(-(dy * dy + dx * dx) / (2 * radius * radius))
                        }
                        let level = (127.5 + 100 * value).rounded()
                        pixels[k * shape.dimension + (c * h + y) * w + x] = UInt8(max(0, min(255, level)))
                    }
                }
            }
        }
        return pixels
    }

    /// `count` blob images of `shape` (x-flipped) cut into shards at `cuts`.
    static func shards(shape: ImageShape, count: Int, cuts: [Int]) throws -> [WorkerService.HostedShard] {
        let pixels = blobImages(count: count, shape: shape, seed: 7)
        return try zip(cuts, cuts.dropFirst()).enumerated().map { k, range in
            let part = Array(pixels[(range.0 * shape.dimension)..<(range.1 * shape.dimension)])
            let set = try ImageSet(pixels: part, count: range.1 - range.0, shape: shape, xflip: true)
            return WorkerService.HostedShard(id: k, first: range.0, source: InProcessShard(images: set, threads: 2))
        }
    }

    /// One worker per shard, each refusing answers over `maxFrameSize`.
    static func startWorkers(
        _ shards: [WorkerService.HostedShard], shape: ImageShape, maxFrameSize: Int = FrameCodec.defaultMaxFrameSize
    ) async throws -> (services: [WorkerService], channels: [Channel]) {
        var services: [WorkerService] = []
        var channels: [Channel] = []
        for shard in shards {
            let service = WorkerService(
                shards: [shard], shape: shape, token: token, nodeID: "moments-\(shard.id)", threads: 2,
                datasetShards: shards.count, datasetID: "blobs", xflip: true, maxFrameSize: maxFrameSize)
            services.append(service)
            channels.append(try await service.bind(host: "127.0.0.1", port: 0, group: group))
        }
        return (services, channels)
    }

    static func connect(_ channels: [Channel]) async throws -> Cluster {
        let addresses = channels.map { HostPort(host: "127.0.0.1", port: $0.localAddress!.port!) }
        return try await Cluster.connect(to: addresses, token: token, group: group)
    }

    /// Two held-out blob images, each with noise of level t.
    static func queries(shape: ImageShape, t: Double) -> [Double] {
        let clean = blobImages(count: 2, shape: shape, seed: 99)
        let eps = NormalNoise(seed: 5).normals(stream: UInt64(t.bitPattern), count: clean.count)
        return clean.indices.map { Double(clean[$0]) / 127.5 - 1 + t * eps[$0] }
    }

    /// The Gaussian denoiser's outputs at every test time, in process and through `cluster`, must agree in
    /// every bit.
    static func assertGaussianMatches(
        local: [any PartialSumSource], cluster: Cluster, shape: ImageShape, file: StaticString = #filePath,
        line: UInt = #line
    ) async throws {
        let inProcess = try DenoisingEngine(sources: local)
        let remote = try DenoisingEngine(sources: cluster.sources(), concurrentSources: true)
        for t in times {
            let z = queries(shape: shape, t: t)
            let expected = try await inProcess.denoise(z, t: t, method: .gaussian).values
            let got = try await remote.denoise(z, t: t, method: .gaussian).values
            XCTAssertEqual(got.count, expected.count, file: file, line: line)
            let differing = zip(got, expected).filter { $0.bitPattern != $1.bitPattern }.count
            XCTAssertEqual(differing, 0, "\(shape) gaussian at t=\(t): outputs differ in bits", file: file, line: line)
        }
    }

    /// 3x32x32: D x D float64 is 75 MB, over the 64 MiB frame. Asked whole, a worker refuses it; the engine asks
    /// for blocks of `DenoisingEngine.momentRowsPerRequest` rows (341), which fit, one block after another.
    func testGaussianOn3x32x32ThroughWorkersMatchesInProcessBitForBit() async throws {
        let shape = ImageShape(channels: 3, height: 32, width: 32)
        let shards = try Self.shards(shape: shape, count: 160, cuts: [0, 70, 160])
        let (services, channels) = try await Self.startWorkers(shards, shape: shape)
        let cluster = try await Self.connect(channels)
        do {
            _ = try await cluster.sources()[0].evaluate(.moments(rows: nil))
            XCTFail("a worker sent the whole 3072 x 3072 outer sum")
        } catch let error as ClusterError {
            XCTAssertTrue(error.isReplyTooLarge, error.description)
        }
        XCTAssertEqual(services[0].statistics.served, 1)
        try await Self.assertGaussianMatches(local: shards.map { $0.source }, cluster: cluster, shape: shape)
        // Per worker: the whole matrix refused (worker 0), then the engine's blocks, one request each (every
        // block fits: none is refused and halved).
        let step = DenoisingEngine.momentRowsPerRequest(dimension: shape.dimension)
        XCTAssertEqual(step, 341)
        let blocks = (shape.dimension + step - 1) / step
        XCTAssertEqual(services.map { $0.statistics.served }, [1 + blocks, blocks])
        await cluster.close()
        for channel in channels { try await channel.close() }
    }

    /// 1x28x28 under a 400 kB frame: 784 rows are halved four times, to blocks of 49 rows (313 kB).
    func testMomentsAreSplitRecursivelyUnderASmallFrameLimit() async throws {
        let shape = ImageShape(channels: 1, height: 28, width: 28)
        let shards = try Self.shards(shape: shape, count: 150, cuts: [0, 61, 150])
        let (services, channels) = try await Self.startWorkers(shards, shape: shape, maxFrameSize: 400_000)
        let cluster = try await Self.connect(channels)
        try await Self.assertGaussianMatches(local: shards.map { $0.source }, cluster: cluster, shape: shape)
        // 1 + 2 + 4 + 8 refused blocks (784, 392, 196, 98 rows), 16 answered (49 rows).
        XCTAssertEqual(services.map { $0.statistics.served }, [31, 31])
        await cluster.close()
        for channel in channels { try await channel.close() }
    }

    /// Splitting the rows down to single rows and joining the blocks back gives the whole matrix's bits, which
    /// do not depend on the shard's threads or image blocks either; blocks that do not belong together are
    /// refused.
    func testMomentsRowBlocksHalveAndJoinBackExactly() throws {
        // D = 75: 4 vectors of 16 columns and a tail of 11, so every path of the kernel is taken.
        let shape = ImageShape(channels: 3, height: 5, width: 5)
        let pixels = Self.blobImages(count: 37, shape: shape, seed: 3)
        let images = try ImageSet(pixels: pixels, count: 37, shape: shape, xflip: true)
        let shard = InProcessShard(images: images, threads: 2, blockImages: 8)
        func moments(_ request: PartialRequest, on source: InProcessShard = shard) throws -> Moments {
            guard case .moments(let m) = try source.evaluateNow(request) else {
                throw PSPCError.shapeMismatch("a moments request was answered with another kind")
            }
            return m
        }
        /// Evaluated as the cluster does: halved down to single rows, the halves' answers joined in order.
        func splitToRows(_ request: PartialRequest) throws -> PartialResponse {
            guard let (first, second) = request.halves() else { return try shard.evaluateNow(request) }
            return try splitToRows(first).concatenated(splitToRows(second))
        }
        let whole = try moments(.moments(rows: nil))
        XCTAssertEqual(whole.rows, 0..<75)
        XCTAssertEqual(whole.outer.count, 75 * 75)
        guard case .moments(let joined) = try splitToRows(.moments(rows: 0..<75)) else {
            return XCTFail("the joined blocks are not moments")
        }
        XCTAssertEqual(joined.rows, whole.rows)
        XCTAssertEqual(joined.count, whole.count)
        XCTAssertTrue(zip(joined.outer, whole.outer).allSatisfy { $0.bitPattern == $1.bitPattern })
        XCTAssertTrue(zip(joined.sum, whole.sum).allSatisfy { $0.bitPattern == $1.bitPattern })
        let otherBlocking = try moments(
            .moments(rows: nil), on: InProcessShard(images: images, threads: 1, blockImages: 64))
        XCTAssertTrue(zip(otherBlocking.outer, whole.outer).allSatisfy { $0.bitPattern == $1.bitPattern })

        XCTAssertNil(PartialRequest.moments(rows: nil).halves())
        XCTAssertNil(PartialRequest.moments(rows: 5..<6).halves())
        guard case .moments(let low)? = PartialRequest.moments(rows: 3..<8).halves()?.0,
            case .moments(let high)? = PartialRequest.moments(rows: 3..<8).halves()?.1
        else { return XCTFail("moments rows 3..<8 were not halved") }
        XCTAssertEqual(low, 3..<5)
        XCTAssertEqual(high, 5..<8)

        let a = PartialResponse.moments(try moments(.moments(rows: 0..<2)))
        let c = PartialResponse.moments(try moments(.moments(rows: 3..<5)))
        XCTAssertThrowsError(try a.concatenated(c), "rows 0..<2 and 3..<5 leave a gap")
        let fewer = try ImageSet(pixels: Array(pixels.prefix(36 * 75)), count: 36, shape: shape, xflip: true)
        let otherShard = InProcessShard(images: fewer)
        let b = PartialResponse.moments(try moments(.moments(rows: 2..<3), on: otherShard))
        XCTAssertThrowsError(try a.concatenated(b), "blocks of different shards were joined")
        XCTAssertThrowsError(try shard.evaluateNow(.moments(rows: 70..<76)))
    }
}
