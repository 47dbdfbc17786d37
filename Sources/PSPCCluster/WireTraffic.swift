import Foundation
import NIOCore

/// Where a `TrafficCounter` adds the bytes it sees.
protocol TrafficSink: Sendable {
    func add(sent: Int, received: Int)
}

/// Bytes a coordinator sent to and received from its workers, over all connections, and the requests it sent
/// by op (as a worker counts them in `pspc_requests_total`).
public final class WireTraffic: TrafficSink, @unchecked Sendable {
    private let lock = NSLock()
    private var sent = 0
    private var received = 0
    private var sentRequests: [String: Int] = [:]

    public init() {}

    public var totals: (sent: Int, received: Int) { lock.withLock { (sent, received) } }

    /// Request frames handed to connections since the start, by op (`empirical`, `health`, `cancel`, ...).
    public var requests: [String: Int] { lock.withLock { sentRequests } }

    /// The requests by op in op order, for a log's metadata: `crop_composite:2,empirical:3` (`none` before any).
    public var requestsSummary: String {
        let ops = requests.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ",")
        return ops.isEmpty ? "none" : ops
    }

    func add(sent s: Int, received r: Int) {
        lock.withLock {
            sent += s
            received += r
        }
    }

    func countRequest(_ op: String) { lock.withLock { sentRequests[op, default: 0] += 1 } }
}

/// Counts the bytes crossing a connection, on either side (first in the pipeline, so it sees the framed bytes).
final class TrafficCounter: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let traffic: any TrafficSink

    init(_ traffic: any TrafficSink) { self.traffic = traffic }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        traffic.add(sent: 0, received: unwrapInboundIn(data).readableBytes)
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        traffic.add(sent: unwrapOutboundIn(data).readableBytes, received: 0)
        context.write(data, promise: promise)
    }
}
