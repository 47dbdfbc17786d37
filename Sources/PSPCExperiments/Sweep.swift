import Foundation
import PSPCCore
import PSPCData

/// A denoiser over a batch `[count, C, H, W]` at one t; `progress(done)` after each part of the batch.
public typealias BatchDenoiser =
    @Sendable (_ z: [Double], _ t: Double, _ progress: @escaping @Sendable (Int) -> Void) async throws -> [Double]

/// A forward or reverse sweep (docs/science.md section 6): every variant, the network included, evaluated on the
/// same queries at each t of a grid, and each compared with the network and with x0.
///
/// The queries of t_index i are `z/tII.npy`, float32, and every variant sees exactly those values. A
/// variant's output at t_index i is one unit, `outputs/tII/<slug>.npy`, written atomically when done; a
/// re-run skips finished units, and the results are computed from the files alone, so a resumed run writes
/// the same bytes as an uninterrupted one.
public struct Sweep: Sendable {
    public enum Kind: String, Sendable {
        case forward = "sweep-forward"
        case reverse = "sweep-reverse"
    }

    public let kind: Kind
    public let run: RunDirectory
    public let shape: ImageShape
    public let grid: [Double]
    /// The networks first (one or several; the first is the one `mse_to_network` and a reverse sweep's
    /// trajectories refer to), then the methods.
    public let variants: [Variant]
    /// The networks among the variants, in order.
    public var networks: [Variant] { Array(variants.prefix { $0.isNetwork }) }
    /// The network the results' `mse_to_network` is measured against.
    public var primaryNetwork: Variant { variants[0] }

    public init(kind: Kind, run: RunDirectory, shape: ImageShape, grid: [Double], variants: [Variant]) throws {
        guard !grid.isEmpty, grid.allSatisfy({ $0 > 0 && $0.isFinite }) else {
            throw PSPCError.invalidArgument("a sweep needs a grid of positive, finite t")
        }
        let networkCount = variants.prefix { $0.isNetwork }.count
        guard networkCount >= 1, variants.dropFirst(networkCount).allSatisfy({ !$0.isNetwork }) else {
            throw PSPCError.invalidArgument("a sweep's variants are the networks first, then engine methods")
        }
        try Variant.checkDistinct(variants, noun: "variant")
        self.kind = kind
        self.run = run
        self.shape = shape
        self.grid = grid
        self.variants = variants
    }

    public static func tName(_ index: Int) -> String { String(format: "t%02d", index) }

    public func queriesFile(_ index: Int) -> String { "z/\(Self.tName(index)).npy" }

    public func outputFile(_ index: Int, _ variant: Variant) -> String {
        "outputs/\(Self.tName(index))/\(variant.slug).npy"
    }

    // MARK: Queries

    /// The clean images of t index `i`: `x0/tNN.npy` in a forward sweep with independent draws, else `x0.npy`
    /// (shared draws, and a reverse sweep's final samples).
    public func x0File(_ i: Int) -> String {
        let own = "x0/\(Self.tName(i)).npy"
        return FileManager.default.fileExists(atPath: run.file(own)) ? own : "x0.npy"
    }

    /// The seed of t index `i`'s images in a forward sweep with independent draws.
    public static func drawSeed(_ seed: UInt64, t index: Int) -> UInt64 {
        NormalNoise.mix(seed ^ NormalNoise.mix(UInt64(index) &+ 0x7F4A_7C15))
    }

    /// Forward process with independent draws: t index i has its own images `x0[i]` (`x0/tNN.npy`, drawn with
    /// `drawSeed(seed, t: i)`) and its own eps (stream (i + 1) * 2^32 + query), so the queries of different t
    /// share nothing and an average over t is one of independent samples.
    public func writeIndependentForwardQueries(x0: [[Double]], seed: UInt64) throws {
        precondition(x0.count == grid.count)
        let dim = shape.dimension
        let noise = NormalNoise(seed: seed)
        for (i, t) in grid.enumerated() where !FileManager.default.fileExists(atPath: run.file(queriesFile(i))) {
            let count = x0[i].count / dim
            let clean = Metrics.storable(x0[i])
            var z = clean
            for q in 0..<count {
                let eps = noise.normals(stream: (UInt64(i) + 1) << 32 | UInt64(q), count: dim)
                for d in 0..<dim { z[q * dim + d] += t * eps[d] }
            }
            try run.writeNPY(Self.npy(clean, count: count, shape: shape), to: "x0/\(Self.tName(i)).npy")
            try run.writeNPY(Self.npy(Metrics.storable(z), count: count, shape: shape), to: queriesFile(i))
        }
    }

    /// Forward process with shared draws: x0 (`[N, C, H, W]`) is stored as `x0.npy`, and z = x0 + t eps with eps
    /// drawn per (seed, query), the same eps at every t (common random numbers make the curves over t smooth, but
    /// the t are not independent samples).
    public func writeForwardQueries(x0: [Double], seed: UInt64) throws {
        let dim = shape.dimension
        let count = x0.count / dim
        let x0 = Metrics.storable(x0)
        try run.writeNPY(Self.npy(x0, count: count, shape: shape), to: "x0.npy")
        let noise = NormalNoise(seed: seed)
        let eps = (0..<count).flatMap { noise.normals(stream: UInt64($0), count: dim) }
        for (i, t) in grid.enumerated() where !FileManager.default.fileExists(atPath: run.file(queriesFile(i))) {
            var z = x0
            for j in z.indices { z[j] += t * eps[j] }
            try run.writeNPY(Self.npy(Metrics.storable(z), count: count, shape: shape), to: queriesFile(i))
        }
    }

    /// Reverse process: `count` deterministic Heun trajectories of the network from seeded noise on the grid
    /// (which must be the EDM grid of the run); the state at each grid t is that t's queries and the final
    /// sample is x0. One unit: nothing is written until every trajectory has finished.
    public func writeReverseQueries(
        count: Int, seed: UInt64, network: BatchDenoiser, progress: @escaping @Sendable (Int) -> Void
    ) async throws {
        guard !run.hasPart("trajectories") else { return }
        let dim = shape.dimension
        let noise = NormalNoise(seed: seed)
        var z = (0..<count).flatMap { noise.normals(stream: UInt64($0), count: dim) }.map { $0 * grid[0] }
        var states: [[Double]] = []
        let times = grid + [0]
        var evaluations = 0
        let tick: @Sendable (Int) -> Void = { _ in }
        for i in 0..<grid.count {
            states.append(z)
            let t = times[i], tNext = times[i + 1]
            let denoised = try await network(z, t, tick)
            evaluations += 1
            progress(evaluations * count)
            var d = [Double](repeating: 0, count: z.count)
            for j in z.indices { d[j] = (z[j] - denoised[j]) / t }
            if tNext > 0 {
                // EDM's deterministic Heun step (Karras et al. 2022, Algorithm 1 with S_churn = 0).
                var zNext = z
                for j in z.indices { zNext[j] = z[j] + (tNext - t) * d[j] }
                let denoisedNext = try await network(zNext, tNext, tick)
                evaluations += 1
                progress(evaluations * count)
                for j in z.indices {
                    let dPrime = (zNext[j] - denoisedNext[j]) / tNext
                    z[j] += (tNext - t) * (0.5 * d[j] + 0.5 * dPrime)
                }
            } else {
                for j in z.indices { z[j] += (tNext - t) * d[j] }
            }
        }
        for (i, state) in states.enumerated() {
            try run.writeNPY(Self.npy(Metrics.storable(state), count: count, shape: shape), to: queriesFile(i))
        }
        try run.writeNPY(Self.npy(Metrics.storable(z), count: count, shape: shape), to: "x0.npy")
        try run.writePart(Array("done\n".utf8), name: "trajectories")
    }

    /// Network evaluations a reverse sweep's trajectories take per trajectory (Heun: two per step but the last).
    public var reverseEvaluations: Int { 2 * grid.count - 1 }

    // MARK: Evaluation

    /// What an `evaluate` call computed: engine-method outputs (queries x variants, the network not counted)
    /// and the seconds they took.
    public struct Work: Sendable {
        public var queryMethods = 0
        public var seconds = 0.0
        public var queriesPerSecond: Double { seconds > 0 ? Double(queryMethods) / seconds : 0 }
    }

    /// `evaluate(engine:networks:progress:)` with one network.
    public func evaluate(
        engine: DenoisingEngine?, network: @escaping BatchDenoiser, progress: @escaping @Sendable (Int, Int) -> Void
    ) async throws -> Work {
        try await evaluate(engine: engine, networks: [network], progress: progress)
    }

    /// Evaluates every unfinished (t, variant) on the stored queries; `networks` answer for the network variants,
    /// in their order. `progress(done, total)` counts queries over all units, finished ones included. Each
    /// method's output is computed once, whatever the number of networks it is compared with.
    public func evaluate(
        engine: DenoisingEngine?, networks denoisers: [BatchDenoiser], progress: @escaping @Sendable (Int, Int) -> Void
    ) async throws -> Work {
        guard denoisers.count == networks.count else {
            throw PSPCError.invalidArgument("the sweep has \(networks.count) networks, \(denoisers.count) denoisers were given")
        }
        var work = Work()
        let count = try queryCount()
        let total = grid.count * variants.count * count
        var done = 0
        progress(0, total)
        for i in grid.indices {
            let z = try Self.readImages(run.file(queriesFile(i)), shape: shape)
            for (v, variant) in variants.enumerated() {
                let file = outputFile(i, variant)
                if FileManager.default.fileExists(atPath: run.file(file)) {
                    done += count
                    progress(done, total)
                    continue
                }
                let base = done
                let report: @Sendable (Int) -> Void = { progress(base + $0, total) }
                let start = Date()
                let output: [Double]
                if let method = variant.engineMethod {
                    guard let engine else {
                        throw PSPCError.invalidArgument("\(variant.label) needs the training set (--data or --cluster)")
                    }
                    output = try await engine.denoise(z, t: grid[i], method: method, progress: report).values
                    work.queryMethods += count
                    work.seconds += Date().timeIntervalSince(start)
                } else {
                    output = try await denoisers[v](z, grid[i], report)
                }
                guard output.count == z.count else {
                    throw PSPCError.shapeMismatch("\(variant.label) returned \(output.count) values for \(z.count)")
                }
                if let bad = output.firstIndex(where: { !$0.isFinite }) {
                    throw PSPCError.nonFiniteInput(
                        "\(variant.label) returned a non-finite value at t = \(grid[i]) (query \(bad / shape.dimension))")
                }
                try run.writeNPY(Self.npy(output, count: count, shape: shape), to: file)
                done += count
                progress(done, total)
            }
        }
        return work
    }

    /// Per-query squared errors of `output` against `reference`, each the mean over the query's values.
    static func perQueryMSE(_ output: [Double], _ reference: [Double], dimension: Int) -> [Double] {
        stride(from: 0, to: output.count, by: dimension).map { start in
            Metrics.mse(output[start..<(start + dimension)], reference[start..<(start + dimension)])
        }
    }

    /// The errors of every variant at every t, from the stored files, with 95 % bootstrap intervals over queries
    /// (2000 resamples, seed 0), and each query's errors (`perQuery`, in row order).
    public func results() throws -> [SweepRow] { try resultsWithQueries().rows }

    public func resultsWithQueries() throws -> (rows: [SweepRow], perQuery: [(network: [Double], x0: [Double])]) {
        let bootstrap = Bootstrap()
        var rows: [SweepRow] = []
        var perQuery: [(network: [Double], x0: [Double])] = []
        for i in grid.indices {
            let x0Name = x0File(i)
            let x0 = try Self.readImages(run.file(x0Name), shape: shape)
            let reference = try Self.readImages(run.file(outputFile(i, primaryNetwork)), shape: shape)
            guard reference.count == x0.count else {
                throw DataError.invalid("\(run.file(outputFile(i, primaryNetwork))) does not match \(x0Name) in size")
            }
            for variant in variants {
                let path = run.file(outputFile(i, variant))
                let output = try Self.readImages(path, shape: shape)
                guard output.count == x0.count else { throw DataError.invalid("\(path) does not match \(x0Name) in size") }
                let toNetwork = Self.perQueryMSE(output, reference, dimension: shape.dimension)
                let toX0 = Self.perQueryMSE(output, x0, dimension: shape.dimension)
                perQuery.append((toNetwork, toX0))
                rows.append(
                    SweepRow(
                        tIndex: i, t: grid[i], method: variant.method, param: variant.param, label: variant.label,
                        mseToNetwork: Metrics.mse(output, reference), mseToX0: Metrics.mse(output, x0),
                        queries: x0.count / shape.dimension, mseToNetworkInterval: bootstrap.mean(toNetwork),
                        mseToX0Interval: bootstrap.mean(toX0)))
            }
        }
        return (rows, perQuery)
    }

    /// Each variant's error to each network it is not, per t, with 95 % bootstrap intervals over queries: the
    /// network-vs-network MSE beside every method's MSE to every network (empty with one network).
    public func networkComparisons() throws -> [NetworkComparison] {
        let networks = self.networks
        guard networks.count > 1 else { return [] }
        let bootstrap = Bootstrap()
        var rows: [NetworkComparison] = []
        for i in grid.indices {
            let outputs = try variants.map { variant -> [Double] in
                let path = run.file(outputFile(i, variant))
                return try Self.readImages(path, shape: shape)
            }
            guard let count = outputs.first?.count, outputs.allSatisfy({ $0.count == count }) else {
                throw DataError.invalid("the outputs of \(Self.tName(i)) differ in size")
            }
            for (n, network) in networks.enumerated() {
                for (v, variant) in variants.enumerated() where v != n {
                    let errors = Self.perQueryMSE(outputs[v], outputs[n], dimension: shape.dimension)
                    rows.append(
                        NetworkComparison(
                            tIndex: i, t: grid[i], label: variant.label, network: network.label,
                            mse: Metrics.mse(outputs[v], outputs[n]), interval: bootstrap.mean(errors),
                            queries: errors.count))
                }
            }
        }
        return rows
    }

    /// Writes results.csv, results.json, per-query.csv (each query's errors), ratios.csv (the paired ratios of
    /// `PairedRatios`) and, with several networks, networks.csv (`networkComparisons`); returns the rows.
    @discardableResult
    public func writeResults() throws -> [SweepRow] {
        if networks.count > 1 {
            try run.writeText(NetworkComparison.csv(try networkComparisons()), to: "networks.csv")
        }
        let (rows, perQuery) = try resultsWithQueries()
        var text = "t_index,label,query,mse_to_network,mse_to_x0\n"
        for (row, errors) in zip(rows, perQuery) {
            for q in errors.network.indices {
                text += CSVText.line([
                    String(row.tIndex), row.label, String(q), RunNumber.text(errors.network[q]),
                    RunNumber.text(errors.x0[q]),
                ])
            }
        }
        try run.writeText(text, to: "per-query.csv")
        try run.writeText(SweepResults.csv(rows), to: "results.csv")
        try run.writeText(PairedRatios.csv(PairedRatios.compute(rows: rows, perQuery: perQuery)), to: "ratios.csv")
        try run.writeJSON(SweepResults.json(rows, kind: kind.rawValue, grid: grid), to: "results.json")
        return rows
    }

    func queryCount() throws -> Int {
        let array = try NPY.read(path: run.file(queriesFile(0)))
        guard let count = array.shape.first else { throw DataError.invalid("\(run.file(queriesFile(0))): no images") }
        return count
    }

    // MARK: Arrays

    static func npy(_ values: [Double], count: Int, shape: ImageShape) -> NPYArray {
        NPYArray(shape: [count, shape.channels, shape.height, shape.width], data: .float32(values.map(Float.init)))
    }

    /// A `[N, C, H, W]` array of images of `shape`, as float64.
    public static func readImages(_ path: String, shape: ImageShape) throws -> [Double] {
        let array = try NPY.read(path: path)
        guard array.shape.count == 4, Array(array.shape[1...]) == [shape.channels, shape.height, shape.width] else {
            throw DataError.invalid("\(path): holds \(array.shape), expected [N, \(shape.channels), \(shape.height), \(shape.width)]")
        }
        return array.asDoubles()
    }
}
