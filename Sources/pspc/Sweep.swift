import ArgumentParser
import Foundation
import PSPCCore
import PSPCData
import PSPCExperiments

/// `pspc sweep forward|reverse`: every method and the network on the same queries at each t.
struct SweepCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Compare the methods with the network along the forward or the reverse diffusion process.",
        discussion: """
            Writes a run directory (docs/runs.md): config.json, results.csv/json (per t and method: MSE to the
            network's output and to x0), the queries z/tII.npy, every output outputs/tII/<method>.npy, figures/.
            Killed and re-run with the same --out, a sweep resumes; the results are the same bytes.
            """,
        subcommands: [Forward.self, Reverse.self])

    struct Forward: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Forward process: z = x0 + t eps, x0 from the (x-flipped) training set or the test set.")

        @OptionGroup var engineOptions: EngineOptions
        @OptionGroup var networkOptions: NetworkOptions
        @OptionGroup var sweepOptions: SweepOptions
        @Option(help: "edm:N (the N-step EDM grid) or log:K:TMIN:TMAX (K log-spaced t, descending).")
        var grid: String = "edm:18"
        @Option(help: "Queries per t.") var queries: Int = 64
        @Option(name: .customLong("from"), help: "train (the x-flipped training set, as the paper), test, or any `pspc ingest` source.")
        var from: String = "train"
        @Option(help: "Seed of the drawn images and of eps.") var seed: UInt64 = 0
        @Option(help: "independent: fresh x0 and eps at every t (x0/tNN.npy); shared: the same x0 and eps at every t (x0.npy).")
        var draws: Draws = .independent

        enum Draws: String, ExpressibleByArgument, CaseIterable { case independent, shared }

        func validate() throws {
            guard queries >= 1 else { throw ValidationError("--queries must be at least 1") }
            do { _ = try TimeGrid.parse(grid) } catch let error as PSPCError { throw ValidationError(error.description) }
        }

        func run() async throws {
            let times = try TimeGrid.parse(grid)
            try await sweepOptions.execute(
                kind: .forward, grid: times, engineOptions: engineOptions, networkOptions: networkOptions,
                extra: [
                    ("gridSpec", .string(grid)), ("queries", .int(queries)), ("from", .string(from)), ("seed", .int(Int(seed))),
                    ("draws", .string(draws.rawValue)),
                ]
            ) { sweep, _ in
                if FileManager.default.fileExists(atPath: sweep.run.file(sweep.queriesFile(times.count - 1))) { return }
                switch draws {
                case .shared:
                    let x0 = try TrainingDraw.images(
                        from: from, data: engineOptions.data, xflip: engineOptions.xflip == .on, count: queries,
                        seed: seed, shape: sweep.shape)
                    try sweep.writeForwardQueries(x0: x0, seed: seed)
                case .independent:
                    let x0 = try TrainingDraw.images(
                        from: from, data: engineOptions.data, xflip: engineOptions.xflip == .on, count: queries,
                        seeds: times.indices.map { Sweep.drawSeed(seed, t: $0) }, shape: sweep.shape)
                    try sweep.writeIndependentForwardQueries(x0: x0, seed: seed)
                }
            }
        }
    }

    struct Reverse: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Reverse process: the states of the network's own deterministic Heun trajectories.")

        @OptionGroup var engineOptions: EngineOptions
        @OptionGroup var networkOptions: NetworkOptions
        @OptionGroup var sweepOptions: SweepOptions
        @Option(help: "Trajectories (queries per t).") var trajectories: Int = 64
        @Option(help: "Steps of the EDM grid.") var steps: Int = 18
        @Option(help: "Seed of the initial noise.") var seed: UInt64 = 0

        func validate() throws {
            guard trajectories >= 1 else { throw ValidationError("--trajectories must be at least 1") }
            guard steps >= 2 else { throw ValidationError("--steps must be at least 2") }
        }

        func run() async throws {
            let times = EDM.grid(steps: steps)
            try await sweepOptions.execute(
                kind: .reverse, grid: times, engineOptions: engineOptions, networkOptions: networkOptions,
                extra: [("trajectories", .int(trajectories)), ("steps", .int(steps)), ("seed", .int(Int(seed)))]
            ) { sweep, network in
                guard !sweep.run.hasPart("trajectories") else { return }
                let bar = ProgressBar(
                    "trajectories", total: sweep.reverseEvaluations * trajectories, unit: " evals")
                try await sweep.writeReverseQueries(count: trajectories, seed: seed, network: network) { bar.update($0) }
            }
        }
    }
}

/// The methods a sweep compares and their settings.
struct SweepOptions: ParsableArguments {
    @Option(help: "Methods, comma-separated: empirical, gaussian, cfdm, pspc-square, pspc-flex, ls, els.")
    var methods: String = "empirical,gaussian,pspc-square"
    @Option(help: "pspc-square: patch sizes, comma-separated (default 3,5,7,9,11,15,19,23 up to the image side).")
    var patchSizes: String?
    @Option(help: "pspc-square: also a scheduled variant, 'cifar10' or a schedule file (from `pspc calibrate`).")
    var schedule: String?
    @Option(help: "pspc-flex: mask thresholds lambda, comma-separated.") var lambdas: String = "0.3,0.5,0.7,0.9"
    @Option(help: "pspc-flex: also a scheduled variant, 'cifar10' or a schedule file.") var lambdaSchedule: String?
    @Option(help: "pspc-flex: heatmaps .npy from `pspc heatmap` ([L, H, W, H, W]).") var heatmaps: String?
    @Option(help: "pspc-flex: t of each heatmap level, JSON (default: beside the heatmaps, or the EDM grid).")
    var heatmapTimes: String?
    @Option(help: "cfdm: smoothing scale of the query perturbations.") var smoothing: Double = 0.1
    @Option(help: "cfdm: perturbed copies per query.") var copies: Int = 8
    @Option(help: "cfdm: seed of the perturbations.") var cfdmSeed: UInt64 = 0
    @Option(help: "Output run directory.") var out: String

    static let engineMethods = ["empirical", "gaussian", "cfdm", "pspc-square", "pspc-flex", "ls", "els"]

    var methodList: [String] { methods.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }

    func validate() throws {
        for m in methodList where !Self.engineMethods.contains(m) {
            throw ValidationError("unknown method '\(m)': use \(Self.engineMethods.joined(separator: ", ")) (the network is always included)")
        }
        if methodList.contains("pspc-flex") && heatmaps == nil {
            throw ValidationError("pspc-flex needs --heatmaps (from `pspc heatmap`)")
        }
        _ = try parsedSizes()
        _ = try parsedLambdas()
        guard copies >= 1, smoothing >= 0, smoothing.isFinite else {
            throw ValidationError("cfdm needs --copies >= 1 and --smoothing >= 0")
        }
    }

    func parsedSizes() throws -> [Int]? {
        guard let patchSizes else { return nil }
        let sizes = patchSizes.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !sizes.isEmpty, sizes.allSatisfy({ ($0 ?? 0) >= 1 }) else {
            throw ValidationError("--patch-sizes must be positive integers, e.g. 3,5,7")
        }
        return Array(Set(sizes.map { $0! })).sorted()
    }

    func parsedLambdas() throws -> [Double] {
        let values = lambdas.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ $0 != nil && $0! > 0 && $0! <= 1 }) else {
            throw ValidationError("--lambdas must be numbers in (0, 1], e.g. 0.3,0.5,0.7")
        }
        return Array(Set(values.map { $0! })).sorted()
    }

    /// The networks, then each method's variants in the order given.
    func variants(for shape: ImageShape, networks: [Variant] = [.network]) throws -> [Variant] {
        var variants = networks
        let side = min(shape.height, shape.width)
        for name in methodList {
            switch name {
            case "empirical": variants.append(Variant(method: name, engineMethod: .empirical))
            case "gaussian": variants.append(Variant(method: name, engineMethod: .gaussian))
            case "cfdm":
                variants.append(
                    Variant(method: name, engineMethod: .cfdm(smoothing: smoothing, copies: copies, seed: cfdmSeed)))
            case "pspc-square":
                let sizes = try parsedSizes() ?? [3, 5, 7, 9, 11, 15, 19, 23, 27].filter { $0 < side }
                for s in sizes {
                    try CropSet.square(patchSize: s).validate(for: shape)
                    variants.append(Variant(method: name, param: .patchSize(s), engineMethod: .pspcSquare(.constant(s))))
                }
                if let schedule {
                    let options = try MethodOptions.parse(["--method", name, "--schedule", schedule])
                    variants.append(Variant(method: name, param: .schedule, engineMethod: try options.resolve(for: shape)))
                }
            case "ls", "els":
                // The odd --patch-sizes (default 3, 5, 7, 9, 11); windows are centred on a pixel.
                let sizes = try parsedSizes().map { $0.filter { $0 % 2 == 1 } } ?? [3, 5, 7, 9, 11]
                guard !sizes.isEmpty else { throw ValidationError("\(name) needs odd --patch-sizes, e.g. 3,5,7") }
                for p in sizes {
                    variants.append(
                        Variant(method: name, param: .patchSize(p), engineMethod: name == "ls" ? .ls(.constant(p)) : .els(.constant(p))))
                }
            case "pspc-flex":
                for lambda in try parsedLambdas() {
                    let masks = try MethodOptions.loadHeatmaps(
                        heatmaps!, times: heatmapTimes, shape: shape, lambda: .constant(lambda))
                    variants.append(Variant(method: name, param: .lambda(lambda), engineMethod: .pspcFlex(masks)))
                }
                if let lambdaSchedule {
                    let lambdas: LambdaSchedule = try MethodOptions.loadSchedule(lambdaSchedule, builtin: .cifar10)
                    let masks = try MethodOptions.loadHeatmaps(heatmaps!, times: heatmapTimes, shape: shape, lambda: lambdas)
                    variants.append(Variant(method: name, param: .schedule, engineMethod: .pspcFlex(masks)))
                }
            default: throw ValidationError("unknown method '\(name)'")
            }
        }
        return variants
    }

    /// Runs a sweep: connects, prepares the run directory, writes the queries (`makeQueries`), evaluates every
    /// unfinished unit, writes results and figures, and prints the throughput.
    func execute(
        kind: Sweep.Kind, grid: [Double], engineOptions: EngineOptions, networkOptions: NetworkOptions,
        extra: [(String, JSONValue)], makeQueries: (Sweep, @escaping BatchDenoiser) async throws -> Void
    ) async throws {
        let run = RunDirectory(out)
        let existed = FileManager.default.fileExists(atPath: out)
        let lock = try run.lock()
        defer { lock.release() }
        let context: EngineOptions.Context
        do { context = try await engineOptions.context() } catch {
            if !existed { unlink(run.file(".lock")); rmdir(run.path) }
            throw error
        }
        var connected: [NetworkOptions.Connected] = []
        var created = false
        do {
            connected = try await networkOptions.connectAll()
            let shape = context.shape
            let variants = try variants(for: shape, networks: networkOptions.entries.map(\.variant))
            var config: [(String, JSONValue)] = [
                ("kind", .string(kind.rawValue)), ("version", .int(1)),
                ("command", .string(CommandLine.arguments.joined(separator: " "))), ("grid", .doubles(grid)),
                ("methods", .strings(methodList)), ("variants", .strings(variants.map(\.label))),
                ("patchSizes", .ints(variants.compactMap { if case .patchSize(let s) = $0.param { return s } else { return nil } })),
                ("lambdas", methodList.contains("pspc-flex") ? .doubles(try parsedLambdas()) : .array([])),
                ("heatmaps", heatmaps.map { .string($0) } ?? .null), ("schedule", schedule.map { .string($0) } ?? .null),
                ("lambdaSchedule", lambdaSchedule.map { .string($0) } ?? .null),
                ("cfdm", .object([("smoothing", .number(smoothing)), ("copies", .int(copies)), ("seed", .int(Int(cfdmSeed)))])),
                ("shape", .ints([shape.channels, shape.height, shape.width])),
                ("dataset", try datasetConfig(engineOptions)), ("xflip", .bool(engineOptions.xflip == .on)),
                ("network", networkOptions.config),
            ]
            config += extra
            let resumed = try run.prepare(config: .object(config))
            created = !resumed
            if resumed { note("resuming \(out): finished units are kept") }
            let sweep = try Sweep(kind: kind, run: run, shape: shape, grid: grid, variants: variants)
            let denoisers: [BatchDenoiser] = connected.map { network in
                { z, t, progress in try await network.denoiser.denoise(z, shape: shape, t: t, progress: progress) }
            }
            // A reverse sweep follows the first network's trajectories.
            try await makeQueries(sweep, denoisers[0])
            let bar = ProgressBar("\(kind.rawValue)", total: 1, unit: " queries")
            let work = try await sweep.evaluate(engine: context.engine, networks: denoisers) { done, total in
                bar.update(done, total: total)
            }
            let rows = try sweep.writeResults()
            try run.writeJSON(
                .object([
                    ("query_methods", .int(work.queryMethods)), ("seconds", .number(work.seconds)),
                    ("queries_x_methods_per_second", .number(work.queriesPerSecond)),
                ]), to: "throughput.json")
            let figures = try RunFigures.write(for: run)
            try run.markComplete()
            for network in connected { await network.close() }
            await context.close()
            note(String(format: "throughput: %.2f queries x methods per second (%d in %.1f s of engine time)",
                work.queriesPerSecond, work.queryMethods, work.seconds))
            note("wrote \(rows.count) rows to \(run.file("results.csv")) and \(figures.count) figures to \(run.file("figures"))")
        } catch {
            for network in connected { await network.close() }
            await context.close()
            // A run that failed before its first query was written (a bad setting) leaves no config behind, so
            // the corrected command is not refused as a different run.
            if created && !FileManager.default.fileExists(atPath: run.file("z")) {
                try? FileManager.default.removeItem(atPath: run.file("config.json"))
                try? FileManager.default.removeItem(atPath: run.file("parts"))
                unlink(run.file(".lock"))
                rmdir(run.path)  // only when empty: --out may name a folder that held other things before
            }
            throw error
        }
    }
}

