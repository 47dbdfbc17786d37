import Foundation
import PSPCData

/// One row of a sweep's results (docs/runs.md): a variant's errors at one t.
public struct SweepRow: Sendable, Equatable {
    public var tIndex: Int
    public var t: Double
    public var method: String
    public var param: Variant.Param
    public var label: String
    public var mseToNetwork: Double
    public var mseToX0: Double
    public var queries: Int

    public init(
        tIndex: Int, t: Double, method: String, param: Variant.Param, label: String, mseToNetwork: Double,
        mseToX0: Double, queries: Int
    ) {
        self.tIndex = tIndex
        self.t = t
        self.method = method
        self.param = param
        self.label = label
        self.mseToNetwork = mseToNetwork
        self.mseToX0 = mseToX0
        self.queries = queries
    }
}

/// results.csv and results.json of a sweep: written from rows, read back exactly.
public enum SweepResults {
    public static let header = "t_index,t,method,param,label,mse_to_network,mse_to_x0,queries"

    public static func csv(_ rows: [SweepRow]) -> String {
        var text = header + "\n"
        for r in rows {
            text += CSVText.line([
                String(r.tIndex), RunNumber.text(r.t), r.method, r.param.text, r.label, RunNumber.text(r.mseToNetwork),
                RunNumber.text(r.mseToX0), String(r.queries),
            ])
        }
        return text
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
        guard records.first == header.split(separator: ",").map(String.init) else {
            throw DataError.corrupt(path: path, reason: "the first line is not the header '\(header)'")
        }
        guard text.hasSuffix("\n") else { throw DataError.corrupt(path: path, reason: "truncated (no final newline)") }
        return try records.dropFirst().enumerated().map { n, f in
            func bad(_ why: String) -> DataError { .corrupt(path: path, reason: "line \(n + 2): \(why)") }
            guard f.count == 8 else { throw bad("\(f.count) fields, expected 8") }
            guard let tIndex = Int(f[0]), let t = Double(f[1]), let toNetwork = Double(f[5]), let toX0 = Double(f[6]),
                let queries = Int(f[7])
            else { throw bad("not numbers where numbers belong") }
            let param: Variant.Param
            if f[3].isEmpty {
                param = .none
            } else if f[3] == "schedule" {
                param = .schedule
            } else if f[2] == "pspc-square", let s = Int(f[3]) {
                param = .patchSize(s)
            } else if let l = Double(f[3]) {
                param = .lambda(l)
            } else {
                throw bad("param '\(f[3])' is not a number or 'schedule'")
            }
            return SweepRow(
                tIndex: tIndex, t: t, method: f[2], param: param, label: f[4], mseToNetwork: toNetwork, mseToX0: toX0,
                queries: queries)
        }
    }
}
