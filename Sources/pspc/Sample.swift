import ArgumentParser
import Foundation
import PSPCCore
import PSPCData
import PSPCExperiments

struct Sample: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw samples with the PF-ODE on the EDM grid, using any denoiser, or compare several.",
        discussion: """
            Writes samples.npy (float32 [B, C, H, W]), samples.png (a grid) and config.json to --out.
            With --compare --methods LIST: every method (network included) from the same initial noise with the
            PF-ODE (--solver euler or heun), written as a run directory (docs/runs.md): samples/<method>.npy,
            samples.png (a row per method), similarity.csv/json (mean and median Pearson correlation and mean L2
            between methods' samples, with 95 % bootstrap intervals over samples), similarity-per-sample.csv;
            re-run with the same --out to resume.
            """)

    @OptionGroup var engineOptions: EngineOptions
    @OptionGroup var methodOptions: MethodOptions
    @OptionGroup var networkOptions: NetworkOptions
    @Option(help: "Steps of the EDM grid (t = 80 down to 0.002, then 0).") var steps: Int = 18
    @Option(help: "euler | heun") var solver: EDM.Solver = .euler
    @Option(help: "Seed of the initial noise.") var seed: UInt64 = 0
    @Option(help: "Number of samples.") var count: Int = 16
    @Option(help: "Output directory.") var out: String
    @Flag(help: "Compare several methods from shared noise (with --methods).") var compare = false
    @Option(
        help: """
            --compare: methods, comma-separated, e.g. network,empirical,gaussian,pspc-square,pspc-flex; an item \
            METHOD=SETTING gives pspc-square, pspc-flex, ls or els its own size, lambda or schedule file \
            (els=calib/els-schedule.json).
            """)
    var methods: String?

    func validate() throws {
        guard steps >= 2 else { throw ValidationError("--steps must be at least 2") }
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
        if compare {
            guard methods != nil else { throw ValidationError("--compare needs --methods") }
            guard methodOptions.method == nil else { throw ValidationError("--compare takes --methods, not --method") }
        } else {
            guard methodOptions.method != nil else { throw ValidationError("--method is required (or --compare)") }
            guard methods == nil else { throw ValidationError("--methods goes with --compare") }
        }
    }

    func run() async throws {
        if compare { return try await runCompare() }
        if methodOptions.isNetwork {
            guard let data = engineOptions.data else {
                throw ValidationError("--method network needs --data for the image shape")
            }
            let manifest = try Manifest.read(directory: data)
            let network = try await networkOptions.connect()
            do {
                try await draw(shape: manifest.shape, source: manifest.source, name: "network") { z, t, progress in
                    try await network.denoiser.denoise(z, shape: manifest.shape, t: t, progress: progress)
                }
                await network.close()
            } catch {
                await network.close()
                throw error
            }
            return
        }
        let context = try await engineOptions.context()
        do {
            try await sample(context)
            await context.close()
        } catch {
            await context.close()
            throw error
        }
    }

    func sample(_ context: EngineOptions.Context) async throws {
        let method = try methodOptions.resolve(for: context.shape)
        try await draw(shape: context.shape, source: context.source, name: method.name) { z, t, progress in
            try await context.engine.denoise(z, t: t, method: method, progress: progress).values
        }
    }

    /// Integrates the PF-ODE from seeded noise with `denoise`, then writes samples.npy, samples.png, config.json.
    func draw(
        shape: ImageShape, source: String, name: String,
        denoise:
            @escaping (_ z: [Double], _ t: Double, _ progress: @escaping @Sendable (Int) -> Void) async throws ->
            [Double]
    ) async throws {
        let dim = shape.dimension
        let grid = EDM.grid(steps: steps)
        let noise = NormalNoise(seed: seed)
        var z = [Double](repeating: 0, count: count * dim)
        for i in 0..<count {
            let eps = noise.normals(stream: UInt64(i), count: dim)
            for d in 0..<dim { z[i * dim + d] = grid[0] * eps[d] }
        }
        let evaluations = solver == .heun ? 2 * steps - 1 : steps
        let bar = ProgressBar("sample \(name)", total: evaluations * count, unit: " evals")
        var done = 0
        let samples = try await EDM.sample(
            from: z, grid: grid, solver: solver,
            denoise: { z, t in
                let base = done
                let result = try await denoise(z, t) { bar.update(base + $0) }
                done += count
                return result
            })
        try FileIO.createDirectory(out)
        try QueryFile.write(samples, shape: shape, to: (out as NSString).appendingPathComponent("samples.npy"))
        let columns = Int(Double(count).squareRoot().rounded(.up))
        let png = try PNG.grid(
            images: PNG.quantize(samples), count: count, channels: shape.channels,
            height: shape.height, width: shape.width, columns: columns)
        try FileIO.writeAtomically(png, to: (out as NSString).appendingPathComponent("samples.png"))
        let config: [String: String] = [
            "command": CommandLine.arguments.joined(separator: " "), "data": engineOptions.data ?? "",
            "dataset": source, "method": name, "steps": "\(steps)", "solver": solver.rawValue,
            "seed": "\(seed)", "count": "\(count)", "xflip": engineOptions.xflip.rawValue,
        ]
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try FileIO.writeAtomically(
            [UInt8](try encoder.encode(config)), to: (out as NSString).appendingPathComponent("config.json"))
        note("wrote \(count) samples to \(out)/samples.npy and samples.png")
    }
}

extension EDM.Solver: ExpressibleByArgument {}
