import ArgumentParser
import Foundation
import PSPCData
import PSPCExperiments

/// `pspc report RUN...`: one self-contained HTML page over experiment run directories (docs/runs.md).
struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write one self-contained HTML report (index.html) over run directories.",
        discussion: """
            Each RUN is a run directory (it holds config.json) or a folder whose subdirectories are runs. The \
            page shows the error plots and tables of sweeps, calibrated schedules, heatmaps and sample \
            comparisons, with plots inline as SVG and images as data: URLs, so it can be mailed or archived \
            alone. Table cells carry the exact numbers of the results files (data-value). Prints the path of \
            index.html.
            """)

    @Argument(help: "Run directories, or folders of runs.") var runs: [String]
    @Option(
        help: """
            Output folder (default: report/ in the folder of runs when a RUN is one, else report/ inside the \
            first RUN).
            """)
    var out: String?
    @Option(help: "Comma-separated t near which sweep image grids are drawn.") var imageTimes: String =
        "0.3,1.09,3.26,10"

    func validate() throws {
        guard !runs.isEmpty else { throw ValidationError("give at least one RUN") }
        _ = try times()
    }

    func times() throws -> [Double] {
        let values = imageTimes.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        let positive = values.compactMap { $0 }.filter { $0 > 0 && $0.isFinite }
        guard !values.isEmpty, positive.count == values.count else {
            throw ValidationError("--image-times must be a comma-separated list of positive numbers")
        }
        return positive
    }

    func run() throws {
        let found = try RunDirectory.discover(runs)
        let directory = out ?? Report.defaultOut(arguments: runs, runs: found)
        // index.html inside a run (the default report/ of a single RUN) is a write into that run.
        let locks = try RunLocks(writing: directory, makesRun: false)
        defer { locks.release() }
        let path = try PSPCExperiments.Report.write(runs: found, to: directory, imageTimes: try times())
        print(path)
    }

    /// `report` in the common parent of the runs when an argument is a folder of runs, else in the first run.
    static func defaultOut(arguments: [String], runs: [RunDirectory]) -> String {
        let hasParent = arguments.contains {
            !FileManager.default.fileExists(atPath: ($0 as NSString).appendingPathComponent("config.json"))
        }
        guard hasParent else { return (arguments[0] as NSString).appendingPathComponent("report") }
        let parents = runs.map { (($0.path as NSString).standardizingPath as NSString).deletingLastPathComponent }
        var common = parents[0].split(separator: "/", omittingEmptySubsequences: false)
        for parent in parents.dropFirst() {
            let parts = parent.split(separator: "/", omittingEmptySubsequences: false)
            var n = 0
            while n < common.count, n < parts.count, common[n] == parts[n] { n += 1 }
            common = Array(common.prefix(n))
        }
        let joined = common.joined(separator: "/")
        let base = joined.isEmpty ? (parents[0].hasPrefix("/") ? "/" : ".") : joined
        return (base as NSString).appendingPathComponent("report")
    }
}
