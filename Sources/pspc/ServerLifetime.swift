import Dispatch
import Foundation
import Metrics
import NIOCore
import PSPCCluster
import Prometheus

/// The life of a listening server process (`pspc worker`, `pspc serve`): it announces its address, then serves
/// until SIGTERM or SIGINT (or, with `exitWithParent`, until standard input closes) closes its channel.
enum ServerLifetime {
    /// Starts `--metrics-listen`'s HTTP endpoint (/metrics, /healthz, /readyz) when an address is given; libraries
    /// that report through swift-metrics land in the same registry.
    static func startMetrics(
        at address: HostPort?, group: EventLoopGroup, metrics: WorkerMetrics,
        readiness: MetricsEndpoint.ReadinessState
    ) async throws -> MetricsEndpoint? {
        guard let address else { return nil }
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics.registry))
        do {
            return try await MetricsEndpoint.start(
                host: address.host, port: address.port, group: group, registry: metrics.registry,
                readiness: { readiness.value })
        } catch {
            try? await group.shutdownGracefully()
            throw ClusterError.invalidConfiguration("cannot listen on \(address) for metrics: \(listenFailure(error))")
        }
    }

    /// The address a metrics endpoint asked for at `address` is bound to (port 0 resolved).
    static func bound(_ address: HostPort, _ endpoint: MetricsEndpoint) -> HostPort {
        HostPort(host: address.host, port: endpoint.localAddress.port ?? address.port)
    }

    /// Writes `line` to standard output (unbuffered: launchers and tests wait for it), then returns once the
    /// channel is closed by a signal, by standard input's end, or otherwise.
    static func announceAndServe(_ line: String, channel: Channel, exitWithParent: Bool) async throws {
        try await announceAndServe([line], channel: channel, exitWithParent: exitWithParent)
    }

    /// Writes `lines` (the first one the address launchers wait for), then serves as above; `stopping` runs
    /// when a signal or standard input's end stops the server, before its channel is closed.
    static func announceAndServe(
        _ lines: [String], channel: Channel, exitWithParent: Bool, stopping: @escaping @Sendable () -> Void = {}
    ) async throws {
        FileHandle.standardOutput.write(Data(lines.map { $0 + "\n" }.joined().utf8))
        let stop = DispatchQueue(label: "pspc.server.signals")
        var sources: [DispatchSourceSignal] = []
        for signalNumber in [SIGTERM, SIGINT] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: stop)
            source.setEventHandler {
                stopping()
                channel.close(promise: nil)
            }
            source.resume()
            sources.append(source)
        }
        if exitWithParent {
            // EOF on stdin means the parent is gone (even after SIGKILL): stop as on SIGTERM.
            Thread.detachNewThread {
                while !FileHandle.standardInput.availableData.isEmpty {}
                stopping()
                channel.close(promise: nil)
            }
        }
        try await channel.closeFuture.get()
        withExtendedLifetime(sources) {}
    }

    /// Waits (polling, at most `seconds`) until `inFlight()` is 0: requests already taken finish before exit.
    static func drain(seconds: Double, inFlight: () -> Int) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while inFlight() > 0 && Date() < deadline { try await Task.sleep(nanoseconds: 10_000_000) }
    }
}
