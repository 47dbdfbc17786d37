import Foundation
import NIOCore
import NIOPosix
import PSPCCore
import PSPCWire

/// The coordinator's view of a cluster: a connection per worker, the shard table the workers reported at
/// their handshakes, and failover. Each shard is a `PartialSumSource`; a request for a shard goes to its
/// first live replica, and to the next one when that worker dies, hangs past the deadline or fails.
public actor Cluster {
    public let addresses: [HostPort]
    public nonisolated let shape: ImageShape
    /// Images per shard (x-flipped copies included), by shard id.
    public nonisolated let shardImageCounts: [Int]
    public private(set) var router: ShardRouter
    let token: [UInt8]
    let group: EventLoopGroup
    let deadline: Double
    let retryInterval: Double
    private var connections: [Int: WorkerConnection] = [:]
    private var connecting: [Int: Task<WorkerConnection, Error>] = [:]
    private var downSince: [Int: Date] = [:]
    private let log: @Sendable (String) -> Void
    /// Bytes on the wire to and from the workers since connecting (handshakes included).
    public nonisolated let traffic: WireTraffic
    /// Float64 queries and partials are mostly noise to zstd (it saves a few percent for a CPU cost that
    /// competes with the kernels on the same cores), so requests travel uncompressed unless asked.
    public var compression: TensorCompression = .none

    /// Connects to every worker and learns which shards each holds. Unreachable workers start marked down;
    /// it fails only when some shard has no reachable holder.
    public static func connect(
        to addresses: [HostPort], token: [UInt8], group: EventLoopGroup, deadline: Double = 120,
        retryInterval: Double = 5, xflip: Bool? = nil, log: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws -> Cluster {
        var peers: [Int: WorkerConnection] = [:]
        var failures: [String] = []
        let traffic = WireTraffic()
        for (i, address) in addresses.enumerated() {
            do {
                peers[i] = try await WorkerConnection.connect(to: address, token: token, group: group, traffic: traffic)
            } catch {
                failures.append("\(address): \(error)")
                log("worker \(address) is unreachable: \(error)")
            }
        }
        guard let first = peers.values.first?.peer.info else {
            throw ClusterError.invalidConfiguration("no worker could be reached: \(failures.joined(separator: "; "))")
        }
        let shape = try ImageShape(wire: first.shape)
        for (i, connection) in peers {
            guard let info = connection.peer.info else { continue }
            guard info.datasetShards == first.datasetShards, info.datasetID == first.datasetID else {
                throw ClusterError.invalidConfiguration(
                    "worker \(addresses[i]) serves another dataset (\(info.datasetShards) shards, id \(info.datasetID.prefix(12))) than the others (\(first.datasetShards) shards, id \(first.datasetID.prefix(12)))"
                )
            }
            guard info.xflip == first.xflip else {
                throw ClusterError.invalidConfiguration(
                    "workers disagree on x-flip (worker \(addresses[i]): \(info.xflip ? "on" : "off"))")
            }
        }
        if let xflip, xflip != first.xflip {
            throw ClusterError.invalidConfiguration(
                "the workers serve the training set with x-flip \(first.xflip ? "on" : "off"), this command asked for \(xflip ? "on" : "off"): start them with the same --xflip"
            )
        }
        var counts: [Int: Int] = [:]
        var workerShards = [[Int]](repeating: [], count: addresses.count)
        for (i, connection) in peers {
            guard let info = connection.peer.info else { continue }
            guard try ImageShape(wire: info.shape) == shape else {
                throw ClusterError.invalidConfiguration(
                    "worker \(addresses[i]) serves \(try ImageShape(wire: info.shape)) images, others \(shape)")
            }
            for shard in info.shards {
                workerShards[i].append(Int(shard.id))
                if let known = counts[Int(shard.id)], known != Int(shard.count) {
                    throw ClusterError.invalidConfiguration("workers disagree on the size of shard \(shard.id)")
                }
                counts[Int(shard.id)] = Int(shard.count)
            }
        }
        // The dataset's own shard count, not the highest id seen: shards whose every holder is unreachable
        // must be noticed, not silently left out.
        let shardCount = Int(first.datasetShards)
        let missing = (0..<shardCount).filter { counts[$0] == nil }
        guard missing.isEmpty, shardCount > 0, counts.keys.allSatisfy({ $0 < shardCount }) else {
            throw ClusterError.shardsLost(missing, reason: "no reachable worker holds them")
        }
        var router = ShardRouter(shardCount: shardCount, workerShards: workerShards)
        for i in addresses.indices where peers[i] == nil { router.markDown(i) }
        let cluster = Cluster(
            addresses: addresses, shape: shape, shardImageCounts: (0..<shardCount).map { counts[$0]! }, router: router,
            token: token, group: group, deadline: deadline, retryInterval: retryInterval, traffic: traffic, log: log)
        await cluster.adopt(peers)
        return cluster
    }

    private init(
        addresses: [HostPort], shape: ImageShape, shardImageCounts: [Int], router: ShardRouter, token: [UInt8],
        group: EventLoopGroup, deadline: Double, retryInterval: Double, traffic: WireTraffic,
        log: @escaping @Sendable (String) -> Void
    ) {
        self.traffic = traffic
        self.addresses = addresses
        self.shape = shape
        self.shardImageCounts = shardImageCounts
        self.router = router
        self.token = token
        self.group = group
        self.deadline = deadline
        self.retryInterval = retryInterval
        self.log = log
        let now = Date()
        for i in router.down { downSince[i] = now }
    }

    private func adopt(_ peers: [Int: WorkerConnection]) { connections = peers }

    /// One partial-sum source per shard, in shard order.
    public nonisolated func sources() -> [any PartialSumSource] {
        shardImageCounts.indices.map { RemoteShardSource(cluster: self, shard: $0) }
    }

    public func close() {
        for connection in connections.values { connection.close() }
        connections.removeAll()
    }

    /// Evaluates `request` on `shard` at its first live replica, failing over until one answers. A worker whose
    /// answer would not fit in a frame says so; the batch is then asked in two halves (recursively) and the
    /// halves' partials are put back together in query order.
    func evaluate(_ request: PartialRequest, shard: Int) async throws -> PartialResponse {
        do {
            return try await evaluateWhole(request, shard: shard)
        } catch let error as ClusterError where error.isReplyTooLarge {
            guard let (first, second) = request.halves() else { throw error }
            let a = try await evaluate(first, shard: shard)
            let b = try await evaluate(second, shard: shard)
            return try a.concatenated(b)
        }
    }

    private func evaluateWhole(_ request: PartialRequest, shard: Int) async throws -> PartialResponse {
        await reviveDownWorkers()
        let wire = Pspc_V1_PartialRequest(request, shards: [shard], compression: compression)
        var lastFailure = "no replica was tried"
        while true {
            guard let worker = router.candidates(for: shard).first else {
                throw ClusterError.shardsLost(
                    router.lostShards.isEmpty ? [shard] : router.lostShards, reason: lastFailure)
            }
            do {
                let connection = try await connection(to: worker)
                let answer = try await connection.call(.partialRequest(wire), deadline: deadline)
                guard case .partialResponse(let response) = answer else {
                    throw ClusterError.workerFailed(
                        worker: addresses[worker].description, reason: "answered with the wrong kind of frame")
                }
                return try PartialResponse(wire: response, shape: shape)
            } catch let error as ClusterError {
                // The request itself was refused: no replica will differ.
                if !error.isRetryable || error.isReplyTooLarge { throw error }
                lastFailure = error.description
                markDown(worker, because: error.description)
            }
        }
    }

    private func connection(to worker: Int) async throws -> WorkerConnection {
        if let existing = connections[worker], existing.isActive { return existing }
        if let pending = connecting[worker] { return try await pending.value }
        let address = addresses[worker], token = self.token, group = self.group
        let traffic = self.traffic
        let task = Task {
            try await WorkerConnection.connect(to: address, token: token, group: group, traffic: traffic)
        }
        connecting[worker] = task
        defer { connecting[worker] = nil }
        let connection = try await task.value
        connections[worker] = connection
        return connection
    }

    private func markDown(_ worker: Int, because reason: String) {
        guard !router.down.contains(worker) else { return }
        log("worker \(addresses[worker]) is down (\(reason)); its shards go to replicas")
        router.markDown(worker)
        downSince[worker] = Date()
        connections[worker]?.close()
        connections[worker] = nil
    }

    /// Tries again, at most once per `retryInterval`, the workers marked down: a restarted worker is taken back.
    private func reviveDownWorkers() async {
        let now = Date()
        for (worker, since) in downSince where now.timeIntervalSince(since) >= retryInterval {
            downSince[worker] = now
            if let connection = try? await WorkerConnection.connect(
                to: addresses[worker], token: token, group: group, timeout: .seconds(2))
            {
                connections[worker] = connection
                downSince[worker] = nil
                router.markUp(worker)
                log("worker \(addresses[worker]) is back")
            }
        }
    }
}

/// One shard of a cluster as a partial-sum source for the engine.
public struct RemoteShardSource: PartialSumSource {
    let cluster: Cluster
    public let shard: Int

    public var shape: ImageShape { cluster.shape }
    public var imageCount: Int { cluster.shardImageCounts[shard] }

    public func evaluate(_ request: PartialRequest) async throws -> PartialResponse {
        try await cluster.evaluate(request, shard: shard)
    }
}
