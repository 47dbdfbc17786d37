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
            `--lambda-schedule FILE` and `--scale-schedule FILE` read.
            """)

    @Argument(help: "Sweep run directories, or folders holding them.") var runs: [String]
    @Option(help: "Which sweeps to use: forward, reverse or both (query-weighted mean of their MSEs).")
    var on: Calibration.Selection = .both
    @Option(help: "Output run directory (default: RUN/calibration for the first RUN).") var out: String?

    func run() async throws {
        guard let first = runs.first else { throw ValidationError("give at least one RUN") }
        let output = RunDirectory(out ?? RunDirectory(first).file("calibration"))
        // Held for the whole write, on the calibration run and on the sweep run holding it (the default).
        let locks = try RunLocks(writing: output.path, makesRun: true)
        defer { locks.release() }
        let found = try RunDirectory.discover(runs).filter { run in
            let kind = try run.kind()
            switch on {
            case .forward: return kind == Sweep.Kind.forward.rawValue
            case .reverse: return kind == Sweep.Kind.reverse.rawValue
            case .both: return kind == Sweep.Kind.forward.rawValue || kind == Sweep.Kind.reverse.rawValue
            }
        }
        guard !found.isEmpty else {
            throw DataError.invalid("no \(on == .both ? "" : on.rawValue + " ")sweep runs in \(runs.joined(separator: ", "))")
        }
        var sweeps: [(grid: [Double], rows: [SweepRow])] = []
        for run in found {
            guard run.isComplete else {
                throw DataError.invalid("\(run.path) is not finished (no 'done'); re-run its sweep to complete it")
            }
            guard let grid = try run.config()["grid"]?.array?.compactMap(\.double) else {
                throw DataError.invalid("\(run.file("config.json")): no grid")
            }
            sweeps.append((grid, try SweepResults.read(run)))
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
            ]), to: "config.json")
        let best = try Calibration.write(candidates, grid: sweeps[0].grid, to: output)
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
