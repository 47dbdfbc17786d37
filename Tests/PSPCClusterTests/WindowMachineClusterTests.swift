import Foundation
import PSPCCluster
import PSPCCore
import PSPCData
import PSPCWire
import XCTest

/// The LS and ELS machines through workers served over loopback: the `window_posterior` op gives the in-process
/// engine's bits through 1 and 3 workers (replication 2), shard by shard and grouped, and a request split in
/// halves (as the coordinator splits one whose answer cannot fit a frame) answers like the whole.
final class WindowMachineClusterTests: XCTestCase {
    static let shape = ImageShape(channels: 1, height: 28, width: 28)

    /// 40 Fashion-MNIST training images as 5 uneven shards (one of a single image), x-flipped: small, since ELS
    /// costs O(H^2 W^2) per query and image.
    static let shards = ClusterTests.hostedShards(cuts: [0, 9, 10, 25, 31, 40])

    static func query(_ i: Int, t: Double) -> [Double] { ClusterTests.query(i, t: t) }

    func testClusterMatchesInProcessBitForBit() async throws {
        let grid = EDM.grid(steps: 18)
        // LS at every grid t; ELS (the costly one) at t = 80, 2.5 (about), 0.1 and 0.002.
        let cases: [(DenoiseMethod, [Double])] = [
            (.ls(.constant(5)), grid), (.els(.constant(3)), [grid[0], grid[6], grid[12], grid[17]]),
            (.els(.constant(7)), [grid[3], grid[17]]),
        ]
        let local = try DenoisingEngine(sources: Self.shards.map { $0.source }, batchSize: 2)
        for (n, r, grouped) in [(1, 1, false), (3, 2, false), (3, 2, true)] {
            let channels = try await ClusterTests.startWorkers(n, replication: r, shards: Self.shards)
            let cluster = try await Cluster.connect(
                to: ClusterTests.addresses(channels), token: ClusterTests.token, group: ClusterTests.group)
            let remote = try DenoisingEngine(
                sources: cluster.sources(), batchSize: 2, concurrentSources: true, batchesInFlight: 2,
                group: grouped ? cluster : nil)
            for (method, times) in cases {
                for (k, t) in times.enumerated() {
                    let z = Self.query(k % 4, t: t) + Self.query((k + 1) % 4, t: t) + Self.query((k + 2) % 4, t: t)
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

    func testSplitRequestAnswersLikeTheWhole() throws {
        let source = Self.shards[0].source
        let z = QueryBatch(values: Self.query(0, t: 0.5) + Self.query(1, t: 0.5) + Self.query(2, t: 0.5), shape: Self.shape)
        for equivariant in [false, true] {
            let request = PartialRequest.windowPosterior(queries: z, t: 0.5, patchSize: 3, equivariant: equivariant)
            guard let (a, b) = request.halves() else { return XCTFail("three queries must split") }
            let whole = try source.evaluateNow(request)
            let joined = try source.evaluateNow(a).concatenated(try source.evaluateNow(b))
            guard case .softmax(let w) = whole, case .softmax(let j) = joined else { return XCTFail("not softmax") }
            XCTAssertEqual(w, j)
            XCTAssertEqual(w.slots, 3 * 784)
        }
    }

    func testWireRoundTripAndRefusals() throws {
        let z = QueryBatch(values: Self.query(0, t: 1), shape: Self.shape)
        let request = PartialRequest.windowPosterior(queries: z, t: 1, patchSize: 5, equivariant: true)
        let wire = Pspc_V1_PartialRequest(request)
        guard case .windowPosterior(let op)? = wire.op else { return XCTFail("not a window_posterior op") }
        XCTAssertEqual(op.patchSize, 5)
        XCTAssertTrue(op.equivariant)
        guard case .windowPosterior(let back, let t, let patch, let equivariant) = try PartialRequest(
            wire: wire, shape: Self.shape)
        else { return XCTFail("decoded to another op") }
        XCTAssertEqual(back.values, z.values)
        XCTAssertEqual(t, 1)
        XCTAssertEqual(patch, 5)
        XCTAssertTrue(equivariant)
        for bad in [UInt32(0), 4] {
            var message = wire
            var changed = op
            changed.patchSize = bad
            message.op = .windowPosterior(changed)
            XCTAssertThrowsError(try PartialRequest(wire: message, shape: Self.shape)) { error in
                XCTAssertTrue("\(error)".contains("window_posterior.patch_size"), "\(error)")
            }
        }
    }
}
