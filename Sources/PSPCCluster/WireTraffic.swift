import Foundation
import NIOCore

/// Bytes a coordinator sent to and received from its workers, over all connections.
public final class WireTraffic: @unchecked Sendable {
    private let lock = NSLock()
    private var sent = 0
    private var received = 0

    public init() {}

    public var totals: (sent: Int, received: Int) { lock.withLock { (sent, received) } }

    func add(sent s: Int = 0, received r: Int = 0) {
        lock.withLock {
            sent += s
            received += r
        }
    }
}

/// Counts the bytes crossing a connection (first in the pipeline, so it sees the framed bytes).
final class TrafficCounter: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let traffic: WireTraffic

    init(_ traffic: WireTraffic) { self.traffic = traffic }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        traffic.add(received: unwrapInboundIn(data).readableBytes)
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        traffic.add(sent: unwrapOutboundIn(data).readableBytes)
        context.write(data, promise: promise)
    }
}
