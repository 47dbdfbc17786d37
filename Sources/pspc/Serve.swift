import ArgumentParser
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import PSPCCluster
import PSPCCore
import PSPCData
import PSPCWire

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Answer denoise requests (an exact denoiser per request) over the network endpoint's protocol.",
        discussion: """
            A long-running coordinator: it loads the training set (or starts / connects to its workers) once and \
            answers DenoiseRequest frames from clients that hold the token in --token-file, e.g. the Python \
            client (from pspc_net import Client). Each request names its method and options; pspc-flex masks \
            come from the --heatmaps given here. Prints `pspc serve listening on HOST:PORT` on standard output \
            once it serves; SIGTERM or SIGINT stops accepting, lets the requests taken finish, and exits 0.
            """)

    @Option(help: "Address to listen on, HOST:PORT (port 0 picks a free port).") var listen: String
    @Option(help: "File holding the token clients must prove they know (at least 16 bytes).") var tokenFile: String
    @OptionGroup var engineOptions: EngineOptions
    @Option(help: "pspc-flex: heatmaps .npy, [L, H, W, H, W] or [H, W, H, W], for every request naming pspc-flex.")
    var heatmaps: String?
    @Option(help: "pspc-flex: the t of each heatmap level as a JSON file of numbers (default: the EDM grid with L steps).")
    var heatmapTimes: String?
    @Option(help: "Element type of the answers: float64 (the engine's values, exactly) or float32.")
    var responseDtype: ResponseDType = .float64
    @Option(help: "Requests computed at once (default: 1 in-process, --batches-in-flight with workers); others wait in order.")
    var concurrentRequests: Int?
    @Option(help: "Log level of the server's messages on stderr (connections: info, each request: debug).")
    var serveLogLevel: Logger.Level = .info
    @Option(help: "Serve /metrics, /healthz and /readyz over HTTP on HOST:PORT (port 0 picks a free port).")
    var metricsListen: String?
    @Flag(help: "Stop when standard input closes (a parent that starts the server holds it open).")
    var exitWithParent = false

    enum ResponseDType: String, ExpressibleByArgument, CaseIterable { case float64, float32 }

    func validate() throws {
        if let concurrentRequests, concurrentRequests < 1 {
            throw ValidationError("--concurrent-requests must be at least 1")
        }
        if heatmapTimes != nil && heatmaps == nil { throw ValidationError("--heatmap-times needs --heatmaps") }
    }

    func run() async throws {
        let address = try HostPort(listen)
        let metricsAddress = try metricsListen.map { try HostPort($0) }
        let token = try readClusterToken(tokenFile)
        // Up first, so that a probe sees "loading" while shards load or workers connect.
        let metricsGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let metrics = WorkerMetrics(version: PSPC.configuration.version, ops: WorkerMetrics.serveOps)
        let readiness = MetricsEndpoint.ReadinessState(.notReady("loading the training set"))
        let endpoint = try await ServerLifetime.startMetrics(
            at: metricsAddress, group: metricsGroup, metrics: metrics, readiness: readiness)
        let context = try await engineOptions.context()
        let backend: EngineBackend
        do {
            var flex: FlexMasks?
            if let heatmaps {
                // Loaded and checked once; each request sets its own lambda.
                flex = try MethodOptions.loadHeatmaps(
                    heatmaps, times: heatmapTimes, shape: context.shape, lambda: .constant(1))
            }
            backend = EngineBackend(engine: context.engine, shape: context.shape, flex: flex)
        } catch {
            await context.close()
            throw error
        }
        var info = Pspc_V1_WorkerInfo()
        info.shape = Pspc_V1_ImageShape(context.shape)
        info.imageCount = UInt64(await context.engine.imageCount)
        info.threads = UInt32(engineOptions.threads ?? ProcessInfo.processInfo.activeProcessorCount)
        info.xflip = engineOptions.xflip == .on
        if let cluster = context.cluster {
            info.datasetID = cluster.dataset.datasetID
            info.datasetShards = UInt32(cluster.dataset.shardImageCounts.count)
        } else if let data = engineOptions.data, let manifest = try? Manifest.read(directory: data) {
            info.datasetID = manifest.fingerprint
            info.datasetShards = UInt32(manifest.shards.count)
        }
        var configuration = DenoiseService.Configuration()
        configuration.responseDType = responseDtype == .float32 ? .float32 : .float64
        configuration.concurrentRequests =
            concurrentRequests ?? (context.cluster == nil ? 1 : engineOptions.batchesInFlight)
        let service = try DenoiseService(
            backend: backend, info: info, token: token, nodeID: "serve@\(ProcessInfo.processInfo.hostName):\(getpid())",
            configuration: configuration, logger: Logs.logger("pspc.serve", level: serveLogLevel), metrics: metrics)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let channel: Channel
        do {
            channel = try await service.bind(host: address.host, port: address.port, group: group)
        } catch {
            try? await group.shutdownGracefully()
            await context.close()
            throw ClusterError.invalidConfiguration("cannot listen on \(address): \(listenFailure(error))")
        }
        let bound = channel.localAddress?.port ?? address.port
        note(
            "pspc serve: \(context.source), \(info.imageCount) images of \(context.shape), \(configuration.concurrentRequests) request(s) at once"
        )
        readiness.value = .ready
        var announcements = ["pspc serve listening on \(HostPort(host: address.host, port: bound))"]
        if let endpoint, let metricsAddress {
            let announced = ServerLifetime.bound(metricsAddress, endpoint)
            announcements.append("pspc serve metrics on \(announced)")
            service.logger.info("metrics, /healthz and /readyz on http://\(announced)")
        }
        // SIGTERM / SIGINT: stop accepting, let the requests taken finish, close the engine, exit 0.
        try await ServerLifetime.announceAndServe(
            announcements, channel: channel, exitWithParent: exitWithParent,
            stopping: { readiness.value = .notReady("draining") })
        readiness.value = .notReady("draining")
        note("pspc serve: stopping")
        try await ServerLifetime.drain(seconds: 60) { service.inFlight }
        await context.close()
        note("pspc serve: stopped after \(service.served) requests")
        // As the worker: exit() can hang in OpenBLAS's exit handler waiting for its idle threads.
        _exit(0)
    }
}

/// A `DenoiseBackend` over a `DenoisingEngine`: a request's method and options resolved as `pspc denoise`
/// resolves its command line (`MethodOptions`), pspc-flex masks from the server's heatmaps.
struct EngineBackend: DenoiseBackend {
    let engine: DenoisingEngine
    let shape: ImageShape
    /// The server's heatmaps (its lambda is replaced by each request's), nil without --heatmaps.
    let flex: FlexMasks?

    func denoise(_ queries: QueryBatch, t: Double, method: DenoiseMethod, firstQueryIndex: Int) async throws
        -> [Double]
    {
        try await engine.denoise(queries.values, t: t, method: method, firstQueryIndex: firstQueryIndex).values
    }

    func resolve(method: String, options: Pspc_V1_DenoiseOptions) async throws -> DenoiseMethod {
        guard MethodOptions.names.contains(method), method != "network" else {
            throw WireError.invalidArgument(
                "unknown method '\(method)': use one of empirical, pspc-square, pspc-flex, gaussian, cfdm, ls, els")
        }
        // Options of another method are refused: a misspelt call must not silently compute something else.
        let sized = ["pspc-square", "ls", "els"]
        var given: [(String, [String])] = []
        if options.patchSize != 0 { given.append(("patch_size", sized)) }
        if options.hasPatchSchedule { given.append(("patch_schedule", sized)) }
        if options.hasLambda { given.append(("lambda", ["pspc-flex"])) }
        if options.hasLambdaSchedule { given.append(("lambda_schedule", ["pspc-flex"])) }
        if options.hasSmoothing { given.append(("smoothing", ["cfdm"])) }
        if options.copies != 0 { given.append(("copies", ["cfdm"])) }
        if options.seed != 0 { given.append(("seed", ["cfdm"])) }
        if let stray = given.first(where: { !$0.1.contains(method) }) {
            throw WireError.invalidArgument(
                "option \(stray.0) is for \(stray.1.joined(separator: ", ")), not \(method)")
        }
        switch method {
        case "empirical": return .empirical
        case "gaussian": return .gaussian
        case "ls", "els":
            // The window side P per t (odd), as `pspc denoise --patch-size` or `--scale-schedule`.
            guard (options.patchSize != 0) != options.hasPatchSchedule else {
                throw WireError.invalidArgument("\(method) needs exactly one of patch_size and patch_schedule")
            }
            let sizes: PatchSchedule
            if options.patchSize != 0 {
                sizes = .constant(Int(options.patchSize))
            } else {
                let values = try Self.explicit(options.patchSchedule, field: "patch_schedule").map { value in
                    guard value == value.rounded(), value >= 1, value <= Double(Int32.max) else {
                        throw WireError.invalidArgument("patch_schedule values must be whole numbers >= 1, got \(value)")
                    }
                    return Int(value)
                }
                sizes = try PatchSchedule(t: options.patchSchedule.t, values: values)
            }
            do {
                for p in sizes.values { try DenoiseMethod.validateWindow(patchSize: p) }
            } catch {
                throw WireError.invalidArgument("\(error)")
            }
            return method == "ls" ? .ls(sizes) : .els(sizes)
        case "pspc-square":
            guard (options.patchSize != 0) != options.hasPatchSchedule else {
                throw WireError.invalidArgument("pspc-square needs exactly one of patch_size and patch_schedule")
            }
            if options.patchSize != 0 {
                let s = Int(options.patchSize)
                try CropSet.square(patchSize: s).validate(for: shape)
                return .pspcSquare(.constant(s))
            }
            let spec = options.patchSchedule
            if spec.builtin == "cifar10" && spec.t.isEmpty && spec.values.isEmpty {
                // As `pspc denoise --schedule cifar10`: sizes above the image side mean the whole image.
                let side = min(shape.height, shape.width)
                let builtin = PatchSchedule.cifar10
                return .pspcSquare(try PatchSchedule(t: builtin.t, values: builtin.values.map { min($0, side) }))
            }
            let values: [Int] = try Self.explicit(spec, field: "patch_schedule").map { value in
                guard value == value.rounded(), value >= 1, value <= Double(Int32.max) else {
                    throw WireError.invalidArgument("patch_schedule values must be whole numbers >= 1, got \(value)")
                }
                return Int(value)
            }
            for s in values { try CropSet.square(patchSize: s).validate(for: shape) }
            return .pspcSquare(try PatchSchedule(t: spec.t, values: values))
        case "pspc-flex":
            guard let flex else {
                throw WireError.invalidArgument("pspc-flex needs heatmaps: this server was started without --heatmaps")
            }
            guard options.hasLambda != options.hasLambdaSchedule else {
                throw WireError.invalidArgument("pspc-flex needs exactly one of lambda and lambda_schedule")
            }
            let lambdas: LambdaSchedule
            if options.hasLambda {
                lambdas = .constant(options.lambda)
            } else if options.lambdaSchedule.builtin == "cifar10" && options.lambdaSchedule.t.isEmpty
                && options.lambdaSchedule.values.isEmpty
            {
                lambdas = .cifar10
            } else {
                let spec = options.lambdaSchedule
                lambdas = try LambdaSchedule(t: spec.t, values: try Self.explicit(spec, field: "lambda_schedule"))
            }
            guard lambdas.values.allSatisfy({ $0 > 0 && $0 <= 1 }) else {
                throw WireError.invalidArgument("lambda must be in (0, 1], got \(lambdas.values.map { "\($0)" }.joined(separator: ", "))")
            }
            return .pspcFlex(
                try FlexMasks(
                    heatmaps: flex, lambda: lambdas))
        case "cfdm":
            guard options.hasSmoothing, options.smoothing >= 0, options.smoothing.isFinite else {
                throw WireError.invalidArgument(
                    "cfdm needs smoothing >= 0 and finite\(options.hasSmoothing ? ", got \(options.smoothing)" : "")")
            }
            return .cfdm(smoothing: options.smoothing, copies: options.copies == 0 ? 8 : Int(options.copies), seed: options.seed)
        default:
            throw WireError.invalidArgument("unknown method '\(method)'")
        }
    }

    /// The values of a schedule given as lists (a builtin name other than cifar10, or both kinds, are refused).
    static func explicit(_ spec: Pspc_V1_DenoiseSchedule, field: String) throws -> [Double] {
        guard spec.builtin.isEmpty else {
            throw WireError.invalidArgument(
                "\(field): builtin '\(spec.builtin)' is not known (cifar10 is), or comes with t and values")
        }
        guard !spec.t.isEmpty, spec.t.count == spec.values.count else {
            throw WireError.invalidArgument(
                "\(field) needs as many values as grid times, at least one (\(spec.values.count) vs \(spec.t.count))")
        }
        return spec.values
    }
}

extension FlexMasks {
    /// The same heatmaps and level times with another lambda schedule.
    init(heatmaps other: FlexMasks, lambda: LambdaSchedule) throws {
        try self.init(
            maps: Array(other.heatmaps.joined()), levels: other.heatmaps.count, height: other.height,
            width: other.width, levelTimes: other.levelTimes, lambda: lambda)
    }
}
