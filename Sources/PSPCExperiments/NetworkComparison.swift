import Foundation
import PSPCData

/// One row of a study's networks.csv (docs/runs.md): at one t, a variant's MSE to one network it is not, with
/// its 95 % bootstrap interval over queries. A variant that is itself a network gives the network-vs-network
/// MSE, the scale against which every method's MSE to a network reads.
public struct NetworkComparison: Sendable, Equatable {
    public var tIndex: Int
    public var t: Double
    /// The variant compared (`network dit`, `empirical`, `pspc-square s=5`).
    public var label: String
    /// The network it is compared with (`network unet`).
    public var network: String
    public var mse: Double
    public var interval: Bootstrap.Interval
    public var queries: Int

    public init(
        tIndex: Int, t: Double, label: String, network: String, mse: Double, interval: Bootstrap.Interval, queries: Int
    ) {
        self.tIndex = tIndex
        self.t = t
        self.label = label
        self.network = network
        self.mse = mse
        self.interval = interval
        self.queries = queries
    }

    public static let header = "t_index,t,label,network,mse,ci_low,ci_high,queries"

    public static func csv(_ rows: [NetworkComparison]) -> String {
        var text = header + "\n"
        for r in rows {
            text += CSVText.line([
                String(r.tIndex), RunNumber.text(r.t), r.label, r.network, RunNumber.text(r.mse),
                RunNumber.text(r.interval.low), RunNumber.text(r.interval.high), String(r.queries),
            ])
        }
        return text
    }

    /// networks.csv of `run`, or nil when the run has one network (no such file).
    public static func read(_ run: RunDirectory) throws -> [NetworkComparison]? {
        let path = run.file("networks.csv")
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let text = String(decoding: try FileIO.read(path), as: UTF8.self)
        let records: [[String]]
        do { records = try CSVText.records(text) } catch { throw DataError.corrupt(path: path, reason: "\(error)") }
        guard records.first?.joined(separator: ",") == header else {
            throw DataError.corrupt(path: path, reason: "the first line is not the header '\(header)'")
        }
        guard text.hasSuffix("\n") else { throw DataError.corrupt(path: path, reason: "truncated (no final newline)") }
        return try records.dropFirst().enumerated().map { n, f in
            func bad(_ why: String) -> DataError { .corrupt(path: path, reason: "line \(n + 2): \(why)") }
            guard f.count == 8 else { throw bad("\(f.count) fields, expected 8") }
            guard let tIndex = Int(f[0]), let t = Double(f[1]), let mse = Double(f[4]), let low = Double(f[5]),
                let high = Double(f[6]), let queries = Int(f[7])
            else { throw bad("not numbers where numbers belong") }
            guard low <= high else { throw bad("interval '\(f[5])', '\(f[6])' is not ordered") }
            return NetworkComparison(
                tIndex: tIndex, t: t, label: f[2], network: f[3], mse: mse,
                interval: Bootstrap.Interval(low: low, high: high), queries: queries)
        }
    }
}
