import Foundation
import NIOCore
import NIOPosix
import PSPCCluster
import PSPCCore
import PSPCTestSupport
import XCTest

/// The operators' HTTP endpoint in this process: /metrics, /healthz, /readyz, 404 and 405 for the rest, 400 for
/// bytes that are not HTTP (and it keeps serving after them); and a worker's counters equal what a coordinator
/// sent it, op by op and byte by byte.
final class MetricsEndpointTests: XCTestCase {
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    func testPathsStatusesAndMalformedRequests() async throws {
        let metrics = WorkerMetrics(version: "9.9.9-test")
        let readiness = MetricsEndpoint.ReadinessState(.notReady("loading shards"))
        let endpoint = try await MetricsEndpoint.start(
            host: "127.0.0.1", port: 0, group: Self.group, registry: metrics.registry, readiness: { readiness.value })
        let port = try XCTUnwrap(endpoint.localAddress.port)
        XCTAssertNotEqual(port, 0)

        let live = try HTTPProbe.get("/healthz", port: port)
        XCTAssertEqual(live.status, 200)
        XCTAssertEqual(live.body, "ok\n")
        let loading = try HTTPProbe.get("/readyz", port: port)
        XCTAssertEqual(loading.status, 503)
        XCTAssertEqual(loading.body, "not ready: loading shards\n")
        readiness.value = .ready
        XCTAssertEqual(try HTTPProbe.get("/readyz", port: port).status, 200)
        readiness.value = .notReady("draining")
        XCTAssertEqual(try HTTPProbe.get("/readyz", port: port).body, "not ready: draining\n")

        let scrape = try HTTPProbe.get("/metrics?debug=1", port: port)
        XCTAssertEqual(scrape.status, 200)
        XCTAssertTrue(scrape.head.lowercased().contains("content-type: text/plain; version=0.0.4"), scrape.head)
        let samples = try HTTPProbe.samples(scrape.body)
        XCTAssertEqual(samples[#"pspc_build_info{version="9.9.9-test"}"#], 1)
        for op in WorkerMetrics.knownOps {
            XCTAssertEqual(samples[#"pspc_requests_total{op="\#(op)"}"#], 0, scrape.body)
            XCTAssertEqual(
                samples[#"pspc_request_duration_seconds_count{op="\#(op)"}"#], op == "cancel" ? nil : 0, scrape.body)
        }
        XCTAssertEqual(samples["pspc_connections_open"], 0)
        XCTAssertEqual(samples[#"pspc_handshake_failures_total{reason="authentication"}"#], 0)
        XCTAssertTrue(scrape.body.contains("# TYPE pspc_request_duration_seconds histogram"), scrape.body)

        let missing = try HTTPProbe.get("/metrics/extra", port: port)
        XCTAssertEqual(missing.status, 404)
        XCTAssertTrue(missing.body.contains("/metrics/extra"), missing.body)
        let post = try HTTPProbe.parse(
            HTTPProbe.exchange("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc", port: port))
        XCTAssertEqual(post.status, 405)
        // HEAD: the head of a GET, no body.
        let head = try HTTPProbe.parse(HTTPProbe.exchange("HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", port: port))
        XCTAssertEqual(head.status, 200)
        XCTAssertEqual(head.body, "")

        // Not HTTP at all, a broken request line, a header without a colon: 400 each, and the endpoint lives on.
        for garbage in ["\u{16}\u{03}\u{01}\u{02}\u{00}\r\n\r\n", "GET\r\n\r\n", "GET / HTTP/1.1\r\nno colon here\r\n\r\n"] {
            let answer = try HTTPProbe.parse(HTTPProbe.exchange(garbage, port: port))
            XCTAssertEqual(answer.status, 400, garbage.debugDescription)
        }
        XCTAssertEqual(try HTTPProbe.get("/healthz", port: port).status, 200)
        // HTTP/1.0 without keep-alive, and two pipelined requests on one connection, are both answered.
        let old = try HTTPProbe.parse(HTTPProbe.exchange("GET /healthz HTTP/1.0\r\n\r\n", port: port))
        XCTAssertEqual(old.status, 200)
        let pipelined = try HTTPProbe.exchange(
            "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", port: port)
        XCTAssertTrue(pipelined.hasPrefix("HTTP/1.1 200 OK"), pipelined)
        XCTAssertTrue(pipelined.contains("HTTP/1.1 404 Not Found"), pipelined)

        await endpoint.close()
        XCTAssertThrowsError(try HTTPProbe.get("/healthz", port: port))
    }

    func testWorkerCountsEqualWhatTheCoordinatorSent() async throws {
        let token = Array("a metrics test token, long enough".utf8)
        let shape = ImageShape(channels: 1, height: 4, width: 4)
        var rng = SplitMix(state: 7)
        let pixels = (0..<(20 * 16)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let shards = try (0..<2).map { k in
            let set = try ImageSet(
                pixels: Array(pixels[(k * 160)..<((k + 1) * 160)]), count: 10, shape: shape, xflip: true)
            return WorkerService.HostedShard(id: k, first: 10 * k, source: InProcessShard(images: set, threads: 1))
        }
        let service = WorkerService(
            shards: shards, shape: shape, token: token, nodeID: "metrics", threads: 1, datasetShards: 2,
            datasetID: "metrics-test", xflip: true, metrics: WorkerMetrics(version: "test"))
        let channel = try await service.bind(host: "127.0.0.1", port: 0, group: Self.group)
        let endpoint = try await MetricsEndpoint.start(
            host: "127.0.0.1", port: 0, group: Self.group, registry: service.metrics.registry, readiness: { .ready })
        let metricsPort = try XCTUnwrap(endpoint.localAddress.port)
        let before = try HTTPProbe.samples(HTTPProbe.get("/metrics", port: metricsPort).body)
        XCTAssertEqual(before["pspc_shards_held"], 2)
        XCTAssertEqual(before["pspc_images_held"], 40)

        // No health checks while it runs: every answer the worker writes is one the coordinator waits for.
        var policy = FailoverPolicy()
        policy.heartbeatInterval = 3600
        let cluster = try await Cluster.connect(
            to: [HostPort(host: "127.0.0.1", port: channel.localAddress!.port!)], token: token, group: Self.group,
            policy: policy)
        let engine = try DenoisingEngine(sources: cluster.sources(), batchSize: 2, concurrentSources: true)
        let z = (0..<(3 * 16)).map { Double($0 % 7) / 3 - 1 }
        for method in [DenoiseMethod.empirical, .pspcSquare(.constant(3)), .gaussian] {
            _ = try await engine.denoise(z, t: 0.7, method: method)
        }
        await cluster.close()
        // Everything the coordinator wrote has been read once the worker has seen the connection close.
        var samples = try await HTTPProbe.scrape(port: metricsPort) { $0["pspc_connections_open"] == 0 }
        let sent = cluster.traffic.requests
        XCTAssertGreaterThan(sent["empirical"] ?? 0, 0)
        XCTAssertGreaterThan(sent["moments"] ?? 0, 0)
        XCTAssertGreaterThan((sent["crop_normalizers"] ?? 0) + (sent["crop_composite"] ?? 0), 0)
        for op in Set(sent.keys).union(WorkerMetrics.knownOps) {
            XCTAssertEqual(samples[#"pspc_requests_total{op="\#(op)"}"#], Double(sent[op] ?? 0), "op \(op): \(samples)")
            XCTAssertEqual(
                samples[#"pspc_request_duration_seconds_count{op="\#(op)"}"#], op == "cancel" ? nil : Double(sent[op] ?? 0),
                "op \(op)")
        }
        let bytes = cluster.traffic.totals
        XCTAssertEqual(samples["pspc_bytes_received_total"], Double(bytes.sent))
        XCTAssertEqual(samples["pspc_bytes_sent_total"], Double(bytes.received))
        XCTAssertEqual(samples["pspc_queue_depth"], 0)
        XCTAssertFalse(samples.keys.contains { $0.hasPrefix("pspc_request_errors_total") }, "\(samples)")

        // A wrong token is counted as an authentication failure.
        do {
            _ = try await Cluster.connect(
                to: [HostPort(host: "127.0.0.1", port: channel.localAddress!.port!)],
                token: Array("another token that is long enough".utf8), group: Self.group)
            XCTFail("a wrong token was accepted")
        } catch {}
        samples = try await HTTPProbe.scrape(port: metricsPort) { $0["pspc_connections_open"] == 0 }
        XCTAssertEqual(samples[#"pspc_handshake_failures_total{reason="authentication"}"#], 1)
        await endpoint.close()
        try await channel.close()
    }
}
