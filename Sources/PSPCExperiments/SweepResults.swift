import Foundation
import PSPCData

/// One row of a sweep's results (docs/runs.md): a variant's errors at one t, each with its 95 % bootstrap interval
/// over queries (nil in files written before the intervals existed).
public struct SweepRow: Sendable, Equatable {
    public var tIndex: Int
    public var t: Double
    public var method: String
    public var param: Variant.Param
    public var label: String
    public var mseToNetwork: Double
    public var mseToX0: Double
    public var queries: Int
    public var mseToNetworkInterval: Bootstrap.Interval?
    public var mseToX0Interval: Bootstrap.Interval?

    public init(
        tIndex: Int, t: Double, method: String, param: Variant.Param, label: String, mseToNetwork: Double,
        mseToX0: Double, queries: Int, mseToNetworkInterval: Bootstrap.Interval? = nil,
        mseToX0Interval: Bootstrap.Interval? = nil
    ) {
        self.tIndex = tIndex
        self.t = t
        self.method = method
        self.param = param
        self.label = label
        self.mseToNetwork = mseToNetwork
        self.mseToX0 = mseToX0
        self.queries = queries
        self.mseToNetworkInterval = mseToNetworkInterval
        self.mseToX0Interval = mseToX0Interval
    }
}

/// results.csv and results.json of a sweep: written from rows, read back exactly.
public enum SweepResults {
    /// The columns of results.csv before the intervals (still read).
    public static let headerWithoutIntervals = "t_index,t,method,param,label,mse_to_network,mse_to_x0,queries"
    /// The columns written: the intervals come last, so readers of the older columns by position still work.
    public static let header =
        headerWithoutIntervals + ",mse_to_network_ci_low,mse_to_network_ci_high,mse_to_x0_ci_low,mse_to_x0_ci_high"

    public static func csv(_ rows: [SweepRow]) -> String {
        var text = header + "\n"
        for r in rows {
            let intervals = [r.mseToNetworkInterval, r.mseToX0Interval].flatMap { interval in
                interval.map { [RunNumber.text($0.low), RunNumber.text($0.high)] } ?? ["", ""]
            }
            text += CSVText.line(
                [
                    String(r.tIndex), RunNumber.text(r.t), r.method, r.param.text, r.label,
                    RunNumber.text(r.mseToNetwork), RunNumber.text(r.mseToX0), String(r.queries),
                ] + intervals)
        }
        return text
    }

    static func intervalJSON(_ interval: Bootstrap.Interval?) -> JSONValue {
        interval.map { .doubles([$0.low, $0.high]) } ?? .null
    }

    public static func json(_ rows: [SweepRow], kind: String, grid: [Double]) -> JSONValue {
        .object([
            ("kind", .string(kind)), ("grid", .doubles(grid)),
            (
                "rows",
                .array(
                    rows.map { r in
                        .object([
                            ("t_index", .int(r.tIndex)), ("t", .number(r.t)), ("method", .string(r.method)),
                            ("param", r.param.json), ("label", .string(r.label)),
                            ("mse_to_network", .number(r.mseToNetwork)), ("mse_to_x0", .number(r.mseToX0)),
                            ("queries", .int(r.queries)),
                            ("mse_to_network_ci", intervalJSON(r.mseToNetworkInterval)),
                            ("mse_to_x0_ci", intervalJSON(r.mseToX0Interval)),
                        ])
                    })
            ),
        ])
    }

    /// Reads `run`/results.csv; every malformed line is an error naming the file and line.
    public static func read(_ run: RunDirectory) throws -> [SweepRow] {
        let path = run.file("results.csv")
        let text = String(decoding: try FileIO.read(path), as: UTF8.self)
        let records: [[String]]
        do { records = try CSVText.records(text) } catch { throw DataError.corrupt(path: path, reason: "\(error)") }
        let fields: Int
        switch records.first?.joined(separator: ",") {
        case header: fields = 12
        case headerWithoutIntervals: fields = 8
        default: throw DataError.corrupt(path: path, reason: "the first line is not the header '\(header)'")
        }
        guard text.hasSuffix("\n") else { throw DataError.corrupt(path: path, reason: "truncated (no final newline)") }
        return try records.dropFirst().enumerated().map { n, f in
            func bad(_ why: String) -> DataError { .corrupt(path: path, reason: "line \(n + 2): \(why)") }
            guard f.count == fields else { throw bad("\(f.count) fields, expected \(fields)") }
            guard let tIndex = Int(f[0]), let t = Double(f[1]), let toNetwork = Double(f[5]), let toX0 = Double(f[6]),
                let queries = Int(f[7])
            else { throw bad("not numbers where numbers belong") }
            let param: Variant.Param
            if f[3].isEmpty {
                param = .none
            } else if f[2] == "network" {
                param = .name(f[3])
            } else if f[3] == "schedule" {
                param = .schedule
            } else if ["pspc-square", "ls", "els"].contains(f[2]), let s = Int(f[3]) {
                param = .patchSize(s)
            } else if let l = Double(f[3]) {
                param = .lambda(l)
            } else {
                throw bad("param '\(f[3])' is not a number or 'schedule'")
            }
            var intervals: [Bootstrap.Interval?] = [nil, nil]
            if fields == 12 {
                for k in 0..<2 {
                    let (low, high) = (f[8 + 2 * k], f[9 + 2 * k])
                    if low.isEmpty && high.isEmpty { continue }
                    guard let l = Double(low), let h = Double(high), l <= h else {
                        throw bad("interval '\(low)', '\(high)' is not two ordered numbers")
                    }
                    intervals[k] = Bootstrap.Interval(low: l, high: h)
                }
            }
            return SweepRow(
                tIndex: tIndex, t: t, method: f[2], param: param, label: f[4], mseToNetwork: toNetwork, mseToX0: toX0,
                queries: queries, mseToNetworkInterval: intervals[0], mseToX0Interval: intervals[1])
        }
    }
}
