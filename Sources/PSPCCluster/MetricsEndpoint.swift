import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus

/// A plain HTTP/1.1 endpoint for operators, on its own port: `GET /metrics` (the Prometheus text exposition of
/// `registry`), `GET /healthz` (liveness: 200 `ok` whenever the event loop answers) and `GET /readyz`
/// (readiness: 200 `ready`, or 503 with the reason `readiness` gives). `HEAD` is answered like `GET` without a
/// body; other paths are 404, other methods 405, and bytes that are not HTTP get a 400 and a closed connection.
/// Nothing it is sent can stop the process: it holds no state but the registry and the closure.
public final class MetricsEndpoint: Sendable {
    /// Whether a process should be sent traffic now.
    public enum Readiness: Sendable, Equatable {
        case ready
        /// Not ready, and why (`loading shards`, `draining`): the body of the 503.
        case notReady(String)
    }

    /// A readiness that changes as a process loads, serves and drains, for the `readiness` closure:
    /// `readiness: { state.value }`.
    public final class ReadinessState: @unchecked Sendable {
        private let lock = NSLock()
        private var current: Readiness

        public init(_ initial: Readiness) { current = initial }

        public var value: Readiness {
            get { lock.withLock { current } }
            set { lock.withLock { current = newValue } }
        }
    }

    /// The address the endpoint is bound to (the free port picked for port 0).
    public let localAddress: SocketAddress
    let channel: Channel

    private init(channel: Channel, localAddress: SocketAddress) {
        self.channel = channel
        self.localAddress = localAddress
    }

    /// Binds `host:port` (port 0 picks a free one) on `group` and serves until `close()`.
    public static func start(
        host: String, port: Int, group: EventLoopGroup, registry: PrometheusCollectorRegistry,
        readiness: @escaping @Sendable () -> Readiness
    ) async throws -> MetricsEndpoint {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(
                        MetricsHTTPHandler(registry: registry, readiness: readiness))
                }
            }
            .bind(host: host, port: port).get()
        guard let address = channel.localAddress else {
            try? await channel.close()
            throw ChannelError.unknownLocalAddress
        }
        return MetricsEndpoint(channel: channel, localAddress: address)
    }

    /// Stops accepting connections.
    public func close() async {
        try? await channel.close()
    }
}

/// Answers one connection's requests, in order, on its event loop.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let registry: PrometheusCollectorRegistry
    let readiness: @Sendable () -> MetricsEndpoint.Readiness
    private var head: HTTPRequestHead?

    init(registry: PrometheusCollectorRegistry, readiness: @escaping @Sendable () -> MetricsEndpoint.Readiness) {
        self.registry = registry
        self.readiness = readiness
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break  // No path takes a body; it is read and ignored.
        case .end:
            guard let head else { return }
            self.head = nil
            respond(to: head, context: context)
        }
    }

    /// Bytes that are not HTTP: NIO's error handler has answered 400; the connection is closed.
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    /// Status, content type and body for `method path`.
    func answer(method: HTTPMethod, path: String) -> (HTTPResponseStatus, String, [UInt8]) {
        let text = "text/plain; charset=utf-8"
        guard method == .GET || method == .HEAD else {
            return (.methodNotAllowed, text, Array("only GET and HEAD are served\n".utf8))
        }
        switch path {
        case "/metrics": return (.ok, "text/plain; version=0.0.4; charset=utf-8", registry.emitToBuffer())
        case "/healthz": return (.ok, text, Array("ok\n".utf8))
        case "/readyz":
            switch readiness() {
            case .ready: return (.ok, text, Array("ready\n".utf8))
            case .notReady(let reason): return (.serviceUnavailable, text, Array("not ready: \(reason)\n".utf8))
            }
        default:
            return (.notFound, text, Array("no such path: \(path) (served: /metrics, /healthz, /readyz)\n".utf8))
        }
    }

    private func respond(to request: HTTPRequestHead, context: ChannelHandlerContext) {
        // The query string is not part of the path (`/metrics?x=1` is `/metrics`).
        let path = String(request.uri.prefix { $0 != "?" })
        let (status, type, body) = answer(method: request.method, path: path)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: "\(body.count)")
        let keepAlive = request.isKeepAlive
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))),
            promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            done.whenComplete { _ in bound.value.close(promise: nil) }
        }
    }
}
