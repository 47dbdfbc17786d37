import Foundation
import NIOCore
import PSPCCore
import PSPCWire

/// What an operator asks of a cluster: is every worker up, does each serve the same dataset, and has every shard
/// a live replica. Each worker is connected to (with the handshake) and sent a health check, all at once.
public struct ClusterStatus: Sendable {
    public struct Worker: Sendable {
        public var address: HostPort
        /// Nil when the worker answered; otherwise why not.
        public var failure: String?
        public var nodeID = ""
        public var datasetID = ""
        public var shape: ImageShape?
        public var xflip = false
        public var datasetShards = 0
        public var shards: [Int] = []
        public var images = 0
        public var threads = 0
        public var inFlight = 0
        public var served = 0
        /// Seconds from sending the health check to its answer.
        public var roundTrip: Double = 0
        /// Set when the worker serves another dataset than the cluster's (the one most workers serve).
        public var mismatch: String?

        public var isUp: Bool { failure == nil }
    }

    public var workers: [Worker]
    /// The dataset most reachable workers serve (ties: the first such worker's), nil when none answered.
    public var datasetID: String?
    /// For each shard of that dataset, the addresses of the live workers serving it.
    public var replicas: [[HostPort]]

    /// Shards with no live replica.
    public var lostShards: [Int] { replicas.indices.filter { replicas[$0].isEmpty } }

    /// What is wrong, one line each; empty when every shard has a live replica and every live worker agrees.
    public var problems: [String] {
        var lines = workers.compactMap { w in w.mismatch.map { "worker \(w.address) \($0)" } }
        if datasetID == nil { lines.append("no worker answered") }
        if !lostShards.isEmpty {
            lines.append("shards with no live replica: \(lostShards.map(String.init).joined(separator: ", "))")
        }
        return lines
    }

    public static func probe(
        _ addresses: [HostPort], token: [UInt8], group: EventLoopGroup, timeout: Double = 5
    ) async -> ClusterStatus {
        let workers = await withTaskGroup(of: Worker.self) { tasks in
            for address in addresses {
                tasks.addTask { await probe(address, token: token, group: group, timeout: timeout) }
            }
            var all: [Worker] = []
            for await worker in tasks { all.append(worker) }
            return addresses.map { address in all.first { $0.address == address }! }
        }
        return ClusterStatus(workers: workers)
    }

    /// Judges the workers' reports: the cluster's dataset, who disagrees, and each shard's live replicas.
    public init(workers: [Worker]) {
        var workers = workers
        let up = workers.filter(\.isUp)
        var votes: [String: Int] = [:]
        for worker in up { votes[worker.datasetID, default: 0] += 1 }
        let best = votes.values.max() ?? 0
        let reference = up.first { votes[$0.datasetID] == best }
        datasetID = reference?.datasetID
        var replicas = [[HostPort]](repeating: [], count: reference?.datasetShards ?? 0)
        if let reference {
            for i in workers.indices where workers[i].isUp {
                let w = workers[i]
                if w.datasetID != reference.datasetID {
                    workers[i].mismatch =
                        "serves another dataset (id \(w.datasetID.prefix(12)); most workers serve \(reference.datasetID.prefix(12)))"
                } else if w.shape != reference.shape || w.xflip != reference.xflip
                    || w.datasetShards != reference.datasetShards
                {
                    workers[i].mismatch = "serves the same dataset with other settings (shape, x-flip or shard count)"
                } else {
                    for shard in w.shards where replicas.indices.contains(shard) { replicas[shard].append(w.address) }
                }
            }
        }
        self.workers = workers
        self.replicas = replicas
    }

    static func probe(_ address: HostPort, token: [UInt8], group: EventLoopGroup, timeout: Double) async -> Worker {
        var worker = Worker(address: address)
        do {
            let connection = try await WorkerConnection.connect(
                to: address, token: token, group: group, timeout: .nanoseconds(Int64(timeout * 1e9)))
            defer { connection.close() }
            let started = DispatchTime.now().uptimeNanoseconds
            let answer = try await connection.call(.healthRequest(.init()), deadline: timeout)
            worker.roundTrip = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            guard case .healthResponse(let health) = answer else {
                worker.failure = "answered a health check with something else"
                return worker
            }
            let info = health.hasInfo ? health.info : (connection.peer.info ?? Pspc_V1_WorkerInfo())
            worker.nodeID = connection.peer.nodeID
            worker.datasetID = info.datasetID
            worker.shape = try? ImageShape(wire: info.shape)
            worker.xflip = info.xflip
            worker.datasetShards = Int(info.datasetShards)
            worker.shards = info.shards.map { Int($0.id) }.sorted()
            worker.images = Int(info.imageCount)
            worker.threads = Int(info.threads)
            worker.inFlight = Int(health.inFlight)
            worker.served = Int(health.served)
        } catch ClusterError.workerFailed(_, let reason) {
            worker.failure = reason
        } catch {
            worker.failure = "\(error)"
        }
        return worker
    }
}
