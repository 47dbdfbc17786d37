import ArgumentParser
import Foundation
import PSPCData
import PSPCExperiments

struct Calibrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pick the pspc-square size, pspc-flex lambda and LS / ELS window closest to the network at each t.",
        discussion: """
            Reads sweep runs (or folders of them) and writes a calibration run: calibration.csv (every candidate's
            MSE to the network), best.csv, and for each method swept patch-schedule.json (pspc-square),
            lambda-schedule.json (pspc-flex), ls-schedule.json and els-schedule.json, which `--schedule FILE`,
            `--lambda-schedule FILE` and `--scale-schedule FILE` read. The whole image is always a candidate:
            pspc-square s = H (H x H images) and pspc-flex lambda = 1 are the empirical denoiser, so a sweep that
            has the empirical method gets them from its empirical rows when it did not sweep them.
            --held-out RUN...: sweeps of other queries (another --seed) with the same candidates, on which the
            chosen schedule is judged: held-out.csv gives each choice's in-sample and held-out error beside the
            held-out minimiser's.
            """)

    @Argument(help: "Sweep run directories, or folders holding them.") var runs: [String]
    @Option(help: "Which sweeps to use: forward, reverse or both (query-weighted mean of their MSEs).")
    var on: Calibration.Selection = .both
    @Option(help: "Output run directory (default: RUN/calibration for the first RUN).") var out: String?
    @Option(parsing: .upToNextOption, help: "Sweep runs of other queries to judge the chosen schedules on.")
    var heldOut: [String] = []

    /// The sweep runs of the selected kinds in `paths`.
    func sweepRuns(_ paths: [String]) throws -> [RunDirectory] {
        let found = try RunDirectory.discover(paths).filter { run in
            let kind = try run.kind()
            switch on {
            case .forward: return kind == Sweep.Kind.forward.rawValue
            case .reverse: return kind == Sweep.Kind.reverse.rawValue
            case .both: return kind == Sweep.Kind.forward.rawValue || kind == Sweep.Kind.reverse.rawValue
            }
        }
        guard !found.isEmpty else {
            throw DataError.invalid("no \(on == .both ? "" : on.rawValue + " ")sweep runs in \(paths.joined(separator: ", "))")
        }
        return found
    }

    /// Each finished sweep's grid and rows, with the whole-image candidates its empirical rows stand for.
    func read(_ found: [RunDirectory]) throws -> (
        sweeps: [(grid: [Double], rows: [SweepRow])], added: [String], queryErrors: [Calibration.QueryErrors]?
    ) {
        var sweeps: [(grid: [Double], rows: [SweepRow])] = []
        var added: Set<String> = []
        var queryErrors: [Calibration.QueryErrors]? = []
        for run in found {
            guard run.isComplete else {
                throw DataError.invalid("\(run.path) is not finished (no 'done'); re-run its sweep to complete it")
            }
            guard let grid = try run.config()["grid"]?.array?.compactMap(\.double) else {
                throw DataError.invalid("\(run.file("config.json")): no grid")
            }
            let rows = try SweepResults.read(run)
            // The image shape, from the sweep's stored images; without them no whole-image rows can be named.
            let stored = ["z/t00.npy", "x0.npy", "x0/t00.npy"].map { run.file($0) }
            guard let images = stored.first(where: { FileManager.default.fileExists(atPath: $0) }),
                case let shape = try NPY.read(path: images).shape, shape.count == 4
            else {
                note("\(run.path): no stored images to read the shape from; no whole-image candidates added")
                sweeps.append((grid, rows))
                queryErrors = nil
                continue
            }
            let whole = Calibration.addingWholeImage(rows, height: shape[2], width: shape[3])
            sweeps.append((grid, whole.rows))
            added.formUnion(whole.added)
            // Runs written before per-query.csv existed have no per-query errors: no win fractions then.
            if FileManager.default.fileExists(atPath: run.file("per-query.csv")) {
                queryErrors?.append(try Calibration.QueryErrors.read(run, rows: whole.rows))
            } else {
                queryErrors = nil
            }
        }
        return (sweeps, added.sorted(), queryErrors)
    }

    /// Held-out sweeps must hold other queries than the calibration's: not the same run, nor a run of the same
    /// kind, seed, source and draws.
    func checkDisjoint(_ calibration: [RunDirectory], _ heldOut: [RunDirectory]) throws {
        func key(_ run: RunDirectory) throws -> String {
            let c = try run.config()
            return ["kind", "seed", "from", "draws", "queries", "trajectories", "grid"].map { "\(c[$0] ?? .null)" }.joined(separator: "|")
        }
        for h in heldOut {
            for r in calibration {
                let same = URL(fileURLWithPath: h.path).standardizedFileURL == URL(fileURLWithPath: r.path).standardizedFileURL
                if try same || key(h) == key(r) {
                    throw DataError.invalid(
                        "held-out sweep \(h.path) has the same queries as \(r.path) (same kind, seed and source); "
                            + "sweep the held-out set with another --seed")
                }
            }
        }
    }

    func run() async throws {
        guard let first = runs.first else { throw ValidationError("give at least one RUN") }
        let output = RunDirectory(out ?? RunDirectory(first).file("calibration"))
        // Held for the whole write, on the calibration run and on the sweep run holding it (the default).
        let locks = try RunLocks(writing: output.path, makesRun: true)
        defer { locks.release() }
        let found = try sweepRuns(runs)
        let heldOutRuns = heldOut.isEmpty ? [] : try sweepRuns(heldOut)
        try checkDisjoint(found, heldOutRuns)
        let (sweeps, added, queryErrors) = try read(found)
        if !added.isEmpty {
            note("whole-image candidates from the empirical rows: \(added.joined(separator: ", "))")
        }
        let candidates = try Calibration.candidates(sweeps)
        guard !candidates.isEmpty else {
            throw DataError.invalid("the sweeps hold no pspc-square, ls or els sizes or pspc-flex lambdas to calibrate")
        }
        try FileIO.createDirectory(output.path)
        try output.writeJSON(
            .object([
                ("kind", .string("calibration")), ("version", .int(1)),
                ("command", .string(CommandLine.arguments.joined(separator: " "))),
                ("runs", .strings(found.map(\.path))), ("on", .string(on.rawValue)), ("grid", .doubles(sweeps[0].grid)),
                ("heldOut", .strings(heldOutRuns.map(\.path))),
            ]), to: "config.json")
        let best = try Calibration.write(candidates, grid: sweeps[0].grid, to: output)
        if let queryErrors {
            try Calibration.writeWins(try Calibration.winFractions(candidates, sweeps: queryErrors), to: output)
        } else {
            note("no wins.csv: a sweep has no per-query.csv (written before per-query errors were kept)")
        }
        if !heldOutRuns.isEmpty {
            let judged = try Calibration.evaluate(best, on: try Calibration.candidates(try read(heldOutRuns).sweeps))
            try Calibration.writeHeldOut(judged, to: output)
            var table = "held out:  t        method       chosen  in-sample  held-out  held-out best (param)\n"
            for r in judged {
                table += "           " + [
                    String(format: "%.4g", r.chosen.t).padding(8), r.chosen.method.padding(12), r.chosen.param.text.padding(7),
                    String(format: "%.4g", r.chosen.mseToNetwork).padding(10), String(format: "%.4g", r.heldOutMSE).padding(9),
                    String(format: "%.4g", r.heldOutBest.mseToNetwork) + " (\(r.heldOutBest.param.text))",
                ].joined(separator: " ") + "\n"
            }
            FileHandle.standardError.write(Data(table.utf8))
        }
        _ = try RunFigures.write(for: output)
        try output.markComplete()
        var table = "t        method       best   mse_to_network\n"
        for c in best {
            let t = String(format: "%.4g", c.t), mse = String(format: "%.4g", c.mseToNetwork)
            table += [t.padding(8), c.method.padding(12), c.param.text.padding(6), mse].joined(separator: " ") + "\n"
        }
        FileHandle.standardError.write(Data(table.utf8))
        note("wrote \(output.file("best.csv")) and the schedules in \(output.path)")
    }
}

extension Calibration.Selection: ExpressibleByArgument {}

extension String {
    /// The string left-aligned in `width` columns.
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
