import Foundation
import PSPCCore
import PSPCData

/// Patch-size and lambda calibration (docs/science.md section 6): at each t, the pspc-square size, the pspc-flex
/// lambda and the LS / ELS window size whose output is closest to the network's (MSE), over one or more sweeps on
/// the same grid.
public enum Calibration {
    /// One candidate's error at one t (with several sweeps: their query-weighted mean).
    public struct Candidate: Sendable, Equatable {
        public var tIndex: Int
        public var t: Double
        public var method: String
        public var param: Variant.Param
        public var mseToNetwork: Double

        public init(tIndex: Int, t: Double, method: String, param: Variant.Param, mseToNetwork: Double) {
            self.tIndex = tIndex
            self.t = t
            self.method = method
            self.param = param
            self.mseToNetwork = mseToNetwork
        }
    }

    /// Which sweeps to use.
    public enum Selection: String, Sendable, CaseIterable {
        case forward, reverse, both
    }

    /// The methods calibrated and the schedule file each one's choice is written to (read back by
    /// `--schedule`, `--lambda-schedule` and `--scale-schedule`).
    public static let scheduleFiles: [(method: String, file: String)] = [
        ("pspc-square", "patch-schedule.json"), ("pspc-flex", "lambda-schedule.json"), ("ls", "ls-schedule.json"),
        ("els", "els-schedule.json"),
    ]

    static let calibrated = Set(scheduleFiles.map(\.method))

    /// Every numeric candidate (a size or a lambda) of the calibrated methods in `sweeps` (each `(grid, rows)`),
    /// averaged over sweeps.
    public static func candidates(_ sweeps: [(grid: [Double], rows: [SweepRow])]) throws -> [Candidate] {
        guard let grid = sweeps.first?.grid else { throw DataError.invalid("calibration needs at least one sweep") }
        for sweep in sweeps where sweep.grid != grid {
            throw DataError.invalid("the sweeps' t grids differ (\(sweep.grid.count) and \(grid.count) points); calibrate sweeps of one grid")
        }
        // (tIndex, method, param) -> (weighted sum, weight), in first-seen order.
        var order: [String] = []
        var sums: [String: (candidate: Candidate, sum: Double, weight: Int)] = [:]
        for sweep in sweeps {
            for row in sweep.rows where calibrated.contains(row.method) {
                switch row.param {
                case .patchSize, .lambda: break
                default: continue
                }
                let key = "\(row.tIndex)|\(row.method)|\(row.param.text)"
                if sums[key] == nil {
                    order.append(key)
                    sums[key] = (
                        Candidate(tIndex: row.tIndex, t: row.t, method: row.method, param: row.param, mseToNetwork: 0),
                        0, 0
                    )
                }
                sums[key]!.sum += row.mseToNetwork * Double(row.queries)
                sums[key]!.weight += row.queries
            }
        }
        let all = order.map { key -> Candidate in
            var c = sums[key]!.candidate
            c.mseToNetwork = sums[key]!.sum / Double(max(sums[key]!.weight, 1))
            return c
        }
        // Candidates present in every sweep only: a size one sweep lacks cannot be compared fairly.
        let counts = Dictionary(grouping: sweeps.flatMap { s in s.rows.map { "\($0.tIndex)|\($0.method)|\($0.param.text)" } }) {
            $0
        }.mapValues(\.count)
        return all.filter { counts["\($0.tIndex)|\($0.method)|\($0.param.text)"] == sweeps.count }
            .sorted { ($0.tIndex, $0.method, $0.sortKey) < ($1.tIndex, $1.method, $1.sortKey) }
    }

    /// The whole-image candidates a sweep's empirical rows stand for, added where the sweep swept the method but not
    /// them: pspc-square s = H on H x H images (one crop covering the image), pspc-flex lambda = 1 (every mask the
    /// whole image) and LS / ELS windows of P = 2 max(H, W) - 1 (every window covers the image from any centre) all
    /// are the empirical denoiser exactly, so their errors are the empirical row's. A calibration whose candidates
    /// leave out the whole image can only pick a local answer.
    public static func addingWholeImage(
        _ rows: [SweepRow], height: Int, width: Int
    ) -> (rows: [SweepRow], added: [String]) {
        var out = rows
        var added: Set<String> = []
        let empirical = rows.filter { $0.method == "empirical" }
        let window = Variant.Param.patchSize(2 * max(height, width) - 1)
        let wholeImage: [(String, Variant.Param)] = [
            ("pspc-square", .patchSize(height)), ("pspc-flex", .lambda(1)), ("ls", window), ("els", window),
        ]
        for (method, param) in wholeImage {
            if method == "pspc-square" && height != width { continue }
            for e in empirical {
                let swept = rows.contains { $0.tIndex == e.tIndex && $0.method == method }
                let present = rows.contains { $0.tIndex == e.tIndex && $0.method == method && $0.param == param }
                guard swept && !present else { continue }
                // The label stays the empirical row's: its per-query errors (per-query.csv) are this candidate's.
                var row = e
                row.method = method
                row.param = param
                out.append(row)
                added.insert("\(method) \(param.text)")
            }
        }
        return (out, added.sorted())
    }

    /// The chosen candidate of each (t, method) judged on held-out sweeps: its error there, and the held-out
    /// minimiser (what an oracle would have picked on those queries).
    public struct HeldOut: Sendable, Equatable {
        public var chosen: Candidate
        public var heldOutMSE: Double
        public var heldOutBest: Candidate
    }

    /// `winners` (from the calibration sweeps) looked up in `heldOut` (candidates of other sweeps on the same
    /// grid); a winner the held-out sweeps do not hold is an error naming it.
    public static func evaluate(_ winners: [Candidate], on heldOut: [Candidate]) throws -> [HeldOut] {
        let bestHeldOut = best(heldOut)
        return try winners.map { c in
            guard let same = heldOut.first(where: { $0.tIndex == c.tIndex && $0.method == c.method && $0.param == c.param })
            else {
                throw DataError.invalid(
                    "the held-out sweeps lack \(c.method) \(c.param.text) at t = \(RunNumber.text(c.t)); sweep the same candidates")
            }
            let oracle = bestHeldOut.first { $0.tIndex == c.tIndex && $0.method == c.method }!
            return HeldOut(chosen: c, heldOutMSE: same.mseToNetwork, heldOutBest: oracle)
        }
    }

    /// held-out.csv: per (t, method) the chosen candidate, its in-sample and held-out errors, the held-out
    /// minimiser and its error, and the ratio held-out / held-out best (1 when the choice transfers).
    public static func writeHeldOut(_ results: [HeldOut], to run: RunDirectory) throws {
        var text = "t_index,t,method,chosen_param,mse_in_sample,mse_held_out,held_out_best_param,mse_held_out_best,ratio_to_held_out_best\n"
        for r in results {
            text += CSVText.line([
                String(r.chosen.tIndex), RunNumber.text(r.chosen.t), r.chosen.method, r.chosen.param.text,
                RunNumber.text(r.chosen.mseToNetwork), RunNumber.text(r.heldOutMSE), r.heldOutBest.param.text,
                RunNumber.text(r.heldOutBest.mseToNetwork), RunNumber.text(r.heldOutMSE / r.heldOutBest.mseToNetwork),
            ])
        }
        try run.writeText(text, to: "held-out.csv")
    }

    /// One sweep's per-query errors to the network, keyed by (t index, label), from its per-query.csv, with its rows
    /// (which map each candidate to its label).
    public struct QueryErrors: Sendable {
        public var rows: [SweepRow]
        public var mseToNetwork: [String: [Double]]

        public init(rows: [SweepRow], mseToNetwork: [String: [Double]]) {
            self.rows = rows
            self.mseToNetwork = mseToNetwork
        }

        public static func key(_ tIndex: Int, _ label: String) -> String { "\(tIndex)|\(label)" }

        /// The per-query errors of `run` (per-query.csv, header t_index,label,query,mse_to_network,mse_to_x0).
        public static func read(_ run: RunDirectory, rows: [SweepRow]) throws -> QueryErrors {
            let path = run.file("per-query.csv")
            let records = try CSVText.records(String(decoding: try FileIO.read(path), as: UTF8.self))
            guard records.first == ["t_index", "label", "query", "mse_to_network", "mse_to_x0"] else {
                throw DataError.corrupt(path: path, reason: "not a per-query.csv (header \(records.first ?? []))")
            }
            var errors: [String: [Double]] = [:]
            for (n, record) in records.dropFirst().enumerated() {
                guard record.count == 5, let t = Int(record[0]), let mse = Double(record[3]) else {
                    throw DataError.corrupt(path: path, reason: "row \(n + 1) is not t_index,label,query,mse_to_network,mse_to_x0")
                }
                errors[key(t, record[1]), default: []].append(mse)
            }
            return QueryErrors(rows: rows, mseToNetwork: errors)
        }
    }

    /// How often each candidate is the minimiser of its (t, method) over bootstrap resamples of the queries (the
    /// same resample for every candidate of a sweep; each sweep's queries resampled on their own; with several
    /// sweeps the query-weighted mean, as `candidates`). `candidates` orders the answer; its MSEs are kept.
    public static func winFractions(
        _ candidates: [Candidate], sweeps: [QueryErrors], bootstrap: Bootstrap = Bootstrap()
    ) throws -> [(candidate: Candidate, winFraction: Double)] {
        var out: [(candidate: Candidate, winFraction: Double)] = []
        let groups = Dictionary(grouping: candidates.indices) { "\(candidates[$0].tIndex)|\(candidates[$0].method)" }
        var wins = [Int](repeating: 0, count: candidates.count)
        for (_, members) in groups {
            // Per sweep and member: its per-query errors.
            var perSweep: [[[Double]]] = []
            for sweep in sweeps {
                let lists = try members.map { m -> [Double] in
                    let c = candidates[m]
                    guard let row = sweep.rows.first(where: { $0.tIndex == c.tIndex && $0.method == c.method && $0.param == c.param }),
                        let errors = sweep.mseToNetwork[QueryErrors.key(c.tIndex, row.label)]
                    else {
                        throw DataError.invalid("no per-query errors of \(c.method) \(c.param.text) at t index \(c.tIndex)")
                    }
                    return errors
                }
                perSweep.append(lists)
            }
            // sums[r][j]: member j's summed error over resample r, all sweeps.
            var sums = [[Double]](repeating: [Double](repeating: 0, count: members.count), count: bootstrap.resamples)
            for (s, lists) in perSweep.enumerated() {
                let count = lists[0].count
                guard lists.allSatisfy({ $0.count == count }) else {
                    throw DataError.invalid("the candidates of one t hold different numbers of per-query errors")
                }
                bootstrap.forEachResample(count: count, stream: UInt64(s)) { r, indices in
                    for (j, list) in lists.enumerated() { sums[r][j] += indices.reduce(0) { $0 + list[$1] } }
                }
            }
            for r in 0..<bootstrap.resamples {
                // Ties go to the first (smaller) candidate, as in `best`.
                var winner = 0
                for j in 1..<members.count where sums[r][j] < sums[r][winner] { winner = j }
                wins[members[winner]] += 1
            }
        }
        // Counted, then divided once: 2000 of 2000 resamples read 1, not a sum of 2000 rounded 1/2000s.
        for (i, c) in candidates.enumerated() { out.append((c, Double(wins[i]) / Double(bootstrap.resamples))) }
        return out
    }

    /// wins.csv: every candidate with its error and the fraction of bootstrap resamples of the queries on which
    /// it is the minimiser of its (t, method).
    public static func writeWins(_ wins: [(candidate: Candidate, winFraction: Double)], to run: RunDirectory) throws {
        var text = "t_index,t,method,param,mse_to_network,win_fraction\n"
        for (c, w) in wins {
            text += CSVText.line([
                String(c.tIndex), RunNumber.text(c.t), c.method, c.param.text, RunNumber.text(c.mseToNetwork),
                RunNumber.text(w),
            ])
        }
        try run.writeText(text, to: "wins.csv")
    }

    /// The minimiser per (t, method); ties go to the smaller patch or lambda.
    public static func best(_ candidates: [Candidate]) -> [Candidate] {
        var best: [Candidate] = []
        for c in candidates {
            if let last = best.last, last.tIndex == c.tIndex, last.method == c.method {
                if c.mseToNetwork < last.mseToNetwork { best[best.count - 1] = c }
            } else {
                best.append(c)
            }
        }
        return best
    }

    /// Writes calibration.csv, best.csv and the schedule files of the methods present (`scheduleFiles`).
    public static func write(_ candidates: [Candidate], grid: [Double], to run: RunDirectory) throws -> [Candidate] {
        var text = "t_index,t,method,param,mse_to_network\n"
        for c in candidates {
            text += CSVText.line([String(c.tIndex), RunNumber.text(c.t), c.method, c.param.text, RunNumber.text(c.mseToNetwork)])
        }
        try run.writeText(text, to: "calibration.csv")
        let winners = best(candidates)
        var bestText = "t_index,t,method,best_param,mse_to_network\n"
        for c in winners {
            bestText += CSVText.line([String(c.tIndex), RunNumber.text(c.t), c.method, c.param.text, RunNumber.text(c.mseToNetwork)])
        }
        try run.writeText(bestText, to: "best.csv")
        for (method, file) in scheduleFiles {
            let chosen = winners.filter { $0.method == method }
            guard !chosen.isEmpty else { continue }
            guard chosen.count == grid.count else {
                throw DataError.invalid("\(method) was not swept at every t of the grid; cannot write \(file)")
            }
            let values: JSONValue = .array(chosen.map { $0.param.json })
            try run.writeJSON(.object([("t", .doubles(chosen.map(\.t))), ("values", values)]), to: file)
        }
        return winners
    }
}

extension Calibration.Candidate {
    var sortKey: Double {
        switch param {
        case .patchSize(let s): return Double(s)
        case .lambda(let l): return l
        default: return .infinity
        }
    }
}
