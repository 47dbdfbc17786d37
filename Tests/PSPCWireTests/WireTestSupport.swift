import Foundation
import PSPCCore
import PSPCWire
import XCTest

/// A seeded generator (SplitMix64), so every random test replays exactly.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Sample values, messages and bit-exact comparisons shared by the wire tests.
enum WireTestSupport {
    static let shape = ImageShape(channels: 2, height: 5, width: 4)

    /// Values that stress bit-exactness: signed zeros, subnormals, extremes and ordinary randoms.
    static func awkwardValues(_ count: Int, rng: inout SplitMix64) -> [Double] {
        let specials: [Double] = [
            0, -0.0, .leastNonzeroMagnitude, -.leastNonzeroMagnitude, .leastNormalMagnitude, .greatestFiniteMagnitude,
            -.greatestFiniteMagnitude, 1, -1, .pi, 1e-300, -123456.789,
        ]
        return (0..<count).map { i in
            if i < specials.count { return specials[i] }
            let bits = rng.next()
            let value = Double(bitPattern: bits)
            // Clearing the top exponent bit keeps every other bit pattern and makes it finite.
            return value.isFinite ? value : Double(bitPattern: bits & ~(1 << 62))
        }
    }

    static func queries(_ count: Int, shape: ImageShape = shape, rng: inout SplitMix64) -> QueryBatch {
        QueryBatch(values: awkwardValues(count * shape.dimension, rng: &rng), shape: shape)
    }

    /// Masks over `shape`: a few overlapping sets, one repeated (multiplicity 2).
    static func masks(for shape: ImageShape = shape) -> MaskSet {
        let w = shape.width
        return MaskSet(
            masks: [[0, 1, w, w + 1], [5, 6, 7], [0, 1, w, w + 1], [shape.pixelCount - 1], [2], []],
            pixelCount: shape.pixelCount)
    }

    /// Every kind of request, with and without queries.
    static func requests(rng: inout SplitMix64) -> [PartialRequest] {
        var out: [PartialRequest] = [.moments(rows: nil), .moments(rows: 0..<1), .moments(rows: 2..<5)]
        for count in [0, 1, 3] {
            let q = queries(count, rng: &rng)
            out.append(.empirical(queries: q, t: 0.5))
            for crops in [CropSet.square(patchSize: 3), .masks(masks())] {
                out.append(.cropNormalizers(queries: q, t: 80, crops: crops))
                var logZ = awkwardValues(count * crops.cropCount(for: shape), rng: &rng)
                if !logZ.isEmpty { logZ[logZ.count - 1] = -.infinity }
                out.append(.cropComposite(queries: q, t: 0.002, crops: crops, logZ: logZ))
            }
        }
        return out
    }

    static func responses(rng: inout SplitMix64) -> [PartialResponse] {
        var m = awkwardValues(7, rng: &rng)
        m[3] = -.infinity
        let s = awkwardValues(7, rng: &rng).map { abs($0) }
        return [
            .softmax(SoftmaxPartials(m: m, s: s)),
            .softmax(SoftmaxPartials(m: m, s: s, v: awkwardValues(7 * 5, rng: &rng), valueLength: 5)),
            .softmax(.empty(slots: 4, valueLength: 3)),
            .softmax(.empty(slots: 0, valueLength: 3)),
            .sums(awkwardValues(40, rng: &rng)),
            .sums([]),
            .moments(Moments(wireTestCount: 12, sum: awkwardValues(3, rng: &rng), outer: awkwardValues(9, rng: &rng))),
            .moments(
                Moments(count: 5, sum: awkwardValues(3, rng: &rng), outer: awkwardValues(6, rng: &rng), rows: 1..<3)),
            .moments(.zero(dimension: 0)),
        ]
    }

    static func bitsEqual(_ a: [Double], _ b: [Double]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
    }

    static func sameBatch(_ a: QueryBatch, _ b: QueryBatch) -> Bool {
        a.shape == b.shape && bitsEqual(a.values, b.values)
    }

    static func same(_ a: PartialRequest, _ b: PartialRequest) -> Bool {
        switch (a, b) {
        case (.empirical(let q1, let t1), .empirical(let q2, let t2)):
            return sameBatch(q1, q2) && t1.bitPattern == t2.bitPattern
        case (.cropNormalizers(let q1, let t1, let c1), .cropNormalizers(let q2, let t2, let c2)):
            return sameBatch(q1, q2) && t1.bitPattern == t2.bitPattern && c1 == c2
        case (.cropComposite(let q1, let t1, let c1, let l1), .cropComposite(let q2, let t2, let c2, let l2)):
            return sameBatch(q1, q2) && t1.bitPattern == t2.bitPattern && c1 == c2 && bitsEqual(l1, l2)
        case (.moments(let r1), .moments(let r2)):
            return r1 == r2
        default:
            return false
        }
    }

    static func same(_ a: PartialResponse, _ b: PartialResponse) -> Bool {
        switch (a, b) {
        case (.softmax(let p1), .softmax(let p2)):
            return p1.valueLength == p2.valueLength && bitsEqual(p1.m, p2.m) && bitsEqual(p1.s, p2.s)
                && bitsEqual(p1.v, p2.v)
        case (.sums(let s1), .sums(let s2)):
            return bitsEqual(s1, s2)
        case (.moments(let m1), .moments(let m2)):
            return m1.count == m2.count && m1.rows == m2.rows && bitsEqual(m1.sum, m2.sum)
                && bitsEqual(m1.outer, m2.outer)
        default:
            return false
        }
    }

    /// One frame of every body kind, small enough for the byte-at-a-time and fuzz tests.
    static func frames(rng: inout SplitMix64) -> [Pspc_V1_Frame] {
        var frames: [Pspc_V1_Frame] = []
        var id: UInt64 = 1
        func add(_ body: Pspc_V1_Frame.OneOf_Body) {
            frames.append(Pspc_V1_Frame(requestID: id, body: body))
            id += 1
        }
        var hello = Pspc_V1_Hello()
        hello.magic = Data(PSPCWire.magic)
        hello.protocolVersion = PSPCWire.protocolVersion
        hello.role = .coordinator
        hello.nonce = Data((0..<32).map { UInt8($0) })
        hello.nodeID = "coordinator-0"
        add(.hello(hello))
        var challenge = Pspc_V1_Challenge()
        challenge.nonce = Data(repeating: 7, count: 32)
        challenge.proof = Data(repeating: 9, count: 32)
        add(.challenge(challenge))
        var proof = Pspc_V1_Proof()
        proof.proof = Data(repeating: 3, count: 32)
        add(.proof(proof))
        var welcome = Pspc_V1_Welcome()
        welcome.nodeID = "worker-3"
        welcome.role = .worker
        welcome.info = workerInfo()
        add(.welcome(welcome))
        add(.error(WireError.authenticationFailed.reply))
        for request in requests(rng: &rng).prefix(8) {
            add(.partialRequest(Pspc_V1_PartialRequest(request, shards: [0, 2])))
        }
        for response in responses(rng: &rng) {
            add(.partialResponse(Pspc_V1_PartialResponse(response)))
        }
        // A payload that compresses: zeros past the 4 KiB threshold.
        add(.partialResponse(Pspc_V1_PartialResponse(.sums([Double](repeating: 0, count: 700)))))
        let q = queries(2, rng: &rng)
        add(.denoiseRequest(Pspc_V1_DenoiseRequest(queries: q, t: [0.1, 2])))
        add(.denoiseResponse(Pspc_V1_DenoiseResponse(denoised: q)))
        var heatmap = Pspc_V1_HeatmapRequest()
        heatmap.t = 1.5
        heatmap.samples = 8
        heatmap.seed = 42
        heatmap.images = Pspc_V1_Tensor(uint8: (0..<40).map { UInt8($0) }, shape: [1, 2, 5, 4])
        add(.heatmapRequest(heatmap))
        var maps = Pspc_V1_HeatmapResponse()
        maps.maps = Pspc_V1_Tensor(float32: (0..<20).map { Float($0) / 3 }, shape: [5, 4])
        maps.locality = Pspc_V1_Tensor(float64: [0.25], shape: [1])
        add(.heatmapResponse(maps))
        add(.healthRequest(Pspc_V1_HealthRequest()))
        var health = Pspc_V1_HealthResponse()
        health.info = workerInfo()
        health.inFlight = 3
        health.load = 0.75
        health.served = 12345
        add(.healthResponse(health))
        var cancel = Pspc_V1_Cancel()
        cancel.targetRequestID = 17
        add(.cancel(cancel))
        add(.shutdown(Pspc_V1_Shutdown()))
        frames.append(Pspc_V1_Frame())  // empty: request id 0, no body
        return frames
    }

    static func workerInfo() -> Pspc_V1_WorkerInfo {
        var info = Pspc_V1_WorkerInfo()
        info.shape = Pspc_V1_ImageShape(shape)
        info.imageCount = 1200
        info.threads = 8
        info.shards = (0..<3).map { i in
            var shard = Pspc_V1_ShardInfo()
            shard.id = UInt32(i)
            shard.firstIndex = UInt64(i * 400)
            shard.count = 400
            return shard
        }
        return info
    }
}

extension Moments {
    /// Every row of the outer sum.
    init(wireTestCount count: Int, sum: [Double], outer: [Double]) {
        self.init(count: count, sum: sum, outer: outer, rows: 0..<sum.count)
    }
}

/// Asserts that `body` throws a `WireError` for which `matches` holds, and returns it.
@discardableResult
func assertWireError<T>(
    _ body: @autoclosure () throws -> T, _ message: String = "", file: StaticString = #filePath, line: UInt = #line,
    matches: (WireError) -> Bool = { _ in true }
) -> WireError? {
    do {
        _ = try body()
        XCTFail("expected a WireError, got a value. \(message)", file: file, line: line)
    } catch let error as WireError {
        XCTAssertTrue(matches(error), "unexpected error: \(error). \(message)", file: file, line: line)
        return error
    } catch {
        XCTFail("expected a WireError, got \(type(of: error)): \(error). \(message)", file: file, line: line)
    }
    return nil
}
