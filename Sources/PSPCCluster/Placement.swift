/// Where shards live: shard k of S is held by workers (k + j) mod W for j = 0..<r (r = replication), so each
/// worker holds about r S / W shards and the replicas of a shard sit on r different workers. Workers and the
/// coordinator compute it alike from (index, count, r), or a worker is given an explicit shard list.
public enum Placement {
    public static func shards(forWorker index: Int, of workers: Int, shardCount: Int, replication: Int) -> [Int] {
        precondition(workers >= 1 && index >= 0 && index < workers)
        let r = max(1, min(replication, workers))
        return (0..<shardCount).filter { k in (0..<r).contains { j in (k + j) % workers == index } }
    }

    /// Parses `INDEX/COUNT` or `INDEX/COUNT/R` (the form launchers pass, e.g. from SLURM_PROCID/SLURM_NTASKS).
    public static func parse(_ text: String) throws -> (index: Int, count: Int, replication: Int) {
        let parts = text.split(separator: "/").map { Int($0) }
        guard (parts.count == 2 || parts.count == 3), parts.allSatisfy({ $0 != nil }) else {
            throw ClusterError.invalidConfiguration("placement '\(text)' is not INDEX/COUNT or INDEX/COUNT/REPLICATION")
        }
        let index = parts[0]!, count = parts[1]!, replication = parts.count == 3 ? parts[2]! : 1
        guard count >= 1, index >= 0, index < count, replication >= 1 else {
            throw ClusterError.invalidConfiguration("placement '\(text)': need 0 <= INDEX < COUNT and REPLICATION >= 1")
        }
        return (index, count, replication)
    }
}
