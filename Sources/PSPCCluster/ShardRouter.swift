/// Which worker to ask for each shard: the decision logic of failover, as a plain value (no I/O). Replicas of a
/// shard are tried in a fixed order, rotated by shard so that the primaries spread over the workers; a worker
/// that fails is marked down until it is seen again (a restarted worker is taken back).
public struct ShardRouter: Sendable, Equatable {
    /// For each shard, the workers that hold it, in placement order.
    public private(set) var holders: [[Int]]
    public private(set) var down: Set<Int> = []

    public init(holders: [[Int]]) { self.holders = holders }

    /// Builds the table from what each worker reported holding.
    public init(shardCount: Int, workerShards: [[Int]]) {
        var holders = [[Int]](repeating: [], count: shardCount)
        for (worker, shards) in workerShards.enumerated() {
            for k in shards where k >= 0 && k < shardCount { holders[k].append(worker) }
        }
        self.init(holders: holders)
    }

    /// Shards no worker holds at all (placement error) or whose holders are all down.
    public var lostShards: [Int] {
        holders.indices.filter { k in holders[k].allSatisfy { down.contains($0) } }
    }

    /// Live workers to try for `shard`, best first.
    public func candidates(for shard: Int) -> [Int] {
        let live = holders[shard].filter { !down.contains($0) }
        guard !live.isEmpty else { return [] }
        let start = shard % live.count
        return Array(live[start...] + live[..<start])
    }

    /// The shards `worker` holds now (it reconnected with another placement, or joined late): it is a holder of
    /// exactly these, in worker order among the other holders.
    public mutating func setShards(_ shards: Set<Int>, of worker: Int) {
        for k in holders.indices {
            holders[k].removeAll { $0 == worker }
            if shards.contains(k) {
                holders[k].append(worker)
                holders[k].sort()
            }
        }
    }

    /// A worker failed (died, hung past its deadline, or answered with an error): route around it.
    public mutating func markDown(_ worker: Int) { down.insert(worker) }

    /// A worker answered again (reconnected after a restart): route to it again.
    public mutating func markUp(_ worker: Int) { down.remove(worker) }
}
