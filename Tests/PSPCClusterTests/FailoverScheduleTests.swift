import Foundation
import PSPCCluster
import PSPCCore
import PSPCTestSupport
import XCTest

/// Drives the failover state machine through thousands of random fault schedules on a simulated cluster with a
/// fake clock: workers crash (with or without a reset), vanish, hang, answer slowly, answer NaN, come back with
/// another dataset or another placement, lose connections to bad frames; requests arrive and are cancelled at
/// random. Every request must end exactly once, with the fault-free bits or a clear "shards lost" (or
/// "cancelled" for those the caller cancelled), and with a replica that never failed it must be answered.
final class FailoverScheduleTests: XCTestCase {
    func testThousandsOfRandomFaultSchedulesEndWithTheFaultFreeBitsOrShardsLost() throws {
        let schedules = 4000
        let started = Date()
        var outcomes = Simulation.Tally()
        for seed in 0..<schedules {
            var simulation = Simulation(seed: UInt64(seed))
            try simulation.run()
            outcomes.add(simulation.tally)
        }
        let seconds = Date().timeIntervalSince(started)
        print(
            "failover schedules: \(schedules) in \(String(format: "%.2f", seconds)) s; requests: \(outcomes.delivered) delivered, \(outcomes.lost) shards lost, \(outcomes.cancelled) cancelled; faults injected: \(outcomes.faults); attempts discarded late: \(outcomes.discarded); refusals of wrong datasets: \(outcomes.refusals)"
        )
        XCTAssertGreaterThan(outcomes.delivered, outcomes.lost)
        XCTAssertGreaterThan(outcomes.refusals, 0, "no schedule exercised a worker with another dataset")
        XCTAssertGreaterThan(outcomes.discarded, 0, "no schedule exercised a late answer")
    }

    /// A fixed scenario, step by step: the directives are exactly the expected ones.
    func testAWorkerBackWithAnotherDatasetIsRefusedAndTheReplicaAnswers() {
        let dataset = RunDataset(
            datasetID: "good", shape: ImageShape(channels: 1, height: 4, width: 4), xflip: false,
            shardImageCounts: [10, 11])
        let identity = WorkerIdentity(
            datasetID: "good", shape: dataset.shape, xflip: false, datasetShards: 2, shards: [0: 10, 1: 11])
        var machine = Failover(
            dataset: dataset, names: ["a:1", "b:1"], connected: [0: identity, 1: identity],
            policy: FailoverPolicy(deadline: 100, retryInterval: 5), now: 0)
        let r = Failover.RequestID(1)
        // Shard 0 goes to worker 0 first (rotation by shard).
        XCTAssertEqual(machine.handle(.submit(r, shard: 0), now: 0), [.send(.init(1), request: r, shard: 0, worker: 0)])
        let down = machine.handle(.disconnected(0, reason: "connection closed"), now: 1)
        XCTAssertTrue(down.contains(.disconnect(0)))
        XCTAssertTrue(down.contains(.send(.init(2), request: r, shard: 0, worker: 1)))
        // Worker 0 comes back serving another dataset of the same shape: refused, logged once, never used.
        XCTAssertEqual(machine.handle(.tick, now: 6).filter { $0 == .connect(0) }, [.connect(0)])
        var other = identity
        other.datasetID = "other"
        let refused = machine.handle(.connected(0, other), now: 6.1)
        XCTAssertTrue(refused.contains(.disconnect(0)))
        XCTAssertEqual(refused.filter { if case .log = $0 { return true } else { return false } }.count, 1)
        XCTAssertEqual(machine.handle(.tick, now: 11.2).filter { $0 == .connect(0) }, [.connect(0)])
        XCTAssertFalse(
            machine.handle(.connected(0, other), now: 11.3).contains { if case .log = $0 { return true } else { return false } },
            "the same refusal is logged once")
        // The late answer of the first attempt is dropped; the replica's is delivered.
        XCTAssertEqual(machine.handle(.answered(.init(1)), now: 12), [.discard(.init(1))])
        XCTAssertEqual(machine.handle(.answered(.init(2)), now: 12), [.deliver(r, attempt: .init(2))])
        XCTAssertEqual(machine.liveWorkers, [1])
    }

    func testAWorkerThatJoinsLateOrWithAnotherPlacementIsRoutedWhatItHoldsNow() {
        let dataset = RunDataset(
            datasetID: "d", shape: ImageShape(channels: 1, height: 4, width: 4), xflip: true,
            shardImageCounts: [4, 4, 4])
        func identity(_ shards: [Int]) -> WorkerIdentity {
            WorkerIdentity(
                datasetID: "d", shape: dataset.shape, xflip: true, datasetShards: 3,
                shards: Dictionary(uniqueKeysWithValues: shards.map { ($0, 4) }))
        }
        var machine = Failover(
            dataset: dataset, names: ["a", "b", "c"], connected: [0: identity([0, 1]), 1: identity([2])],
            policy: FailoverPolicy(), now: 0)
        // Worker 2 was down at the start; it joins holding shard 1, and worker 1 comes back holding 0 instead of 2.
        _ = machine.handle(.tick, now: 5)
        _ = machine.handle(.connected(2, identity([1])), now: 5)
        _ = machine.handle(.disconnected(1, reason: "restarted"), now: 6)
        _ = machine.handle(.tick, now: 11)
        _ = machine.handle(.connected(1, identity([0])), now: 11)
        XCTAssertEqual(machine.router.holders, [[0, 1], [0, 2], []])
        _ = machine.handle(.disconnected(0, reason: "killed"), now: 12)
        let r0 = machine.handle(.submit(.init(1), shard: 0), now: 12)
        XCTAssertEqual(r0, [.send(.init(1), request: .init(1), shard: 0, worker: 1)])
        let r1 = machine.handle(.submit(.init(2), shard: 1), now: 12)
        XCTAssertEqual(r1, [.send(.init(2), request: .init(2), shard: 1, worker: 2)])
        // Shard 2 has no holder any more: the down workers are asked once, then it is lost.
        let r2 = machine.handle(.submit(.init(3), shard: 2), now: 12)
        XCTAssertEqual(r2, [.connect(0)])
        let lost = machine.handle(.connectFailed(0, reason: "refused"), now: 12.5)
        guard case .fail(.init(3), .shardsLost(let shards, _)) = lost.last else {
            return XCTFail("expected shard 2 lost, got \(lost)")
        }
        XCTAssertEqual(shards, [2])
    }

    func testAHungWorkerIsNoticedByItsMissedHeartbeatLongBeforeTheDeadline() {
        let dataset = RunDataset(
            datasetID: "d", shape: ImageShape(channels: 1, height: 2, width: 2), xflip: false, shardImageCounts: [1])
        let identity = WorkerIdentity(datasetID: "d", shape: dataset.shape, xflip: false, datasetShards: 1, shards: [0: 1])
        var policy = FailoverPolicy(deadline: 300, retryInterval: 5)
        policy.heartbeatInterval = 2
        policy.heartbeatTimeout = 6
        var machine = Failover(dataset: dataset, names: ["a", "b"], connected: [0: identity, 1: identity], policy: policy, now: 0)
        XCTAssertEqual(
            machine.handle(.submit(.init(1), shard: 0), now: 0), [.send(.init(1), request: .init(1), shard: 0, worker: 0)])
        XCTAssertEqual(machine.handle(.tick, now: 2), [.probe(0), .probe(1)])
        XCTAssertEqual(machine.handle(.healthAnswered(1), now: 2.01), [])
        XCTAssertEqual(machine.handle(.tick, now: 5), [.probe(1)])
        let dead = machine.handle(.tick, now: 8)
        XCTAssertTrue(dead.contains(.disconnect(0)), "\(dead)")
        XCTAssertTrue(dead.contains(.send(.init(2), request: .init(1), shard: 0, worker: 1)), "\(dead)")
    }

    func testAnInvalidArgumentStopsTheRequestAndACancelReachesTheWorker() {
        let dataset = RunDataset(
            datasetID: "d", shape: ImageShape(channels: 1, height: 2, width: 2), xflip: false, shardImageCounts: [1])
        let identity = WorkerIdentity(datasetID: "d", shape: dataset.shape, xflip: false, datasetShards: 1, shards: [0: 1])
        var machine = Failover(dataset: dataset, names: ["a", "b"], connected: [0: identity, 1: identity], policy: FailoverPolicy(), now: 0)
        _ = machine.handle(.submit(.init(1), shard: 0), now: 0)
        let error = ClusterError.remote(worker: "a", message: "bad t", code: .invalidArgument)
        XCTAssertEqual(machine.handle(.refused(.init(1), .invalidRequest(error)), now: 1), [.fail(.init(1), error)])
        XCTAssertEqual(machine.liveWorkers, [0, 1], "a refused request does not take its worker down")
        _ = machine.handle(.submit(.init(2), shard: 0), now: 2)
        XCTAssertEqual(machine.handle(.cancel(.init(2)), now: 3), [.cancel(.init(2), worker: 0), .fail(.init(2), .cancelled)])
        XCTAssertEqual(machine.pendingCount, 0)
    }
}

/// One random cluster and fault schedule, run against the state machine with a fake clock.
struct Simulation {
    struct Tally {
        var delivered = 0, lost = 0, cancelled = 0, faults = 0, discarded = 0, refusals = 0
        mutating func add(_ o: Tally) {
            delivered += o.delivered
            lost += o.lost
            cancelled += o.cancelled
            faults += o.faults
            discarded += o.discarded
            refusals += o.refusals
        }
    }

    enum Mode { case healthy, nan, wrongDataset, slow }

    struct SimWorker {
        var alive = true
        var hung = false
        var mode = Mode.healthy
        var shards: Set<Int>
        /// The current connection's number; nil when not connected.
        var connection: Int?
        /// Never faulted during the whole schedule, healthy, connected from the start.
        var stable = true
    }

    enum Action {
        case machine(Failover.Event, connection: Int?, worker: Int)
        case fault(Int)
        case submit(Failover.RequestID, shard: Int)
        case cancel(Failover.RequestID)
        case tick
    }

    var rng: SplitMix
    let seed: UInt64
    let dataset: RunDataset
    var workers: [SimWorker]
    var machine: Failover
    var queue: [(time: Double, order: Int, action: Action)] = []
    var order = 0
    var now = 0.0
    var connections = 0
    /// The connection the coordinator holds to each worker (the world's may have died since).
    var registered: [Int?]
    var requests: [Failover.RequestID: Int] = [:]
    var cancelledByCaller: Set<Failover.RequestID> = []
    var results: [Failover.RequestID: Result<Double, ClusterError>] = [:]
    /// Answers sent by workers, by attempt, as the shell would hold them until delivered or discarded.
    var answers: [Failover.AttemptID: Double] = [:]
    var tally = Tally()
    let horizon = 60.0

    init(seed: UInt64) {
        self.seed = seed
        rng = SplitMix(state: seed &* 7919 &+ 1)
        let workerCount = Int.random(in: 2...5, using: &rng)
        let shardCount = Int.random(in: 1...7, using: &rng)
        let replication = Int.random(in: 1...min(3, workerCount), using: &rng)
        dataset = RunDataset(
            datasetID: "good", shape: ImageShape(channels: 1, height: 4, width: 4), xflip: false,
            shardImageCounts: (0..<shardCount).map { 10 + $0 })
        workers = (0..<workerCount).map { w in
            SimWorker(
                shards: Set(Placement.shards(forWorker: w, of: workerCount, shardCount: shardCount, replication: replication)))
        }
        var connected: [Int: WorkerIdentity] = [:]
        registered = Array(repeating: nil, count: workerCount)
        for w in workers.indices {
            if Int.random(in: 0..<6, using: &rng) == 0 {
                workers[w].alive = Bool.random(using: &rng)
                workers[w].stable = false
            } else {
                connections += 1
                workers[w].connection = connections
                registered[w] = connections
                connected[w] = Self.identity(of: workers[w], dataset)
            }
        }
        var policy = FailoverPolicy(deadline: 30, retryInterval: 5)
        policy.heartbeatInterval = 2
        policy.heartbeatTimeout = 6
        machine = Failover(
            dataset: dataset, names: workers.indices.map { "w\($0)" }, connected: connected, policy: policy, now: 0)
        let requestCount = Int.random(in: 1...25, using: &rng)
        for i in 0..<requestCount {
            let id = Failover.RequestID(UInt64(i + 1))
            let shard = Int.random(in: 0..<shardCount, using: &rng)
            requests[id] = shard
            let at = Double.random(in: 0..<horizon, using: &rng)
            schedule(at, .submit(id, shard: shard))
            if Int.random(in: 0..<12, using: &rng) == 0 {
                schedule(at + Double.random(in: 0..<3, using: &rng), .cancel(id))
            }
        }
        for _ in 0..<Int.random(in: 0...8, using: &rng) {
            schedule(Double.random(in: 0..<horizon, using: &rng), .fault(Int.random(in: 0..<workerCount, using: &rng)))
        }
        var t = 0.5
        while t < horizon + 200 {
            schedule(t, .tick)
            t += 0.5
        }
    }

    static func identity(of worker: SimWorker, _ dataset: RunDataset) -> WorkerIdentity {
        WorkerIdentity(
            datasetID: worker.mode == .wrongDataset ? "other" : dataset.datasetID, shape: dataset.shape,
            xflip: dataset.xflip, datasetShards: dataset.shardImageCounts.count,
            shards: Dictionary(uniqueKeysWithValues: worker.shards.map { ($0, dataset.shardImageCounts[$0]) }))
    }

    /// The fault-free answer of a request: any sound holder gives these bits.
    static func truth(_ id: Failover.RequestID, shard: Int) -> Double { Double(id.value) * 1000 + Double(shard) + 0.25 }

    mutating func schedule(_ time: Double, _ action: Action) {
        order += 1
        queue.append((time, order, action))
    }

    mutating func run() throws {
        while results.count < requests.count {
            guard let next = queue.indices.min(by: { (queue[$0].time, queue[$0].order) < (queue[$1].time, queue[$1].order) })
            else {
                throw failure("the schedule ran out with \(requests.count - results.count) requests unresolved")
            }
            let item = queue.remove(at: next)
            now = item.time
            switch item.action {
            case .tick: try apply(machine.handle(.tick, now: now))
            case .submit(let id, let shard): try apply(machine.handle(.submit(id, shard: shard), now: now))
            case .cancel(let id):
                guard results[id] == nil else { break }
                cancelledByCaller.insert(id)
                try apply(machine.handle(.cancel(id), now: now))
            case .fault(let w): try inject(w)
            case .machine(let event, let connection, let worker):
                // As the coordinator's shell: a connection is registered when its handshake completes and
                // unregistered when closed; events of a connection it no longer holds never reach the machine,
                // except answers read just before the close (a race the machine must absorb).
                switch event {
                case .connected: registered[worker] = connection
                case .disconnected:
                    guard registered[worker] == connection else { continue }
                    registered[worker] = nil
                case .connectFailed: break
                default:
                    if registered[worker] != connection {
                        guard case .answered = event, Int.random(in: 0..<4, using: &rng) == 0 else { continue }
                    }
                }
                try apply(machine.handle(event, now: now))
            }
        }
        for (id, shard) in requests {
            switch results[id]! {
            case .success(let value):
                guard value.bitPattern == Self.truth(id, shard: shard).bitPattern else {
                    throw failure("request \(id) on shard \(shard) delivered \(value), not the fault-free answer")
                }
                tally.delivered += 1
            case .failure(.cancelled):
                guard cancelledByCaller.contains(id) else { throw failure("request \(id) cancelled by nobody") }
                tally.cancelled += 1
            case .failure(.shardsLost(let shards, _)):
                guard shards.contains(shard) else { throw failure("request \(id): lost \(shards), not its shard \(shard)") }
                if workers.contains(where: { $0.stable && $0.shards.contains(shard) }) {
                    throw failure("request \(id) on shard \(shard) lost although a stable replica held it")
                }
                tally.lost += 1
            case .failure(let error):
                throw failure("request \(id) failed with \(error)")
            }
        }
    }

    func failure(_ message: String) -> Error {
        NSError(domain: "FailoverSchedule", code: 1, userInfo: [NSLocalizedDescriptionKey: "seed \(seed): \(message)"])
    }

    mutating func inject(_ w: Int) throws {
        tally.faults += 1
        workers[w].stable = false
        switch Int.random(in: 0..<9, using: &rng) {
        case 0:  // crash: the peer's kernel resets the connection
            workers[w].alive = false
            closeConnection(w, notify: true)
        case 1:  // vanish: power lost, no reset; only missed heartbeats tell
            workers[w].alive = false
            workers[w].connection = nil
        case 2: workers[w].hung = true
        case 3: workers[w].hung = false
        case 4:  // a bad frame: the MAC check closes the connection; the process is fine
            closeConnection(w, notify: true)
        case 5: workers[w].mode = .nan
        case 6: workers[w].mode = .slow
        default:  // restarted: another dataset, another placement, or as it was
            closeConnection(w, notify: true)
            workers[w].alive = true
            workers[w].hung = false
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: workers[w].mode = .wrongDataset
            case 1:
                workers[w].mode = .healthy
                workers[w].shards = Set((0..<dataset.shardImageCounts.count).filter { _ in Bool.random(using: &rng) })
            default: workers[w].mode = .healthy
            }
        }
    }

    /// The world closes worker `w`'s connection; `notify`: the coordinator's socket sees it close.
    mutating func closeConnection(_ w: Int, notify: Bool) {
        guard let connection = workers[w].connection else { return }
        workers[w].connection = nil
        if notify {
            schedule(
                now + Double.random(in: 0.001..<0.05, using: &rng),
                .machine(.disconnected(w, reason: "connection closed"), connection: connection, worker: w))
        }
    }

    mutating func apply(_ directives: [Failover.Directive]) throws {
        for directive in directives {
            switch directive {
            case .connect(let w):
                let worker = workers[w]
                if worker.alive && !worker.hung {
                    connections += 1
                    workers[w].connection = connections
                    let event = Failover.Event.connected(w, Self.identity(of: worker, dataset))
                    schedule(now + Double.random(in: 0.01..<0.5, using: &rng), .machine(event, connection: connections, worker: w))
                } else {
                    // Refused at once when dead; a hung process accepts but never completes the handshake.
                    let delay = worker.alive ? 10 : 0.01
                    schedule(now + delay, .machine(.connectFailed(w, reason: "cannot connect"), connection: nil, worker: w))
                }
            case .send(let attempt, let request, let shard, let w):
                let worker = workers[w]
                guard let connection = worker.connection else { break }  // the machine will hear of the loss
                guard worker.mode != .wrongDataset else { throw failure("sent \(attempt) to \(w), refused for its dataset") }
                guard worker.shards.contains(shard) else {
                    throw failure("sent shard \(shard) to worker \(w), which holds \(worker.shards.sorted()) now")
                }
                guard worker.alive, !worker.hung else { break }
                let delay = worker.mode == .slow ? 400 : Double.random(in: 0.01..<2, using: &rng)
                let value = worker.mode == .nan ? Double.nan : Self.truth(request, shard: shard)
                // The shell checks every answer before the machine sees it; a non-finite one is the worker's fault.
                let event: Failover.Event
                if value.isFinite {
                    answers[attempt] = value
                    event = .answered(attempt)
                } else {
                    event = .refused(attempt, .worker("answered with non-finite partial sums"))
                }
                schedule(now + delay, .machine(event, connection: connection, worker: w))
            case .probe(let w):
                let worker = workers[w]
                guard let connection = worker.connection, worker.alive, !worker.hung else { break }
                schedule(
                    now + Double.random(in: 0.001..<0.1, using: &rng),
                    .machine(.healthAnswered(w), connection: connection, worker: w))
            case .disconnect(let w):
                registered[w] = nil
                closeConnection(w, notify: false)
                if case .wrongDataset = workers[w].mode { tally.refusals += 1 }
            case .cancel: break
            case .deliver(let id, let attempt):
                guard results[id] == nil else { throw failure("request \(id) resolved twice") }
                guard let value = answers.removeValue(forKey: attempt) else {
                    throw failure("delivered \(attempt), which no worker answered")
                }
                results[id] = .success(value)
            case .discard(let attempt):
                answers[attempt] = nil
                tally.discarded += 1
            case .fail(let id, let error):
                guard results[id] == nil else { throw failure("request \(id) resolved twice") }
                results[id] = .failure(error)
            case .log: break
            }
        }
    }
}
