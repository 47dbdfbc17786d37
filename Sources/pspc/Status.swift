import ArgumentParser
import Foundation
import NIOPosix
import PSPCCluster

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask every worker of a cluster file how it is, and whether every shard has a live replica.",
        discussion: """
            Connects to each worker (handshake included) and sends it a health check, all at once. Prints one
            line per worker (up or down, node, dataset fingerprint, shape, shards, requests in flight and served,
            round-trip time) and one per shard (its live replicas). Exit status 0 when every shard has a live
            replica and every live worker serves the dataset most of them serve; 1 otherwise.
            """)

    @Option(help: "The cluster file (workers, tokenFile).") var cluster: String
    @Flag(help: "Print JSON instead of text.") var json = false
    @Option(help: "Seconds to wait for each worker.") var timeout: Double = 5

    func validate() throws {
        guard timeout.isFinite, timeout > 0, timeout <= 3600 else {
            throw ValidationError("--timeout must be a number of seconds in (0, 3600]")
        }
    }

    func run() async throws {
        let file = try ClusterFile.read(cluster)
        let addresses = try file.workers.map { try HostPort($0) }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let status = await ClusterStatus.probe(
            addresses, token: try readClusterToken(file.tokenFile), group: group, timeout: timeout)
        try? await group.shutdownGracefully()
        print(json ? try Self.json(status) : Self.text(status), terminator: "")
        if !status.problems.isEmpty { throw ExitCode(1) }
    }

    static func text(_ status: ClusterStatus) -> String {
        var out = ""
        for w in status.workers {
            guard w.isUp else {
                out += "worker \(w.address)  down  \(w.failure ?? "")\n"
                continue
            }
            let shape = w.shape.map { "\($0)" } ?? "?"
            out +=
                "worker \(w.address)  up  node \(w.nodeID)  dataset \(w.datasetID.prefix(12))  \(shape) x-flip \(w.xflip ? "on" : "off")  shards \(w.shards.map(String.init).joined(separator: ","))  images \(w.images)  in flight \(w.inFlight)  served \(w.served)  rtt \(String(format: "%.2f", w.roundTrip * 1000)) ms\n"
            if let mismatch = w.mismatch { out += "  refused: it \(mismatch)\n" }
        }
        for (shard, live) in status.replicas.enumerated() {
            out +=
                "shard \(shard): \(live.isEmpty ? "no live replica" : live.map(\.description).joined(separator: ", "))\n"
        }
        let problems = status.problems
        out += problems.isEmpty ? "status: ok\n" : problems.map { "status: \($0)\n" }.joined()
        return out
    }

    static func json(_ status: ClusterStatus) throws -> String {
        let workers: [[String: Any]] = status.workers.map { w in
            var entry: [String: Any] = ["address": w.address.description, "up": w.isUp]
            if let failure = w.failure { entry["error"] = failure }
            if w.isUp {
                entry["node"] = w.nodeID
                entry["dataset"] = w.datasetID
                entry["shape"] = w.shape.map { "\($0)" } ?? NSNull()
                entry["xflip"] = w.xflip
                entry["shards"] = w.shards
                entry["images"] = w.images
                entry["threads"] = w.threads
                entry["inFlight"] = w.inFlight
                entry["served"] = w.served
                entry["roundTripSeconds"] = w.roundTrip
                if let mismatch = w.mismatch { entry["refused"] = mismatch }
            }
            return entry
        }
        let object: [String: Any] = [
            "workers": workers, "dataset": status.datasetID ?? NSNull(),
            "shards": status.replicas.map { $0.map(\.description) }, "lostShards": status.lostShards,
            "problems": status.problems, "ok": status.problems.isEmpty,
        ]
        let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}
