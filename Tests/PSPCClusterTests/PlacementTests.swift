import PSPCCluster
import XCTest

final class PlacementTests: XCTestCase {
    func testEveryShardHasRDistinctHolders() {
        for (shards, workers, r) in [(7, 3, 2), (7, 3, 1), (16, 4, 3), (5, 8, 2), (1, 1, 1), (9, 3, 5)] {
            let lists = (0..<workers).map {
                Placement.shards(forWorker: $0, of: workers, shardCount: shards, replication: r)
            }
            let router = ShardRouter(shardCount: shards, workerShards: lists)
            for k in 0..<shards {
                XCTAssertEqual(
                    Set(router.holders[k]).count, min(r, workers), "shard \(k) of \(shards), \(workers) workers, r=\(r)"
                )
            }
            XCTAssertTrue(router.lostShards.isEmpty)
        }
    }

    func testParse() throws {
        XCTAssertEqual(try Placement.parse("2/5").count, 5)
        XCTAssertEqual(try Placement.parse("0/3/2").replication, 2)
        XCTAssertThrowsError(try Placement.parse("3/3"))
        XCTAssertThrowsError(try Placement.parse("a/b"))
    }
}

final class ShardRouterTests: XCTestCase {
    func testFailoverAndRecovery() {
        let lists = (0..<3).map { Placement.shards(forWorker: $0, of: 3, shardCount: 7, replication: 2) }
        var router = ShardRouter(shardCount: 7, workerShards: lists)
        let before = (0..<7).map { router.candidates(for: $0) }
        // Primaries spread: every worker is first for some shard.
        XCTAssertEqual(Set(before.map { $0[0] }), [0, 1, 2])
        router.markDown(1)
        for k in 0..<7 {
            XCTAssertFalse(router.candidates(for: k).contains(1))
            XCTAssertFalse(router.candidates(for: k).isEmpty, "r = 2 survives one failure")
        }
        router.markDown(2)
        XCTAssertFalse(router.lostShards.isEmpty)
        router.markUp(1)
        router.markUp(2)
        XCTAssertEqual((0..<7).map { router.candidates(for: $0) }, before)
    }

    func testSingleReplicaLosesShards() {
        let lists = (0..<3).map { Placement.shards(forWorker: $0, of: 3, shardCount: 7, replication: 1) }
        var router = ShardRouter(shardCount: 7, workerShards: lists)
        router.markDown(0)
        XCTAssertEqual(router.lostShards, lists[0])
    }
}
