import Foundation
import NIOCore
import PSPCWire
import Prometheus

/// What one worker has done, as Prometheus metrics in a registry of its own (several workers in one process,
/// as in tests, never mix their counts). `MetricsEndpoint` serves the registry; docs/operations.md lists the
/// metrics and what each means. Every request the worker reads after the handshake is counted once, by its op,
/// when it is read; its duration and any error reply when it is answered.
public final class WorkerMetrics: Sendable {
    /// The registry `MetricsEndpoint` serves (`pspc worker` also bootstraps swift-metrics with it).
    public let registry: PrometheusCollectorRegistry
    /// Ops a worker serves: counted from zero, so that a scrape shows them before their first request.
    public static let knownOps = ["empirical", "crop_normalizers", "crop_composite", "moments", "health", "cancel"]
    /// Upper bounds of the request-duration buckets, in seconds (a partial request takes milliseconds to minutes).
    public static let durationBuckets: [Double] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300]

    let queueDepth: Gauge
    let connectionsOpen: Gauge
    let shardsHeld: Gauge
    let imagesHeld: Gauge
    let bytesReceived: Counter
    let bytesSent: Counter

    static var requests: MetricNameDescriptor {
        named("requests", unit: "total", "Requests read after the handshake, by op (a cancel counts as op cancel).")
    }
    static var errors: MetricNameDescriptor {
        named(
            "request_errors", unit: "total",
            "Requests answered with an error reply, by op and error code (cancelled included).")
    }
    static var duration: MetricNameDescriptor {
        named(
            "request_duration", unit: "seconds",
            "Time from reading a request to handing its answer to the connection, by op.")
    }
    static var handshakeFailures: MetricNameDescriptor {
        named("handshake_failures", unit: "total", "Connections closed before or during the handshake, by reason.")
    }

    /// `pspc_NAME_UNIT`, with its help text.
    static func named(_ name: String, unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "pspc", metricName: name, unitName: unit, helpText: help)
    }

    /// Ops `pspc serve` answers.
    public static let serveOps = ["denoise", "health", "cancel"]

    /// `version` is the build's (`pspc --version`), shown as `pspc_build_info{version=...} 1`; `ops` are counted
    /// from zero (a worker's `knownOps`, or `serveOps` for `pspc serve`).
    public init(
        version: String, ops: [String] = WorkerMetrics.knownOps,
        registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()
    ) {
        self.registry = registry
        func gauge(_ name: String, _ help: String) -> Gauge {
            registry.makeGauge(descriptor: Self.named(name, unit: "", help))
        }
        func counter(_ name: String, _ help: String) -> Counter {
            registry.makeCounter(descriptor: Self.named(name, unit: "total", help))
        }
        registry.makeGauge(
            descriptor: Self.named("build", unit: "info", "This process's build: always 1."), labels: [("version", version)]
        ).set(to: 1.0)
        queueDepth = gauge("queue_depth", "Requests waiting or computing now.")
        connectionsOpen = gauge("connections_open", "Connections open now, handshaking ones included.")
        shardsHeld = gauge("shards_held", "Shards this process computes over (its own, or its workers').")
        imagesHeld = gauge("images_held", "Training images behind this process, x-flipped copies included.")
        bytesReceived = counter("bytes_received", "Bytes read from clients, framing and handshakes included.")
        bytesSent = counter("bytes_sent", "Bytes written to clients, framing and handshakes included.")
        for op in ops {
            _ = registry.makeCounter(descriptor: Self.requests, labels: [("op", op)])
            if op != "cancel" { _ = histogram(op) }  // A cancel has no answer of its own.
        }
        for reason in HandshakeFailure.allCases {
            _ = registry.makeCounter(descriptor: Self.handshakeFailures, labels: [("reason", reason.rawValue)])
        }
    }

    /// Why a connection ended before it was established.
    public enum HandshakeFailure: String, Sendable, CaseIterable {
        /// The peer's proof of the cluster token did not verify (a wrong token).
        case authentication
        /// A Hello that is not pspc's, or of another protocol version or role.
        case protocolMismatch = "protocol"
        /// Bytes that are no frame, or a frame over the handshake's size limit.
        case badFrame = "bad_frame"
        /// No handshake within the worker's handshake timeout.
        case timeout
        /// Over the worker's connection cap.
        case tooManyConnections = "too_many_connections"

        init(_ error: WireError) {
            switch error {
            case .authenticationFailed, .peerError(code: .authenticationFailed, _): self = .authentication
            case .malformedFrame, .frameTooLarge, .integrityFailed: self = .badFrame
            default: self = .protocolMismatch
            }
        }
    }

    func requestRead(op: String) {
        registry.makeCounter(descriptor: Self.requests, labels: [("op", op)]).increment()
    }

    func requestAnswered(op: String, seconds: Double) { histogram(op).record(seconds) }

    func requestFailed(op: String, code: Pspc_V1_ErrorCode) {
        registry.makeCounter(descriptor: Self.errors, labels: [("op", op), ("code", Self.label(code))]).increment()
    }

    func handshakeFailed(_ reason: HandshakeFailure) {
        registry.makeCounter(descriptor: Self.handshakeFailures, labels: [("reason", reason.rawValue)]).increment()
    }

    func hold(shards: Int, images: Int) {
        shardsHeld.set(Double(shards))
        imagesHeld.set(Double(images))
    }

    private func histogram(_ op: String) -> ValueHistogram {
        registry.makeValueHistogram(descriptor: Self.duration, labels: [("op", op)], buckets: Self.durationBuckets)
    }

    /// `invalid_argument` for `.invalidArgument`: Prometheus label values in the style of its names.
    static func label(_ code: Pspc_V1_ErrorCode) -> String { snakeCase(String(describing: code)) }

    /// `crop_composite` for `cropComposite`.
    static func snakeCase(_ name: String) -> String {
        var out = ""
        for character in name where character != "`" {
            if character.isUppercase && !out.isEmpty { out.append("_") }
            out.append(contentsOf: character.lowercased())
        }
        return out
    }
}

extension WorkerMetrics: TrafficSink {
    func add(sent: Int, received: Int) {
        if sent > 0 { bytesSent.increment(by: Int64(sent)) }
        if received > 0 { bytesReceived.increment(by: Int64(received)) }
    }
}

extension Pspc_V1_Frame {
    /// The op a request frame is counted under, on both sides of a connection: a partial request's operation
    /// (`empirical`, `crop_normalizers`, `crop_composite`, `moments`), `health`, `cancel`, or the body's name.
    var metricsOp: String {
        switch body {
        case .partialRequest(let request)?:
            // The oneof case's name, so that an op added to the protocol is counted too. Read by reflection:
            // describing the case would print its whole payload (the queries).
            guard let op = request.op, let name = Mirror(reflecting: op).children.first?.label else {
                return "partial_request"
            }
            return WorkerMetrics.snakeCase(name)
        case .denoiseRequest?: return "denoise"
        case .healthRequest?: return "health"
        case .cancel?: return "cancel"
        default: return bodyName
        }
    }
}
