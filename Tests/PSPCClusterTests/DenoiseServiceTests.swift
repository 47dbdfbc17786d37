import Foundation
import NIOCore
import NIOPosix
import PSPCCluster
import PSPCCore
import PSPCWire
import XCTest

/// `DenoiseService` (what `pspc serve` runs) over a real socket with a recording backend: runs of equal t with
/// their query indices, the answer's layout and dtype, errors that leave the connection usable, and a Cancel
/// of a request waiting its turn. Every wait is on a state (a latch, an answer), never on the clock.
final class DenoiseServiceTests: XCTestCase {
    static let shape = ImageShape(channels: 1, height: 2, width: 3)

    /// Records each call and answers 10 * first query index + the query values; `release` holds calls back.
    final class RecordingBackend: DenoiseBackend, @unchecked Sendable {
        struct Call: Equatable {
            var t: Double
            var count: Int
            var first: Int
        }

        private let lock = NSLock()
        private var recorded: [Call] = []
        let entered = Latch()
        let release: Latch

        init(held: Bool = false) {
            release = Latch()
            if !held { release.open() }
        }

        var calls: [Call] { lock.withLock { recorded } }

        func resolve(method: String, options: Pspc_V1_DenoiseOptions) async throws -> DenoiseMethod {
            guard method == "empirical" else { throw PSPCError.invalidArgument("unknown method '\(method)'") }
            return .empirical
        }

        func denoise(_ queries: QueryBatch, t: Double, method: DenoiseMethod, firstQueryIndex: Int) async throws
            -> [Double]
        {
            lock.withLock { recorded.append(Call(t: t, count: queries.count, first: firstQueryIndex)) }
            entered.open()
            await release.wait()
            return queries.values.map { $0 + 10 * Double(firstQueryIndex) }
        }
    }

    /// Opened once; `wait()` returns at once after that.
    final class Latch: @unchecked Sendable {
        private let lock = NSLock()
        private var isOpen = false
        private var waiters: [CheckedContinuation<Void, Never>] = []

        func open() {
            let resumed: [CheckedContinuation<Void, Never>] = lock.withLock {
                isOpen = true
                defer { waiters.removeAll() }
                return waiters
            }
            for waiter in resumed { waiter.resume() }
        }

        func wait() async {
            await withCheckedContinuation { continuation in
                let now: Bool = lock.withLock {
                    if isOpen { return true }
                    waiters.append(continuation)
                    return false
                }
                if now { continuation.resume() }
            }
        }
    }

    static func start(_ backend: RecordingBackend, concurrent: Int = 1) async throws -> (DenoiseService, Channel, RawCoordinator) {
        var info = Pspc_V1_WorkerInfo()
        info.shape = Pspc_V1_ImageShape(shape)
        info.imageCount = 12
        var configuration = DenoiseService.Configuration()
        configuration.concurrentRequests = concurrent
        let service = try DenoiseService(
            backend: backend, info: info, token: ClusterTests.token, nodeID: "serve-test", configuration: configuration)
        let channel = try await service.bind(host: "127.0.0.1", port: 0, group: ClusterTests.group)
        let client = try await RawCoordinator.connect(
            to: ClusterTests.addresses([channel])[0], token: ClusterTests.token, group: ClusterTests.group)
        return (service, channel, client)
    }

    static func request(
        _ id: UInt64, queries: Int, t: [Double], method: String = "empirical", first: UInt64 = 0,
        shape: ImageShape = shape, value: Double = 0.5
    ) -> Pspc_V1_Frame {
        let values = (0..<(queries * shape.dimension)).map { value + Double($0) / 100 }
        var request = Pspc_V1_DenoiseRequest(queries: QueryBatch(values: values, shape: shape), t: t)
        request.method = method
        request.firstQueryIndex = first
        return Pspc_V1_Frame(requestID: id, body: .denoiseRequest(request))
    }

    func testRunsOfEqualT() {
        XCTAssertEqual(DenoiseService.runs(of: []), [])
        XCTAssertEqual(DenoiseService.runs(of: [3]), [0..<1])
        XCTAssertEqual(DenoiseService.runs(of: [1, 1, 2, 2, 1]), [0..<2, 2..<4, 4..<5])
        XCTAssertEqual(DenoiseService.runs(of: [1, 2, 1]), [0..<1, 1..<2, 2..<3])
    }

    func testMixedTRunsKeepQueryIndicesAndTheAnswerIsFloat64InOrder() async throws {
        let backend = RecordingBackend()
        let (service, channel, client) = try await Self.start(backend)
        try await client.send(Self.request(1, queries: 4, t: [1, 1, 2, 1], first: 10))
        let answer = try await client.frame(for: 1)
        guard case .denoiseResponse(let response)? = answer.body else { return XCTFail("answered \(answer)") }
        XCTAssertEqual(response.denoised.dtype, .float64)
        XCTAssertEqual(response.denoised.shape, [4, 1, 2, 3])
        XCTAssertEqual(
            backend.calls, [.init(t: 1, count: 2, first: 10), .init(t: 2, count: 1, first: 12), .init(t: 1, count: 1, first: 13)])
        let values = try response.denoised.doubleValues(field: "denoised")
        let d = Self.shape.dimension
        for q in 0..<4 {
            let runFirst = [10, 10, 12, 13][q]
            for k in 0..<d {
                XCTAssertEqual(values[q * d + k], 0.5 + Double(q * d + k) / 100 + 10 * Double(runFirst))
            }
        }
        XCTAssertEqual(service.served, 1)
        client.close()
        try await channel.close()
    }

    func testBadRequestsAreAnsweredInWordsAndTheConnectionGoesOn() async throws {
        let backend = RecordingBackend()
        let (_, channel, client) = try await Self.start(backend)
        var nan = Self.request(5, queries: 1, t: [1])
        if case .denoiseRequest(var r)? = nan.body {
            var values = try r.z.doubleValues(field: "z")
            values[3] = .nan
            r.z = Pspc_V1_Tensor(float64: values, shape: [1, 1, 2, 3])
            nan.body = .denoiseRequest(r)
        }
        let cases: [(Pspc_V1_Frame, Pspc_V1_ErrorCode, String)] = [
            (Self.request(1, queries: 1, t: [1], method: ""), .invalidArgument, "method '' is the trained network"),
            (Self.request(2, queries: 1, t: [1], method: "network"), .invalidArgument, "method 'network'"),
            (Self.request(3, queries: 1, t: [1], method: "bogus"), .invalidArgument, "unknown method 'bogus'"),
            (Self.request(4, queries: 2, t: [1, 0]), .invalidArgument, "denoise_request.t[1] must be positive"),
            (nan, .invalidArgument, "denoise_request.z[3] is nan"),
            (
                Self.request(6, queries: 1, t: [1], shape: ImageShape(channels: 1, height: 3, width: 2)),
                .invalidArgument, "this server's training set is 1x2x3"
            ),
            (
                Pspc_V1_Frame(requestID: 7, body: .heatmapRequest(Pspc_V1_HeatmapRequest())), .unknownOperation,
                "not heatmap_request"
            ),
        ]
        for (frame, code, needle) in cases {
            try await client.send(frame)
            let answer = try await client.frame(for: frame.requestID)
            guard case .error(let error)? = answer.body else {
                XCTFail("request \(frame.requestID) answered \(answer)")
                continue
            }
            XCTAssertEqual(error.code, code, error.message)
            XCTAssertTrue(error.message.contains(needle), "'\(error.message)' does not name '\(needle)'")
        }
        XCTAssertEqual(backend.calls, [], "no bad request reached the backend")
        try await client.send(Self.request(8, queries: 1, t: [2]))
        guard case .denoiseResponse? = try await client.frame(for: 8).body else { return XCTFail("no answer after errors") }
        try await client.send(Pspc_V1_Frame(requestID: 9, body: .healthRequest(Pspc_V1_HealthRequest())))
        guard case .healthResponse(let health)? = try await client.frame(for: 9).body else { return XCTFail("no health") }
        XCTAssertEqual(health.info.imageCount, 12)
        client.close()
        try await channel.close()
    }

    func testCancelOfAWaitingRequestNeverComputesIt() async throws {
        let backend = RecordingBackend(held: true)
        let (_, channel, client) = try await Self.start(backend, concurrent: 1)
        try await client.send(Self.request(1, queries: 1, t: [1]))
        await backend.entered.wait()  // request 1 computes (held); request 2 must wait its turn
        try await client.send(Self.request(2, queries: 1, t: [3]))
        var cancel = Pspc_V1_Cancel()
        cancel.targetRequestID = 2
        try await client.send(Pspc_V1_Frame(requestID: 3, body: .cancel(cancel)))
        // Answered while request 1 still holds the only place: the cancelled request left the queue at once.
        let second = try await client.frame(for: 2)
        XCTAssertFalse(client.hasFrame(for: 1))
        backend.release.open()
        guard case .denoiseResponse? = try await client.frame(for: 1).body else { return XCTFail("request 1 failed") }
        guard case .error(let error)? = second.body else { return XCTFail("request 2 answered \(second)") }
        XCTAssertEqual(error.code, .cancelled, error.message)
        XCTAssertEqual(backend.calls, [.init(t: 1, count: 1, first: 0)], "the cancelled request never computed")
        XCTAssertFalse(client.hasFrame(for: 3), "a Cancel has no answer of its own")
        client.close()
        try await channel.close()
    }
}
