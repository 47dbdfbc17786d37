import Foundation
import PSPCCore
import PSPCData

/// The figures of one run directory (docs/runs.md), written under its `figures/`: the experiment commands call
/// `write(for:)` when a run finishes, and `Report` draws the same figures inline. Every number plotted is read
/// from the run's results files.
public enum RunFigures {
    /// Writes the figures of `run`'s kind and returns the paths written.
    public static func write(for run: RunDirectory) throws -> [String] {
        let kind = try run.kind()
        switch kind {
        case "sweep-forward", "sweep-reverse": return try writeSweep(run)
        case "calibration": return try writeCalibration(run)
        case "heatmap": return try writeHeatmap(run)
        case "sample-compare": return try writeSampleCompare(run)
        default:
            throw DataError.invalid("\(run.file("config.json")): kind \"\(kind)\" has no figures")
        }
    }

    /// figures/mse-to-network.svg, figures/mse-to-x0.svg and, when the sweep has pspc-square sizes,
    /// figures/patch-size-error.svg.
    public static func writeSweep(_ run: RunDirectory) throws -> [String] {
        let sweep = try Report.Sweep.read(run)
        let process = try processName(run)
        var files: [(String, any SVGFigure)] = [
            ("mse-to-network.svg", mseToNetwork(sweep, process: process)),
            ("mse-to-x0.svg", mseToX0(sweep, process: process)),
        ]
        if let plot = patchSizeError(
            sweep.squareRows.map { ($0.t, $0.param, $0.mseToNetwork) }, subtitle: "\(process), pspc-square")
        {
            files.append(("patch-size-error.svg", plot))
        }
        return try write(files, to: run)
    }

    /// figures/patch-size-error.svg (when pspc-square was calibrated) and figures/schedule.svg.
    public static func writeCalibration(_ run: RunDirectory) throws -> [String] {
        let calibration = try Report.Calibration.read(run)
        var files: [(String, any SVGFigure)] = []
        let square = calibration.candidateRows.filter { $0.method == "pspc-square" }
        if let plot = patchSizeError(square.map { ($0.t, $0.param, $0.mseToNetwork) }, subtitle: "calibration") {
            files.append(("patch-size-error.svg", plot))
        }
        if let figure = schedule(calibration) { files.append(("schedule.svg", figure)) }
        return try write(files, to: run)
    }

    /// figures/locality.svg and figures/heatmaps.png.
    public static func writeHeatmap(_ run: RunDirectory) throws -> [String] {
        let locality = try Report.Locality.read(run)
        var written = try write([("locality.svg", localityPlot(locality))], to: run)
        let selection = try heatmaps(run)
        try run.write(try Report.Raster.grid(selection.tiles).png(), to: "figures/heatmaps.png")
        written.append(run.file("figures", "heatmaps.png"))
        return written
    }

    /// figures/similarity.svg.
    public static func writeSampleCompare(_ run: RunDirectory) throws -> [String] {
        try write([("similarity.svg", similarity(try Report.Similarity.read(run)))], to: run)
    }

    private static func write(_ files: [(String, any SVGFigure)], to run: RunDirectory) throws -> [String] {
        try files.map { name, figure in
            try run.writeText(figure.render(), to: "figures/" + name)
            return run.file("figures", name)
        }
    }

    // MARK: - Figures

    static func processName(_ run: RunDirectory) throws -> String {
        try run.kind() == "sweep-reverse" ? "reverse process" : "forward process"
    }

    /// MSE to the network against t, log-log, one series per variant but the network (the paper's Fig. 2), each
    /// with its 95 % bootstrap interval over queries as a band (when results.csv has the intervals).
    static func mseToNetwork(
        _ sweep: Report.Sweep, process: String, width: Double = 640, height: Double = 380
    ) -> SVGPlot {
        let variants = sweep.labels.filter { label in sweep.rows.first { $0.label == label }?.method != "network" }
        let rowsOf = variants.map { label in sweep.rows.filter { $0.label == label } }
        return SVGPlot(
            title: "MSE to the network", x: SVGAxis("t", scale: .log), y: SVGAxis("MSE to network", scale: .log),
            series: zip(variants, rowsOf).map { label, rows in
                SVGPlot.Series(
                    label, x: rows.map(\.t), y: rows.map(\.mseToNetwork), band: band(rows.map(\.mseToNetworkInterval)))
            }, width: width, height: height,
            subtitle: subtitle(process, sweep, intervals: rowsOf.joined().map(\.mseToNetworkInterval)))
    }

    /// MSE to x0 against t, log-log, every variant (the network included), with bands as above.
    static func mseToX0(_ sweep: Report.Sweep, process: String) -> SVGPlot {
        let target = process.hasPrefix("reverse") ? "the final sample" : "the clean image"
        return SVGPlot(
            title: "MSE to x0 (\(target))", x: SVGAxis("t", scale: .log), y: SVGAxis("MSE to x0", scale: .log),
            series: sweep.labels.map { label in
                let rows = sweep.rows.filter { $0.label == label }
                return SVGPlot.Series(
                    label, x: rows.map(\.t), y: rows.map(\.mseToX0), band: band(rows.map(\.mseToX0Interval)))
            }, subtitle: subtitle(process, sweep, intervals: sweep.rows.map(\.mseToX0Interval)))
    }

    /// The intervals as a band, nil when no point has one (a results.csv written before the intervals existed).
    private static func band(_ intervals: [Bootstrap.Interval?]) -> (low: [Double], high: [Double])? {
        guard intervals.contains(where: { $0 != nil }) else { return nil }
        return (intervals.map { $0?.low ?? .nan }, intervals.map { $0?.high ?? .nan })
    }

    private static func subtitle(_ process: String, _ sweep: Report.Sweep, intervals: [Bootstrap.Interval?]) -> String {
        let bands = intervals.contains { $0 != nil } ? "; bands: 95 % bootstrap intervals over queries" : ""
        return "\(process), \(queriesText(sweep))\(bands)"
    }

    private static func queriesText(_ sweep: Report.Sweep) -> String {
        let counts = Set(sweep.rows.map(\.queries))
        return counts.count == 1 ? "\(counts.first ?? 0) queries per t" : "\(counts.min() ?? 0)+ queries per t"
    }

    /// The t near which patch-size error curves are drawn (those present, nearest in log t).
    static let patchCurveTimes = [0.01, 0.1, 0.3, 1, 3, 10, 30]

    /// MSE to the network against patch size for a few t (the paper's Fig. 4); nil without numeric sizes.
    static func patchSizeError(_ points: [(t: Double, param: String, mse: Double)], subtitle: String) -> SVGPlot? {
        let numeric = points.compactMap { p in Int(p.param).map { (t: p.t, size: Double($0), mse: p.mse) } }
        guard !numeric.isEmpty else { return nil }
        var times: [Double] = []
        for t in numeric.map(\.t) where !times.contains(t) { times.append(t) }
        var chosen: [Double] = []
        for target in patchCurveTimes {
            let t = times[Report.nearest(target, in: times)]
            if !chosen.contains(t) { chosen.append(t) }
        }
        chosen.sort()
        let sizes = Set(numeric.map(\.size)).sorted()
        return SVGPlot(
            title: "Error against patch size", x: SVGAxis("patch size s", ticks: sizes.count <= 12 ? sizes : nil),
            y: SVGAxis("MSE to network", scale: .log),
            series: chosen.map { t in
                let curve = numeric.filter { $0.t == t }
                return SVGPlot.Series("t = \(SVG.shortNumber(t))", x: curve.map(\.size), y: curve.map(\.mse))
            }, subtitle: subtitle)
    }

    /// The calibrated patch sizes (and lambdas, when calibrated) against t, with the paper's CIFAR-10
    /// schedules for reference; nil when the run wrote no schedule.
    static func schedule(_ calibration: Report.Calibration) -> (any SVGFigure)? {
        var panels: [any SVGFigure] = []
        let reference = "paper, CIFAR-10"
        // PSPC-Square's crop side and the LS / ELS window side on one axis: both are the patch a pixel's
        // posterior looks through.
        let windows = [("calibrated", calibration.patchSchedule), ("ls", calibration.lsSchedule), ("els", calibration.elsSchedule)]
            .compactMap { name, file in file.map { SVGPlot.Series(name, x: $0.t, y: $0.values, style: .steps) } }
        if !windows.isEmpty {
            let paper = PatchSchedule.cifar10
            var series = windows
            if calibration.patchSchedule != nil {
                series.append(
                    SVGPlot.Series(
                        reference, x: paper.t, y: paper.values.map(Double.init), style: .steps, markers: false,
                        color: "#999999", dash: "5 3"))
            }
            panels.append(
                SVGPlot(
                    title: "Patch size schedule s(t)", x: SVGAxis("t", scale: .log), y: SVGAxis("patch size s"),
                    series: series, width: 490, height: 320,
                    subtitle: calibration.patchSchedule != nil
                        ? "nearest grid t; paper's values are for 32x32 images" : "LS / ELS window side P"))
        }
        if let lambda = calibration.lambdaSchedule {
            let paper = LambdaSchedule.cifar10
            panels.append(
                SVGPlot(
                    title: "Mask threshold schedule lambda(t)", x: SVGAxis("t", scale: .log),
                    y: SVGAxis("lambda", ticks: [0, 0.2, 0.4, 0.6, 0.8, 1], range: 0...1.05),
                    series: [
                        SVGPlot.Series("calibrated", x: lambda.t, y: lambda.values, style: .steps),
                        SVGPlot.Series(
                            reference, x: paper.t, y: paper.values, style: .steps, markers: false, color: "#999999",
                            dash: "5 3"),
                    ], width: 490, height: 320, subtitle: "pspc-flex"))
        }
        switch panels.count {
        case 0: return nil
        case 1: return panels[0]
        default: return SVGRow(panels)
        }
    }

    /// Mean side of the centred square holding 50 / 75 / 95 % of a map's mass, against t.
    static func localityPlot(_ locality: Report.Locality) -> SVGPlot {
        let shares = ["50 % of mass", "75 % of mass", "95 % of mass"]
        return SVGPlot(
            title: "Locality of the network's gradients", x: SVGAxis("t", scale: .log),
            y: SVGAxis("side of centred square (pixels)"),
            series: shares.enumerated().map { i, label in
                SVGPlot.Series(label, x: locality.rows.map(\.t), y: locality.rows.map { $0.sides[i] })
            }, subtitle: "mean over output pixels")
    }

    /// Pearson correlation and mean L2 distance between the methods' samples, as two matrices.
    static func similarity(_ similarity: Report.Similarity) -> SVGRow {
        SVGRow([
            SVGMatrix(
                title: "Pearson correlation", rowLabels: similarity.labels, columnLabels: similarity.labels,
                values: similarity.matrix("pearson"), subtitle: "mean over samples; darker = more alike",
                diagonalInScale: false),
            SVGMatrix(
                title: "Mean L2 distance", rowLabels: similarity.labels, columnLabels: similarity.labels,
                values: similarity.matrix("mean_l2"), darkIsLow: true, subtitle: "mean over samples; darker = closer",
                diagonalInScale: false),
        ])
    }

    // MARK: - Heatmaps

    /// The maps drawn: output pixels (rows) by times (columns), each map scaled to its own maximum.
    struct HeatmapSelection {
        var pixels: [(y: Int, x: Int, name: String)]
        var times: [Double]
        var size: (h: Int, w: Int)
        /// `tiles[pixel][time]`.
        var tiles: [[Report.Raster]]
    }

    /// The times near which maps are shown.
    static let heatmapTimes = [0.03, 0.3, 3, 30]

    /// Maps of the centre pixel, a pixel near a corner and one on an edge at the 4 levels nearest 0.03, 0.3, 3
    /// and 30, enlarged `scale` times (default: about 112 pixels wide).
    static func heatmaps(_ run: RunDirectory, scale: Int? = nil) throws -> HeatmapSelection {
        let path = run.file("heatmaps.npy")
        guard FileManager.default.fileExists(atPath: path) else {
            throw DataError.io(path: path, reason: "missing (the run has not written it)")
        }
        let array = try NPY.read(path: path)
        let shape = array.shape
        guard shape.count == 5, shape[1] == shape[3], shape[2] == shape[4], shape.allSatisfy({ $0 > 0 }) else {
            throw DataError.corrupt(path: path, reason: "shape \(shape), expected [L, H, W, H, W]")
        }
        let timesPath = run.file("heatmaps.times.json")
        guard let times = try RunDirectory.readJSON(timesPath).array?.compactMap(\.double), times.count == shape[0]
        else {
            throw DataError.corrupt(path: timesPath, reason: "expected a list of \(shape[0]) times (one per level)")
        }
        let (h, w) = (shape[1], shape[2])
        var pixels: [(y: Int, x: Int, name: String)] = []
        for candidate in [(h / 2, w / 2, "centre"), (h / 7, w / 7, "near a corner"), (h / 2, 0, "left edge")]
        where !pixels.contains(where: { $0.y == candidate.0 && $0.x == candidate.1 }) {
            pixels.append((candidate.0, candidate.1, candidate.2))
        }
        var levels: [Int] = []
        for target in heatmapTimes {
            let level = Report.nearest(target, in: times)
            if !levels.contains(level) { levels.append(level) }
        }
        levels.sort { times[$0] < times[$1] }
        let scale = scale ?? max(1, 112 / max(h, w))
        let plane = h * w
        let tiles = pixels.map { pixel in
            levels.map { level in
                let start = ((level * h + pixel.y) * w + pixel.x) * plane
                return Report.Raster.heatmap(
                    values(array.data, start..<(start + plane)), h: h, w: w, scale: scale, mark: (pixel.y, pixel.x))
            }
        }
        return HeatmapSelection(pixels: pixels, times: levels.map { times[$0] }, size: (h, w), tiles: tiles)
    }

    private static func values(_ data: NPYData, _ range: Range<Int>) -> ArraySlice<Double> {
        switch data {
        case .float32(let v): return ArraySlice(v[range].map(Double.init))
        case .float64(let v): return v[range]
        case .uint8(let v): return ArraySlice(v[range].map(Double.init))
        }
    }
}
