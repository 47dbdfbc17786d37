import Foundation

/// Paired comparisons of a sweep's methods (ratios.csv). At each t, every method's mean error over the queries
/// is divided by a baseline's mean error over the same queries, and the 95 % interval of that ratio comes from
/// resampling the queries once for both (`Bootstrap.ratioOfMeans`): the spread the two methods share (a hard
/// query is hard for both) cancels, so a paired interval is much narrower than the two MSE intervals side by
/// side suggest.
///
/// Two baselines per target:
/// - `optimal`: the optimal empirical denoiser (method `empirical`), the normalised view in which the small-t
///   behaviour is visible (every method's MSE goes to 0 there);
/// - `closest`: the method with the smallest mean error at that t, so a row whose interval lies above 1 is
///   significantly farther than the closest one, and one whose interval contains 1 is not told apart from it.
///
/// A baseline that reproduces the target exactly on some queries (the optimal denoiser on training queries at
/// small t reproduces x0 to rounding) makes the ratio grow without bound; its ratios are written as they are
/// (+inf where the baseline's error is 0), not hidden. Judge the network against the optimal denoiser on test
/// queries (`--from test`).
///
/// Target `network` compares the methods' errors to the network's output (the network's own row, 0, is left
/// out); target `x0` the errors to the clean image, the network's row included (its error to x0 over the
/// optimal denoiser's: below 1 means the network beats the optimal denoiser on these queries). The network is
/// never a `closest` baseline: that names the closest method.
public struct PairedRatio: Sendable, Equatable {
    public var tIndex: Int
    public var t: Double
    public var label: String
    public var target: String
    public var baselineRole: String
    public var baseline: String
    public var ratio: Double
    public var interval: Bootstrap.Interval
    public var queries: Int
}

public enum PairedRatios {
    public static let header = "t_index,t,label,target,baseline_role,baseline,ratio,ci_low,ci_high,queries"

    /// The paired ratios of `rows`, with `perQuery` the per-query errors of each row (as
    /// `Sweep.resultsWithQueries` gives them).
    public static func compute(
        rows: [SweepRow], perQuery: [(network: [Double], x0: [Double])], bootstrap: Bootstrap = Bootstrap()
    ) -> [PairedRatio] {
        precondition(rows.count == perQuery.count)
        var out: [PairedRatio] = []
        let tIndices = Array(Set(rows.map(\.tIndex))).sorted()
        for i in tIndices {
            let all = rows.indices.filter { rows[$0].tIndex == i }
            let t = rows[all[0]].t
            for target in ["network", "x0"] {
                let members = target == "network" ? all.filter { rows[$0].method != "network" } : all
                guard !members.isEmpty else { continue }
                let entries: [(label: String, errors: [Double])] = members.map { k in
                    (rows[k].label, target == "network" ? perQuery[k].network : perQuery[k].x0)
                }
                var baselines: [(role: String, index: Int)] = []
                if let optimal = members.firstIndex(where: { rows[$0].method == "empirical" }) {
                    baselines.append(("optimal", optimal))
                }
                let means = entries.map { Bootstrap.mean($0.errors) }
                let methods = members.indices.filter { rows[members[$0]].method != "network" && !means[$0].isNaN }
                if let closest = methods.min(by: { means[$0] < means[$1] }) { baselines.append(("closest", closest)) }
                for (role, b) in baselines {
                    let base = entries[b]
                    for entry in entries where entry.errors.count == base.errors.count {
                        out.append(
                            PairedRatio(
                                tIndex: i, t: t, label: entry.label, target: target, baselineRole: role,
                                baseline: base.label,
                                ratio: Bootstrap.ratio(entry.errors.reduce(0, +), base.errors.reduce(0, +)),
                                interval: bootstrap.ratioOfMeans(entry.errors, base.errors),
                                queries: entry.errors.count))
                    }
                }
            }
        }
        return out
    }

    public static func csv(_ ratios: [PairedRatio]) -> String {
        var text = header + "\n"
        for r in ratios {
            text += CSVText.line([
                String(r.tIndex), RunNumber.text(r.t), r.label, r.target, r.baselineRole, r.baseline,
                RunNumber.text(r.ratio), RunNumber.text(r.interval.low), RunNumber.text(r.interval.high),
                String(r.queries),
            ])
        }
        return text
    }
}
