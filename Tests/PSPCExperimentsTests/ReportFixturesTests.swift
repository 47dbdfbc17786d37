import Foundation
import PSPCData
import PSPCExperiments
import XCTest

/// Run directories of every kind fabricated exactly as docs/runs.md lays them out, with numbers of many digits
/// (so rounding anywhere would show) and deterministic pseudo-random images.
enum ReportFixtures {
    /// Sizes of a fabricated set of runs: small for unit tests, paper-like for the full-size test.
    struct Size {
        var grid: [Double]
        var side: Int
        var queries: Int
        var samples: Int

        static let small = Size(grid: [10, 3.26, 0.3, 0.02], side: 8, queries: 10, samples: 6)
        static let paper = Size(
            grid: [
                80, 57.586, 40.786, 28.371, 19.352, 12.906, 8.4, 5.3214, 3.2619, 1.9185, 1.0854, 0.58538, 0.29565,
                0.13865, 0.059615, 0.022961, 0.0075184, 0.002,
            ], side: 28, queries: 12, samples: 8)
    }

    /// The variants of the forward sweep, in the documented order: (method, param, label).
    static let forwardVariants: [(String, String, String)] = [
        ("network", "", "network"), ("empirical", "", "empirical"), ("gaussian", "", "gaussian"),
        ("pspc-square", "3", "pspc-square s=3"), ("pspc-square", "5", "pspc-square s=5"),
        ("pspc-square", "7", "pspc-square s=7"), ("pspc-square", "schedule", "pspc-square schedule"),
        ("pspc-flex", "0.5", "pspc-flex lambda=0.5"),
    ]

    static let reverseVariants: [(String, String, String)] = [
        ("network", "", "network"), ("empirical", "", "empirical"), ("pspc-flex", "0.3", "pspc-flex lambda=0.3"),
        ("pspc-flex", "0.7", "pspc-flex lambda=0.7"),
    ]

    static let sampleMethods = ["network", "empirical", "pspc-square s=5"]

    /// A fresh folder holding forward/, reverse/, calibration/, heatmap/ and samples/.
    static func make(_ size: Size = .small, in root: String? = nil) throws -> String {
        let root =
            root
            ?? (NSTemporaryDirectory() as NSString).appendingPathComponent("pspc-report-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        func run(_ name: String) -> RunDirectory { RunDirectory((root as NSString).appendingPathComponent(name)) }
        try sweep(run("forward"), kind: "sweep-forward", variants: forwardVariants, channels: 1, size: size)
        try sweep(run("reverse"), kind: "sweep-reverse", variants: reverseVariants, channels: 3, size: size)
        try calibration(run("calibration"), sweep: run("forward"), size: size)
        try heatmap(run("heatmap"), size: size)
        try sampleCompare(run("samples"), size: size)
        return root
    }

    // MARK: - Numbers and images

    /// A deterministic value in [0, 1) with all digits used.
    static func noise(_ a: Int, _ b: Int, _ c: Int = 0) -> Double {
        let x = sin(Double(a) * 12.9898 + Double(b) * 78.233 + Double(c) * 37.719) * 43758.5453
        return x - x.rounded(.down)
    }

    /// The MSE of variant `k` at `t`: a bump around t = 3 (the networks leave the optimal denoiser there).
    static func mse(_ k: Int, t: Double) -> Double {
        guard k > 0 else { return 0 }
        let bump = exp(-pow(log(t / 3), 2) / 2.5)
        return 0.004 * Double(9 - k) / 8 * bump + 2e-5 * Double(k) * (1 + noise(k, Int(t * 1000)))
            + 1e-6 * noise(k, 7)
    }

    /// `count` images `[count, channels, side, side]`: smooth blobs in [-1, 1], different per seed and index.
    static func images(count: Int, channels: Int, side: Int, seed: Int) -> [Double] {
        var values: [Double] = []
        for n in 0..<count {
            for c in 0..<channels {
                let (fx, fy) = (1 + noise(seed, n, 1) * 3, 1 + noise(seed, n, 2) * 3)
                let phase = noise(seed, n, 3 + c) * 6.28
                for y in 0..<side {
                    for x in 0..<side {
                        let u = Double(x) / Double(side), v = Double(y) / Double(side)
                        values.append(0.85 * sin(fx * u * 3.1 + phase) * cos(fy * v * 3.1 - phase * 0.5))
                    }
                }
            }
        }
        return values
    }

    static func writeImages(
        _ values: [Double], count: Int, channels: Int, side: Int, to relative: String, in run: RunDirectory
    )
        throws
    {
        try run.writeNPY(
            NPYArray(shape: [count, channels, side, side], data: .float32(values.map(Float.init))), to: relative)
    }

    static func grid(_ size: Size) -> JSONValue { .doubles(size.grid) }

    static func csv(_ header: String, _ rows: [[String]]) -> String {
        ([header] + rows.map { $0.joined(separator: ",") }).joined(separator: "\n") + "\n"
    }

    // MARK: - Kinds

    static func sweep(
        _ run: RunDirectory, kind: String, variants: [(String, String, String)], channels: Int, size: Size
    ) throws {
        let forward = kind == "sweep-forward"
        var config: [(String, JSONValue)] = [
            ("kind", .string(kind)), ("version", .int(1)),
            ("command", .string("pspc sweep \(forward ? "forward" : "reverse") --out \(run.path) --queries 10")),
            ("grid", grid(size)), ("methods", .strings(["empirical", "gaussian", "pspc-square", "pspc-flex"])),
            ("patchSizes", .ints(forward ? [3, 5, 7] : [])), ("lambdas", .doubles(forward ? [0.5] : [0.3, 0.7])),
            ("heatmaps", .string("runs/demo/heatmap/heatmaps.npy")),
            ("schedule", forward ? .string("runs/demo/calibration/patch-schedule.json") : .null),
            ("lambdaSchedule", .null),
        ]
        config +=
            forward
            ? [("queries", .int(size.queries)), ("from", .string("train"))]
            : [("trajectories", .int(size.queries)), ("steps", .int(18))]
        config += [
            ("seed", .int(7)), ("xflip", .bool(true)),
            ("dataset", .object([("source", .string("fashion-mnist train")), ("fingerprint", .string("5f3a9c0e"))])),
            ("network", .string("edm-ddpmpp fashion 28x28 <ema> & co @ tcp://127.0.0.1:7000")),
            ("cfdm", .object([("copies", .int(4)), ("scale", .number(0.1))])),
        ]
        try run.prepare(config: .object(config))
        let seed = forward ? 1 : 2
        let x0 = images(count: size.queries, channels: channels, side: size.side, seed: seed)
        try writeImages(x0, count: size.queries, channels: channels, side: size.side, to: "x0.npy", in: run)
        var rows: [[String]] = []
        var jsonRows: [JSONValue] = []
        for (i, t) in size.grid.enumerated() {
            let folder = String(format: "t%02d", i)
            let eps = images(count: size.queries, channels: channels, side: size.side, seed: 100 + i)
            let z = zip(x0, eps).map { Double(Float($0 + t * $1 * 1.7)) }
            try writeImages(z, count: size.queries, channels: channels, side: size.side, to: "z/\(folder).npy", in: run)
            for (k, (method, param, label)) in variants.enumerated() {
                let toNetwork = mse(k, t: t) * (forward ? 1 : 1.5)
                let toX0 = 0.05 * t * t / (1 + t * t) + toNetwork * 0.5 + 1e-4 * noise(k, i, 9)
                rows.append([
                    String(i), RunNumber.text(t), method, param, label, RunNumber.text(toNetwork), RunNumber.text(toX0),
                    String(size.queries),
                ])
                let paramJSON: JSONValue =
                    param.isEmpty ? .null : (param == "schedule" ? .string(param) : .number(Double(param) ?? 0))
                jsonRows.append(
                    .object([
                        ("t_index", .int(i)), ("t", .number(t)), ("method", .string(method)), ("param", paramJSON),
                        ("label", .string(label)), ("mse_to_network", .number(toNetwork)),
                        ("mse_to_x0", .number(toX0)), ("queries", .int(size.queries)),
                    ]))
                let blend = min(1, 1 / (1 + t)) * (1 - 0.1 * Double(k))
                let output = zip(x0, eps).map { $0 * blend + 0.2 * (1 - blend) * $1 }
                try writeImages(
                    output, count: size.queries, channels: channels, side: size.side,
                    to: "outputs/\(folder)/\(slug(label)).npy", in: run)
            }
            try run.writePart(Array("\(i)\n".utf8), name: "t\(i).json")
        }
        try run.writeText(
            csv("t_index,t,method,param,label,mse_to_network,mse_to_x0,queries", rows), to: "results.csv")
        try run.writeJSON(
            .object([
                ("kind", .string(kind)), ("grid", grid(size)), ("rows", .array(jsonRows)),
                (
                    "throughput",
                    .object([("queries_x_methods_per_second", .number(123.456789)), ("seconds", .number(9.87654))])
                ),
            ]), to: "results.json")
        try run.markComplete()
    }

    static func slug(_ label: String) -> String {
        label.replacingOccurrences(of: " ", with: "-").replacingOccurrences(of: "=", with: "")
    }

    static func calibration(_ run: RunDirectory, sweep: RunDirectory, size: Size) throws {
        try run.prepare(
            config: .object([
                ("kind", .string("calibration")), ("version", .int(1)),
                ("command", .string("pspc calibrate \(sweep.path) --out \(run.path)")),
                ("runs", .strings([sweep.path])), ("on", .string("forward")),
            ]))
        var candidates: [[String]] = []
        var best: [[String]] = []
        var sizes: [Double] = []
        var lambdas: [Double] = []
        for (i, t) in size.grid.enumerated() {
            for (method, params) in [("pspc-square", [3.0, 5, 7]), ("pspc-flex", [0.3, 0.5, 1])] {
                // The best size grows with t (as in the paper); the error is a parabola around it.
                let ideal = method == "pspc-square" ? 3 + 4 * t / (1 + t) : 0.3 + 0.7 * t / (3 + t)
                var errors: [(Double, Double)] = []
                for (k, param) in params.enumerated() {
                    let error = 1e-4 * (1 + pow(param - ideal, 2)) * (1 + 0.01 * noise(i, k, 5)) * (1 + t)
                    errors.append((param, error))
                    let text = method == "pspc-square" ? String(Int(param)) : RunNumber.text(param)
                    candidates.append([String(i), RunNumber.text(t), method, text, RunNumber.text(error)])
                }
                let minimum = errors.min { $0.1 < $1.1 } ?? errors[0]
                let text = method == "pspc-square" ? String(Int(minimum.0)) : RunNumber.text(minimum.0)
                best.append([String(i), RunNumber.text(t), method, text, RunNumber.text(minimum.1)])
                if method == "pspc-square" { sizes.append(minimum.0) } else { lambdas.append(minimum.0) }
            }
        }
        try run.writeText(csv("t_index,t,method,param,mse_to_network", candidates), to: "calibration.csv")
        try run.writeText(csv("t_index,t,method,best_param,mse_to_network", best), to: "best.csv")
        try run.writeJSON(
            .object([("t", grid(size)), ("values", .ints(sizes.map { Int($0) }))]), to: "patch-schedule.json")
        try run.writeJSON(.object([("t", grid(size)), ("values", .doubles(lambdas))]), to: "lambda-schedule.json")
        try run.markComplete()
    }

    static func heatmap(_ run: RunDirectory, size: Size) throws {
        try run.prepare(
            config: .object([
                ("kind", .string("heatmap")), ("version", .int(1)),
                ("command", .string("pspc heatmap --out \(run.path)")), ("grid", grid(size)), ("samples", .int(4)),
                ("seed", .int(0)), ("network", .string("edm-ddpmpp fashion 28x28")),
            ]))
        let h = size.side
        var maps: [Float] = []
        var locality: [[String]] = []
        var localityJSON: [JSONValue] = []
        for (level, t) in size.grid.enumerated() {
            // A blob around the output pixel whose width grows with t, with an off-centre echo.
            let width = 0.6 + Double(h) / 6 * t / (1 + t)
            var levelMaps: [Float] = []
            for oy in 0..<h {
                for ox in 0..<h {
                    for y in 0..<h {
                        for x in 0..<h {
                            let d2 = Double((y - oy) * (y - oy) + (x - ox) * (x - ox))
                            let echo = Double((y - h / 3) * (y - h / 3) + (x - ox) * (x - ox))
                            levelMaps.append(Float(exp(-d2 / (2 * width * width)) + 0.15 * exp(-echo / 8)))
                        }
                    }
                }
            }
            try run.writePart(
                NPY.encode(NPYArray(shape: [h, h, h, h], data: .float32(levelMaps))),
                name: String(format: "level-%02d.npy", level))
            maps += levelMaps
            let sides = [1.0, 1.6, 2.5].map { 1 + 2 * ($0 * width).rounded(.down) + noise(level, Int($0 * 10)) }
            locality.append([RunNumber.text(t)] + sides.map(RunNumber.text))
            localityJSON.append(
                .object([
                    ("t", .number(t)), ("side50", .number(sides[0])), ("side75", .number(sides[1])),
                    ("side95", .number(sides[2])),
                ]))
        }
        try run.writeNPY(NPYArray(shape: [size.grid.count, h, h, h, h], data: .float32(maps)), to: "heatmaps.npy")
        try run.writeJSON(grid(size), to: "heatmaps.times.json")
        try run.writeText(csv("t,side50,side75,side95", locality), to: "locality.csv")
        try run.writeJSON(.array(localityJSON), to: "locality.json")
        try run.markComplete()
    }

    static func sampleCompare(_ run: RunDirectory, size: Size) throws {
        let count = size.samples, side = size.side
        try run.prepare(
            config: .object([
                ("kind", .string("sample-compare")), ("version", .int(1)),
                ("command", .string("pspc sample --compare --out \(run.path)")),
                ("methods", .strings(sampleMethods)), ("count", .int(count)), ("seed", .int(3)), ("steps", .int(18)),
                ("solver", .string("euler")), ("patchSize", .int(5)),
            ]))
        let noiseImages = images(count: count, channels: 1, side: side, seed: 50)
        try writeImages(noiseImages, count: count, channels: 1, side: side, to: "noise.npy", in: run)
        var all: [[Double]] = []
        for (k, method) in sampleMethods.enumerated() {
            let samples = images(count: count, channels: 1, side: side, seed: k == 2 ? 60 : 61 + k)
            all.append(samples)
            try writeImages(samples, count: count, channels: 1, side: side, to: "samples/\(slug(method)).npy", in: run)
        }
        let png = try PNG.grid(
            images: PNG.quantize(all.flatMap { $0 }), count: count * sampleMethods.count, channels: 1, height: side,
            width: side, columns: count)
        try run.write(png, to: "samples.png")
        var rows: [[String]] = []
        var pearson: [[Double]] = []
        var l2: [[Double]] = []
        for (a, first) in sampleMethods.enumerated() {
            var pearsonRow: [Double] = []
            var l2Row: [Double] = []
            for (b, second) in sampleMethods.enumerated() {
                let r = a == b ? 1 : 0.3 + 0.5 * noise(min(a, b), max(a, b), 4)
                let d = a == b ? 0 : 4 + 3 * noise(min(a, b), max(a, b), 6)
                pearsonRow.append(r)
                l2Row.append(d)
                let median = a == b ? 1 : r + 0.01
                let pearsonRange = a == b ? (1.0, 1.0) : (median - 0.05, median + 0.04)
                let l2Range = a == b ? (0.0, 0.0) : (d - 0.4, d + 0.5)
                rows.append(
                    [first, second]
                        + [r, median, pearsonRange.0, pearsonRange.1, d, l2Range.0, l2Range.1].map(RunNumber.text))
            }
            pearson.append(pearsonRow)
            l2.append(l2Row)
        }
        try run.writeText(csv(SampleComparison.similarityHeader.joined(separator: ","), rows), to: "similarity.csv")
        try run.writeJSON(
            .object([
                ("labels", .strings(sampleMethods)), ("pearson", .array(pearson.map { .doubles($0) })),
                ("mean_l2", .array(l2.map { .doubles($0) })),
            ]), to: "similarity.json")
        try run.markComplete()
    }
}

/// The fixtures hold every file docs/runs.md names for their kinds, so the report tests test the real layout.
final class ReportFixturesTests: XCTestCase {
    func testFixturesHoldTheDocumentedFiles() throws {
        let root = try ReportFixtures.make()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let expected = [
            "forward/config.json", "forward/results.csv", "forward/results.json", "forward/x0.npy",
            "forward/z/t03.npy", "forward/outputs/t02/pspc-square-s7.npy",
            "forward/outputs/t00/pspc-flex-lambda0.5.npy",
            "forward/outputs/t01/pspc-square-schedule.npy", "forward/done", "reverse/outputs/t03/network.npy",
            "calibration/calibration.csv", "calibration/best.csv", "calibration/patch-schedule.json",
            "calibration/lambda-schedule.json", "heatmap/heatmaps.npy", "heatmap/heatmaps.times.json",
            "heatmap/locality.csv", "heatmap/locality.json", "heatmap/parts/level-03.npy", "samples/samples.png",
            "samples/noise.npy", "samples/samples/pspc-square-s5.npy", "samples/similarity.csv",
            "samples/similarity.json",
        ]
        for file in expected {
            XCTAssertTrue(FileManager.default.fileExists(atPath: root + "/" + file), file)
        }
        let runs = try RunDirectory.discover([root])
        XCTAssertEqual(
            try runs.map { try $0.kind() },
            ["calibration", "sweep-forward", "heatmap", "sweep-reverse", "sample-compare"])
        let header = String(decoding: try FileIO.read(root + "/forward/results.csv"), as: UTF8.self)
            .split(separator: "\n").first
        // The fixture writes results.csv as runs did before the intervals; the report still reads it.
        XCTAssertEqual(header, Substring(SweepResults.headerWithoutIntervals))
    }
}
