import ArgumentParser
import Foundation
import PSPCCore
import PSPCData

struct Heatmap: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Gradient-sensitivity heatmaps of the network on a time grid, for pspc-flex (PAPER.md section 4).",
        discussion: """
            Writes H.npy (float32 [L, H, W, H, W], output pixel first), H.times.json (the t of each level, for
            `pspc denoise --heatmap-times`) and H.locality.csv (per t: the mean side of the centred square
            holding 50 / 75 / 95 % of a map's mass). Forward-process samples come from the endpoint's training set.
            """)

    @OptionGroup var networkOptions: NetworkOptions
    @Option(help: "edm:N (the N-step EDM grid) or a comma-separated list of t.") var grid: String = "edm:18"
    @Option(help: "Forward-process samples per t.") var samples: Int = 8
    @Option(help: "Seed of the samples.") var seed: UInt64 = 0
    @Option(help: "Output .npy (the .times.json and .locality.csv files go beside it).") var out: String

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
        let network = try await networkOptions.connect()
        var maps: [Float] = []
        var shape: [Int] = []
        var csv = "t,side50,side75,side95\n"
        do {
            let bar = ProgressBar("heatmaps", total: levels.count, unit: " levels")
            for (i, t) in levels.enumerated() {
                let result = try await network.denoiser.heatmap(t: t, samples: samples, seed: seed &+ UInt64(i))
                shape = result.shape
                maps += result.maps.map(Float.init)
                csv += "\(t),\(result.locality[0]),\(result.locality[1]),\(result.locality[2])\n"
                bar.update(i + 1)
            }
            await network.close()
        } catch {
            await network.close()
            throw error
        }
        let base = out.hasSuffix(".npy") ? String(out.dropLast(4)) : out
        try NPY.write(NPYArray(shape: [levels.count] + shape, data: .float32(maps)), to: base + ".npy")
        try FileIO.writeAtomically(Array(try JSONEncoder().encode(levels)), to: base + ".times.json")
        try FileIO.writeAtomically(Array(csv.utf8), to: base + ".locality.csv")
        note(
            "wrote \(levels.count) levels of \(shape) heatmaps to \(base).npy (times in \(base).times.json, locality in \(base).locality.csv)"
        )
        FileHandle.standardError.write(Data(csv.utf8))
    }
}
