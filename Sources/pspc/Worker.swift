import ArgumentParser
import Dispatch
import Foundation
import Logging
import Metrics
import NIOCore
import NIOPosix
import PSPCCluster
import PSPCCore
import PSPCData
import Prometheus

struct Worker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve partial sums over shards of a dataset to coordinators that hold the cluster token.",
        discussion: """
            Prints `pspc worker listening on HOST:PORT` on standard output once it serves (then, with
            --metrics-listen, `pspc worker metrics on HOST:PORT`), and stops cleanly on SIGTERM or SIGINT: it
            stops accepting, lets the requests it took finish, and exits 0. --metrics-listen serves plain HTTP:
            /metrics (Prometheus), /healthz (liveness) and /readyz (503 while loading shards or draining).
            Shards: --shards 0,3,5 or --placement INDEX/COUNT[/REPLICATION] (shard k goes to workers
            (k + j) mod COUNT, j < REPLICATION); default: every shard.
            """)

    @Option(help: "Address to listen on, HOST:PORT (port 0 picks a free port).") var listen: String
    @Option(help: "Serve /metrics, /healthz and /readyz over HTTP on HOST:PORT (port 0 picks a free port).")
    var metricsListen: String?
    @Option(help: "Dataset directory written by `pspc ingest`.") var data: String
    @Option(help: "Comma-separated shard ids to serve.") var shards: String?
    @Option(help: "INDEX/COUNT[/REPLICATION]: serve the shards placed on worker INDEX of COUNT.") var placement: String?
    @Option(help: "File holding the shared cluster token (at least 16 bytes).") var tokenFile: String
    @Option(help: "Kernel threads (default: all cores).") var threads: Int?
    @Option(help: "Log level on stderr: trace, debug (every request), info (connections), notice, warning (refused connections, bad frames, error replies), error, critical.")
    var logLevel: Logger.Level = .info
    @Option(help: "Append x-flipped copies of the images, as the coordinator expects.") var xflip: Switch = .on
    @Flag(help: "Stop when standard input closes: a parent that starts the worker holds it, so a killed parent leaves no worker behind.")
    var exitWithParent = false

    func validate() throws {
        if shards != nil && placement != nil { throw ValidationError("give --shards or --placement, not both") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() async throws {
        let address = try HostPort(listen)
        let metricsAddress = try metricsListen.map { try HostPort($0) }
        let token = try readClusterToken(tokenFile)
        let manifest = try Manifest.read(directory: data)
        let ids: [Int]
        if let shards {
            ids = try shards.split(separator: ",").map { part in
                guard let id = Int(part.trimmingCharacters(in: .whitespaces)), id >= 0, id < manifest.shards.count
                else {
                    throw ValidationError(
                        "--shards: '\(part)' is not a shard id of this dataset (0..<\(manifest.shards.count))")
                }
                return id
            }
        } else if let placement {
            let (index, count, replication) = try Placement.parse(placement)
            ids = Placement.shards(
                forWorker: index, of: count, shardCount: manifest.shards.count, replication: replication)
        } else {
            ids = Array(manifest.shards.indices)
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let metrics = WorkerMetrics(version: PSPC.configuration.version)
        let readiness = MetricsEndpoint.ReadinessState(.notReady("loading shards"))
        let endpoint = try await ServerLifetime.startMetrics(
            at: metricsAddress, group: group, metrics: metrics, readiness: readiness)
        let threadCount = threads ?? ProcessInfo.processInfo.activeProcessorCount
        BLASThreads.set(threadCount)
        var hosted: [WorkerService.HostedShard] = []
        for id in ids {
            let entry = manifest.shards[id]
            let images = try ShardStore.readShard(entry, manifest: manifest, directory: data)
            let set = try ImageSet(pixels: images.pixels, count: images.count, shape: images.shape, xflip: xflip == .on)
            hosted.append(.init(id: id, first: entry.first, source: InProcessShard(images: set, threads: threadCount)))
        }
        let service = WorkerService(
            shards: hosted, shape: manifest.shape, token: token,
            nodeID: "\(ProcessInfo.processInfo.hostName):\(getpid())",
            threads: threadCount, datasetShards: manifest.shards.count, datasetID: manifest.fingerprint,
            xflip: xflip == .on, logger: Logs.logger("pspc.worker", level: logLevel), metrics: metrics)
        let channel: Channel
        do {
            channel = try await service.bind(host: address.host, port: address.port, group: group)
        } catch {
            try? await group.shutdownGracefully()
            throw ClusterError.invalidConfiguration("cannot listen on \(address): \(listenFailure(error))")
        }
        let bound = channel.localAddress?.port ?? address.port
        readiness.value = .ready
        note(
            "pspc worker: shards \(ids.map(String.init).joined(separator: ",")) of \(manifest.source) (\(hosted.reduce(0) { $0 + $1.source.imageCount }) images), \(threadCount) threads"
        )
        var announcements = ["pspc worker listening on \(HostPort(host: address.host, port: bound))"]
        if let endpoint, let metricsAddress {
            let announced = ServerLifetime.bound(metricsAddress, endpoint)
            announcements.append("pspc worker metrics on \(announced)")
            service.logger.info("metrics, /healthz and /readyz on http://\(announced)")
        }
        // Stopping: readiness probes are told at once (the metrics endpoint keeps answering while it drains).
        try await ServerLifetime.announceAndServe(
            announcements, channel: channel, exitWithParent: exitWithParent,
            stopping: { readiness.value = .notReady("draining") })
        readiness.value = .notReady("draining")
        // Let requests already taken finish (their coordinators wait for them), then leave at once: exit()
        // can hang in OpenBLAS's exit handler waiting for its idle threads, so the process ends with _exit.
        try await ServerLifetime.drain(seconds: 30) { service.inFlight }
        note("pspc worker: stopped")
        _exit(0)
    }
}

/// Why binding a listening socket failed, in words: the errno text and name for a system error ("Address already
/// in use (EADDRINUSE)"), NIO's own description for the rest (an unresolvable host).
func listenFailure(_ error: Error) -> String {
    if let error = error as? IOError { return SystemError.describe(errno: error.errnoCode) }
    return "\(error)"
}

