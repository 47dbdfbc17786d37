import ArgumentParser
import Foundation
import PSPCCore
import PSPCData
import PSPCExperiments

struct Heatmap: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Gradient-sensitivity heatmaps of the network on a time grid, for pspc-flex (docs/science.md section 4).",
        discussion: """
            Writes heatmaps (float32 [L, H, W, H, W], output pixel first), their times (read by pspc-flex from
            beside the .npy) and the locality per t (the mean side of the centred square holding 50 / 75 / 95 %
            of a map's mass). Forward-process samples come from the endpoint's training set.
            """)

    @OptionGroup var networkOptions: NetworkOptions
    @Option(help: "edm:N (the N-step EDM grid) or a comma-separated list of t.") var grid: String = "edm:18"
    @Option(help: "Forward-process samples per t.") var samples: Int = 8
    @Option(help: "Seed of the samples.") var seed: UInt64 = 0
    @Option(
        help:
            "A run directory (heatmaps.npy, heatmaps.times.json, locality.csv/json, config.json; resumable), or a path ending in .npy (.times.json and .locality.csv beside it)."
    )
    var out: String

    func validate() throws {
        guard samples >= 1 else { throw ValidationError("--samples must be at least 1") }
        _ = try times()
    }

    func times() throws -> [Double] {
        if grid.hasPrefix("edm:") {
            guard let n = Int(grid.dropFirst(4)), n >= 2 else { throw ValidationError("--grid edm:N needs N >= 2") }
            return EDM.grid(steps: n)
        }
        let values = grid.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ $0 != nil && $0! > 0 && $0!.isFinite }) else {
            throw ValidationError("--grid must be edm:N or a list of positive numbers")
        }
        return values.map { $0! }
    }

    func run() async throws {
        let levels = try times()
        let isRunDirectory = !out.hasSuffix(".npy")
        let run = RunDirectory(isRunDirectory ? out : out + ".parts")
        // Held for the whole write (the .parts folder of an .npy output is a run until it is removed).
        let locks = try RunLocks(writing: run.path, makesRun: true)
        defer { locks.release() }
        let config: JSONValue = .object([
            ("kind", .string("heatmap")), ("version", .int(1)),
            ("command", .string(CommandLine.arguments.joined(separator: " "))), ("grid", .doubles(levels)),
            ("gridSpec", .string(grid)), ("samples", .int(samples)), ("seed", .int(Int(seed))),
            ("network", networkOptions.config),
        ])
        if try run.prepare(config: config) { note("resuming \(run.path): finished levels are kept") }
        let network = try await networkOptions.connect()
        do {
            let bar = ProgressBar("heatmaps", total: levels.count, unit: " levels")
            for (i, t) in levels.enumerated() {
                let part = String(format: "level-%02d.npy", i)
                if !run.hasPart(part) {
                    let result = try await network.denoiser.heatmap(t: t, samples: samples, seed: seed &+ UInt64(i))
                    // The locality figures travel in the part as a 1-D float64 array after the maps' own file.
                    try run.writeNPY(
                        NPYArray(shape: [3], data: .float64(result.locality)),
                        to: "parts/" + String(format: "level-%02d.locality.npy", i))
                    try run.writeNPY(NPYArray(shape: result.shape, data: .float32(result.maps.map(Float.init))), to: "parts/" + part)
                }
                bar.update(i + 1)
            }
            await network.close()
        } catch {
            await network.close()
            throw error
        }
        var maps: [Float] = []
        var shape: [Int] = []
        var csv = "t,side50,side75,side95\n"
        var rows: [JSONValue] = []
        for (i, t) in levels.enumerated() {
            let array = try NPY.read(path: run.file("parts", String(format: "level-%02d.npy", i)))
            shape = array.shape
            maps += array.asDoubles().map(Float.init)
            let locality = try NPY.read(path: run.file("parts", String(format: "level-%02d.locality.npy", i))).asDoubles()
            csv += CSVText.line([RunNumber.text(t)] + locality.map(RunNumber.text))
            rows.append(
                .object([
                    ("t", .number(t)), ("side50", .number(locality[0])), ("side75", .number(locality[1])),
                    ("side95", .number(locality[2])),
                ]))
        }
        let base = isRunDirectory ? run.file("heatmaps") : String(out.dropLast(4))
        try NPY.write(NPYArray(shape: [levels.count] + shape, data: .float32(maps)), to: base + ".npy")
        try FileIO.writeAtomically(Array(JSONValue.doubles(levels).serialized().utf8), to: base + ".times.json")
        if isRunDirectory {
            try run.writeText(csv, to: "locality.csv")
            try run.writeJSON(.array(rows), to: "locality.json")
            _ = try RunFigures.write(for: run)
            try run.markComplete()
        } else {
            try FileIO.writeAtomically(Array(csv.utf8), to: base + ".locality.csv")
            try? FileManager.default.removeItem(atPath: run.path)
        }
        note("wrote \(levels.count) levels of \(shape) heatmaps to \(base).npy (times in \(base).times.json)")
        FileHandle.standardError.write(Data(csv.utf8))
    }
}
