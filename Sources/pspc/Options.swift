import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import PSPCCluster
import PSPCCore
import PSPCData
import PSPCExperiments

enum Switch: String, ExpressibleByArgument, CaseIterable {
    case on, off
}

/// Where the training set is and how to hold it: in this process (default), on N local worker processes, or
/// on a cluster of workers.
struct EngineOptions: ParsableArguments {
    @Option(help: "Dataset directory written by `pspc ingest` (not needed with --cluster).") var data: String?
    @Option(help: "Append horizontally flipped copies of every training image, as the paper's code does.")
    var xflip: Switch = .on
    @Option(help: "Threads for the kernels (default: all cores).") var threads: Int?
    @Option(help: "Start N worker processes on loopback and compute through them.") var localWorkers: Int?
    @Option(help: "Cluster file (JSON): workers, token file, deadline.") var cluster: String?
    @Option(help: "Copies of each shard across local workers (with --local-workers).") var replication: Int = 1
    @Option(help: "Seconds a worker may take to answer one request before its replica is asked (default 300, at most 86400).")
    var deadline: Double?
    @Option(help: "Log level of the coordinator's messages on stderr: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .notice
    @Option(help: "Queries per request.") var batchSize: Int = 256
    @Option(help: "Batches in flight at once with workers (default 3; in-process: 1).") var batchesInFlight: Int = 3

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if localWorkers != nil && cluster != nil {
            throw ValidationError("give --local-workers or --cluster, not both")
        }
        if let localWorkers, localWorkers < 1 { throw ValidationError("--local-workers must be at least 1") }
        if replication < 1 { throw ValidationError("--replication must be at least 1") }
        if let deadline {
            do { try ClusterFile.checkSeconds(deadline, name: "--deadline") } catch let error as ClusterError {
                throw ValidationError(error.description)
            }
        }
        if batchSize < 1 || batchesInFlight < 1 {
            throw ValidationError("--batch-size and --batches-in-flight must be at least 1")
        }
    }

    /// What a command computes with; `close()` stops local workers and connections.
    struct Context {
        var shape: ImageShape
        var source: String
        var engine: DenoisingEngine
        var cluster: Cluster?
        var local: LocalCluster?
        var group: EventLoopGroup?

        func close() async {
            if let cluster {
                // What crossed the wire, framing and MACs included, for operators and scripts/bench-scale.sh.
                let (sent, received) = cluster.traffic.totals
                Logs.logger("pspc.coordinator", level: Logs.level).info(
                    "wire traffic",
                    metadata: [
                        "sent_bytes": "\(sent)", "received_bytes": "\(received)",
                        // Request frames by op, as workers count them in pspc_requests_total.
                        "requests_sent": "\(cluster.traffic.requestsSummary)",
                    ])
            }
            await cluster?.close()
            local?.stop()
            try? await group?.shutdownGracefully()
        }
    }

    func context() async throws -> Context {
        guard cluster != nil || data != nil else { throw ValidationError("--data is required (or --cluster)") }
        if cluster == nil && localWorkers == nil {
            let loading = ProgressBar("load shards", total: 1)
            let (manifest, shards) = try ShardStore.loadShards(
                directory: data!, xflip: xflip == .on, threads: threads ?? ProcessInfo.processInfo.activeProcessorCount
            ) { done, total in
                loading.update(done, total: total)
            }
            return Context(
                shape: manifest.shape, source: manifest.source,
                engine: try DenoisingEngine(sources: shards, batchSize: batchSize))
        }
        var local: LocalCluster?
        var addresses: [HostPort]
        var tokenFile: String
        var deadline = self.deadline ?? ClusterFile.defaultDeadlineSeconds
        var retry = 5.0
        var expectedReplication: Int?
        var source = "cluster"
        if let localWorkers {
            let manifest = try Manifest.read(directory: data!)
            source = manifest.source
            let started = try LocalCluster.start(
                workers: localWorkers, data: data!, replication: replication, threadsPerWorker: threads,
                xflip: xflip == .on, log: note)
            local = started
            addresses = started.addresses
            tokenFile = started.tokenFile
        } else {
            let file = try ClusterFile.read(cluster!)
            addresses = try file.workers.map { try HostPort($0) }
            tokenFile = file.tokenFile
            deadline = self.deadline ?? file.deadlineSeconds ?? ClusterFile.defaultDeadlineSeconds
            retry = file.retrySeconds ?? retry
            expectedReplication = file.replication
            if let data, let manifest = try? Manifest.read(directory: data) { source = manifest.source }
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let connected = try await Cluster.connect(
                to: addresses, token: try readClusterToken(tokenFile), group: group, deadline: deadline,
                retryInterval: retry, xflip: xflip == .on, logger: Logs.logger("pspc.coordinator", level: logLevel))
            if let wanted = expectedReplication {
                let holders = await connected.router.holders
                // A warning, not an error: a worker unreachable at start leaves its shards with fewer holders,
                // and the run can still be exact while one holder of each shard answers.
                let short = holders.indices.filter { holders[$0].count < wanted }
                if !short.isEmpty {
                    note(
                        "warning: shards \(short.map(String.init).joined(separator: ", ")) have fewer reachable holders than the replication \(wanted) the cluster file asks for"
                    )
                }
            }
            let engine = try DenoisingEngine(
                sources: connected.sources(), batchSize: batchSize, concurrentSources: true,
                batchesInFlight: batchesInFlight, group: connected)
            return Context(
                shape: connected.shape, source: source, engine: engine, cluster: connected, local: local, group: group)
        } catch {
            local?.stop()
            try? await group.shutdownGracefully()
            throw error
        }
    }
}

/// Which denoiser, and its settings.
struct MethodOptions: ParsableArguments {
    @Option(help: "empirical | pspc-square | pspc-flex | gaussian | cfdm | ls | els | network") var method: String?
    @Option(help: "pspc-square: patch side s; ls / els: window side P (odd).") var patchSize: Int?
    @Option(
        help:
            "pspc-square: 'cifar10' (the paper's, sizes above the image side mean the whole image) or a JSON file {\"t\": [...], \"values\": [...]}."
    )
    var schedule: String?
    @Option(help: "ls / els: window side P per t, a JSON file {\"t\": [...], \"values\": [...]} (odd sizes).")
    var scaleSchedule: String?
    @Option(help: "pspc-flex: heatmaps .npy, [L, H, W, H, W] or [H, W, H, W] (output pixel -> input map).")
    var heatmaps: String?
    @Option(
        help: "pspc-flex: the t of each heatmap level as a JSON file of numbers (default: the EDM grid with L steps).")
    var heatmapTimes: String?
    @Option(help: "pspc-flex: mask mass threshold lambda in (0, 1].") var lambda: Double?
    @Option(help: "pspc-flex: 'cifar10' or a JSON file {\"t\": [...], \"values\": [...]}.") var lambdaSchedule: String?
    @Option(help: "cfdm: smoothing scale of the query perturbations.") var smoothing: Double?
    @Option(help: "cfdm: number of perturbed copies per query.") var copies: Int = 8
    @Option(help: "cfdm: seed of the perturbations.") var cfdmSeed: UInt64 = 0

    static let names = ["empirical", "pspc-square", "pspc-flex", "gaussian", "cfdm", "ls", "els", "network"]

    var isNetwork: Bool { method == "network" }

    func validate() throws {
        guard let method else { return }
        try validate(method)
    }

    /// Checks that `method` (one of `names`) has the settings it needs.
    func validate(_ method: String) throws {
        guard Self.names.contains(method) else {
            throw ValidationError("unknown method '\(method)': use one of \(Self.names.joined(separator: ", "))")
        }
        if method == "pspc-square" && (patchSize == nil) == (schedule == nil) {
            throw ValidationError("pspc-square needs exactly one of --patch-size and --schedule")
        }
        if method == "ls" || method == "els" {
            if (patchSize == nil) == (scaleSchedule == nil) {
                throw ValidationError("\(method) needs exactly one of --patch-size and --scale-schedule")
            }
            if let patchSize, patchSize < 1 || patchSize % 2 == 0 {
                throw ValidationError(
                    "\(method): --patch-size must be odd and at least 1 (windows are centred on a pixel), got \(patchSize)")
            }
        }
        if method == "pspc-flex" {
            if heatmaps == nil { throw ValidationError("pspc-flex needs --heatmaps") }
            if (lambda == nil) == (lambdaSchedule == nil) {
                throw ValidationError("pspc-flex needs exactly one of --lambda and --lambda-schedule")
            }
            if let lambda, !(lambda > 0 && lambda <= 1) { throw ValidationError("--lambda must be in (0, 1]") }
        }
        if method == "cfdm" {
            guard let smoothing, smoothing >= 0, smoothing.isFinite else {
                throw ValidationError("cfdm needs --smoothing >= 0")
            }
            if copies < 1 { throw ValidationError("--copies must be at least 1") }
        }
    }

    /// The method for images of `shape`.
    func resolve(for shape: ImageShape) throws -> DenoiseMethod {
        guard let method else { throw ValidationError("--method is required") }
        return try resolve(method, for: shape)
    }

    /// One variant per name of `methods` (`network` included), each with this command's settings (for
    /// `pspc sample --compare`).
    func variants(_ methods: [String], for shape: ImageShape) throws -> [Variant] {
        try methods.map { name in
            try validate(name)
            if name == "network" { return .network }
            let method = try resolve(name, for: shape)
            let param: Variant.Param
            switch name {
            case "pspc-square", "ls", "els": param = patchSize.map { .patchSize($0) } ?? .schedule
            case "pspc-flex": param = lambda.map { .lambda($0) } ?? .schedule
            default: param = .none
            }
            return Variant(method: name, param: param, engineMethod: method)
        }
    }

    /// One variant per item of `items`: a method name with this command's settings, or `method=SETTING` with its
    /// own (a patch size or lambda, or a schedule file), so one comparison can hold, e.g., LS and ELS each at its
    /// calibrated schedule: `ls=calib/ls-schedule.json,els=calib/els-schedule.json,pspc-square=7`.
    func variants(items: [String], for shape: ImageShape) throws -> [Variant] {
        try items.flatMap { item -> [Variant] in
            guard let equals = item.firstIndex(of: "=") else { return try variants([item], for: shape) }
            let name = String(item[..<equals]), setting = String(item[item.index(after: equals)...])
            guard !setting.isEmpty else { throw ValidationError("'\(item)': give a setting after '='") }
            var options = self
            (options.patchSize, options.schedule, options.scaleSchedule) = (nil, nil, nil)
            (options.lambda, options.lambdaSchedule) = (nil, nil)
            switch name {
            case "pspc-square", "ls", "els":
                if let size = Int(setting) {
                    options.patchSize = size
                } else if name == "pspc-square" {
                    options.schedule = setting
                } else {
                    options.scaleSchedule = setting
                }
            case "pspc-flex":
                if let lambda = Double(setting) { options.lambda = lambda } else { options.lambdaSchedule = setting }
            default:
                throw ValidationError(
                    "'\(item)': only pspc-square, pspc-flex, ls and els take a setting (a size, a lambda or a schedule file)")
            }
            return try options.variants([name], for: shape)
        }
    }

    /// This command's method settings, for config.json.
    var config: [(String, JSONValue)] {
        [
            ("patchSize", patchSize.map { .int($0) } ?? .null), ("schedule", schedule.map { .string($0) } ?? .null),
            ("scaleSchedule", scaleSchedule.map { .string($0) } ?? .null),
            ("heatmaps", heatmaps.map { .string($0) } ?? .null),
            ("heatmapTimes", heatmapTimes.map { .string($0) } ?? .null), ("lambda", lambda.map { .number($0) } ?? .null),
            ("lambdaSchedule", lambdaSchedule.map { .string($0) } ?? .null),
            ("cfdm", .object([("smoothing", smoothing.map { .number($0) } ?? .null), ("copies", .int(copies)), ("seed", .int(Int(cfdmSeed)))])),
        ]
    }

    private func resolve(_ method: String, for shape: ImageShape) throws -> DenoiseMethod {
        switch method {
        case "empirical": return .empirical
        case "gaussian": return .gaussian
        case "cfdm": return .cfdm(smoothing: smoothing ?? 0, copies: copies, seed: cfdmSeed)
        case "pspc-square":
            if let patchSize {
                try CropSet.square(patchSize: patchSize).validate(for: shape)
                return .pspcSquare(.constant(patchSize))
            }
            let loaded: PatchSchedule = try Self.loadSchedule(schedule!, builtin: .cifar10)
            let side = min(shape.height, shape.width)
            if schedule == "cifar10", loaded.values.contains(where: { $0 > side }) {
                note(
                    "note: the cifar10 schedule is for 32x32 images; its sizes above \(side) mean the whole image here")
                return .pspcSquare(try PatchSchedule(t: loaded.t, values: loaded.values.map { min($0, side) }))
            }
            for s in loaded.values { try CropSet.square(patchSize: s).validate(for: shape) }
            return .pspcSquare(loaded)
        case "ls", "els":
            let sizes: PatchSchedule
            if let patchSize {
                sizes = .constant(patchSize)
            } else {
                guard let scaleSchedule else { throw ValidationError("\(method) needs --patch-size or --scale-schedule") }
                sizes = try Self.loadSchedule(scaleSchedule, builtin: .cifar10)
            }
            for p in sizes.values { try DenoiseMethod.validateWindow(patchSize: p) }
            return method == "ls" ? .ls(sizes) : .els(sizes)
        case "pspc-flex":
            let lambdas: LambdaSchedule =
                try lambda.map { .constant($0) } ?? Self.loadSchedule(lambdaSchedule!, builtin: .cifar10)
            guard lambdas.values.allSatisfy({ $0 > 0 && $0 <= 1 }) else {
                throw PSPCError.invalidArgument("lambda schedule values must be in (0, 1]")
            }
            return .pspcFlex(try loadHeatmaps(shape: shape, lambda: lambdas))
        case "network":
            throw PSPCError.invalidArgument("the network is not an engine method")
        default:
            throw PSPCError.invalidArgument("unknown method '\(method)'")
        }
    }

    static func loadSchedule<V>(_ spec: String, builtin: Schedule<V>) throws -> Schedule<V> {
        if spec == "cifar10" { return builtin }
        let bytes = try FileIO.read(spec)
        do {
            let decoded = try JSONDecoder().decode(Schedule<V>.self, from: Data(bytes))
            return try Schedule(t: decoded.t, values: decoded.values)
        } catch let error as PSPCError {
            throw DataError.invalid("\(spec): \(error.description)")
        } catch {
            throw DataError.corrupt(
                path: spec, reason: "not a schedule file {\"t\": [...], \"values\": [...]} (\(error))")
        }
    }

    private func loadHeatmaps(shape: ImageShape, lambda: LambdaSchedule) throws -> FlexMasks {
        try Self.loadHeatmaps(heatmaps!, times: heatmapTimes, shape: shape, lambda: lambda)
    }

    /// PSPC-Flex masks from a heatmap file (`[L, H, W, H, W]` or `[H, W, H, W]`) and its level times (a JSON
    /// list; default: the EDM grid with L steps, or beside the file as `.times.json` when `pspc heatmap` wrote it).
    static func loadHeatmaps(_ heatmaps: String, times heatmapTimes: String?, shape: ImageShape, lambda: LambdaSchedule)
        throws -> FlexMasks
    {
        let array = try NPY.read(path: heatmaps)
        let s = array.shape, h = shape.height, w = shape.width
        let levels: Int
        if s == [h, w, h, w] {
            levels = 1
        } else if s.count == 5 && Array(s[1...]) == [h, w, h, w] {
            levels = s[0]
        } else {
            throw DataError.invalid(
                "\(heatmaps): heatmaps are \(s), expected [L, \(h), \(w), \(h), \(w)] or [\(h), \(w), \(h), \(w)]")
        }
        var times = EDM.grid(steps: max(levels, 2))
        if levels == 1 { times = [1] }
        let besideFile = (heatmaps.hasSuffix(".npy") ? String(heatmaps.dropLast(4)) : heatmaps) + ".times.json"
        let timesFile = heatmapTimes ?? (FileManager.default.fileExists(atPath: besideFile) ? besideFile : nil)
        if let heatmapTimes = timesFile {
            let bytes = try FileIO.read(heatmapTimes)
            guard let decoded = try? JSONDecoder().decode([Double].self, from: Data(bytes)) else {
                throw DataError.corrupt(path: heatmapTimes, reason: "not a JSON list of numbers")
            }
            times = decoded
        }
        do {
            return try FlexMasks(
                maps: array.asDoubles(), levels: levels, height: h, width: w, levelTimes: times, lambda: lambda)
        } catch let error as PSPCError {
            throw DataError.invalid("\(heatmaps): \(error.description)")
        }
    }
}

/// The trained networks, for `--method network` and the studies: running endpoints, or ones pspc starts from
/// checkpoints. A sweep takes several, each named (`--local-network unet=CKPT --local-network dit=CKPT2`,
/// `--network NAME=HOST:PORT`); the other commands take one.
struct NetworkOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "A running network endpoint (python -m pspc_net.serve); NAME=HOST:PORT in a study of several (repeatable).",
            valueName: "[name=]host:port"))
    var network: [String] = []
    @Option(help: "Token file of the --network endpoints.") var networkTokenFile: String?
    @Option(
        help: ArgumentHelp(
            "Start the Python endpoint on this checkpoint (the embedded default); NAME=CHECKPOINT in a study of several (repeatable).",
            valueName: "[name=]checkpoint"))
    var localNetwork: [String] = []
    @Option(help: "Device for --local-network: cpu or cuda.") var networkDevice: String = "cpu"
    @Option(
        help: ArgumentHelp(
            "--local-network: how the network predicts, edm (an EDM denoiser) or vp-eps (a VP epsilon network).",
            valueName: "adapter"))
    var networkAdapter: String?
    @Option(help: ArgumentHelp("--local-network: the image shape when the checkpoint does not say.", valueName: "C,H,W"))
    var networkShape: String?
    @Option(help: "--local-network with vp-eps: the noise schedule, linear or cosine.") var networkVpSchedule: String?
    @Option(help: "--local-network with vp-eps: timesteps of the schedule (the endpoint's default 1000).")
    var networkVpSteps: Int?
    @Flag(help: "--local-network with vp-eps: round the timestep to an integer.") var networkVpDiscrete = false
    @Option(help: "--local-network: images per network call (the endpoint's default 256).") var networkBatch: Int?
    @Option(
        help: ArgumentHelp(
            "--local-network: any other option of python -m pspc_net.serve, as KEY=VALUE (--KEY VALUE) or KEY (--KEY); repeatable, e.g. threads=4, response-dtype=float64.",
            valueName: "key=value"))
    var networkOption: [String] = []

    /// One network of the options: its name (nil when it is the only one and unnamed), where it is, and
    /// whether pspc starts it.
    struct Entry: Equatable {
        var name: String?
        var value: String
        var local: Bool
        var variant: Variant { .network(named: name) }
    }

    /// The networks in order: the --local-network ones as given, then the --network ones. The first is the one
    /// a study's `mse_to_network` and a reverse sweep's trajectories refer to.
    var entries: [Entry] {
        localNetwork.map { Self.entry($0, local: true) } + network.map { Self.entry($0, local: false) }
    }

    /// `NAME=VALUE` when the text before the first `=` is a valid network name, else an unnamed `VALUE`.
    static func entry(_ text: String, local: Bool) -> Entry {
        if let cut = text.firstIndex(of: "="), Variant.isValidNetworkName(String(text[..<cut])) {
            return Entry(name: String(text[..<cut]), value: String(text[text.index(after: cut)...]), local: local)
        }
        return Entry(name: nil, value: text, local: local)
    }

    /// These options with `entry` as their only network (under its name).
    func only(_ entry: Entry) -> NetworkOptions {
        var one = self
        let text = entry.name.map { "\($0)=\(entry.value)" } ?? entry.value
        (one.localNetwork, one.network) = entry.local ? ([text], []) : ([], [text])
        return one
    }

    func validate() throws {
        let entries = self.entries
        if entries.count > 1 {
            if let unnamed = entries.first(where: { $0.name == nil }) {
                throw ValidationError(
                    "with several networks every one needs a name: '\(unnamed.value)' has none (NAME=\(unnamed.local ? "CHECKPOINT" : "HOST:PORT"))")
            }
            let names = entries.compactMap(\.name)
            if let twice = names.first(where: { name in names.filter { $0 == name }.count > 1 }) {
                throw ValidationError("the network name '\(twice)' is given twice")
            }
        }
        if let empty = entries.first(where: { $0.value.isEmpty }) {
            throw ValidationError("network '\(empty.name ?? "")' has no \(empty.local ? "checkpoint" : "address")")
        }
        if !network.isEmpty && networkTokenFile == nil { throw ValidationError("--network needs --network-token-file") }
        if localNetwork.isEmpty && !network.isEmpty && !endpointArguments.isEmpty {
            throw ValidationError("--network-adapter, --network-shape, --network-vp-*, --network-batch and --network-option configure --local-network, not a running --network")
        }
        if let networkAdapter, !["edm", "vp-eps"].contains(networkAdapter) {
            throw ValidationError("--network-adapter must be edm or vp-eps")
        }
        if let networkShape {
            let sides = networkShape.split(separator: ",", omittingEmptySubsequences: false).map { Int($0) }
            guard sides.count == 3, sides.allSatisfy({ ($0 ?? 0) > 0 }) else {
                throw ValidationError("--network-shape must be C,H,W (positive integers)")
            }
        }
        if let networkVpSchedule, !["linear", "cosine"].contains(networkVpSchedule) {
            throw ValidationError("--network-vp-schedule must be linear or cosine")
        }
        if let networkVpSteps, networkVpSteps < 1 { throw ValidationError("--network-vp-steps must be at least 1") }
        if let networkBatch, networkBatch < 1 { throw ValidationError("--network-batch must be at least 1") }
        for option in networkOption {
            let key = option.split(separator: "=", maxSplits: 1).first.map(String.init) ?? ""
            guard !key.isEmpty, !key.hasPrefix("-"), !Self.reservedEndpointOptions.contains(key) else {
                throw ValidationError(
                    "--network-option '\(option)': expected KEY=VALUE or KEY, KEY without dashes and not one pspc sets (\(Self.reservedEndpointOptions.joined(separator: ", ")))")
            }
        }
    }

    /// Options of pspc_net.serve that pspc itself sets for --local-network.
    static let reservedEndpointOptions = ["checkpoint", "listen", "token-file", "device", "exit-with-parent"]

    /// What --local-network passes on to `python -m pspc_net.serve`, in the order of the options above.
    var endpointArguments: [String] {
        var out: [String] = []
        if let networkAdapter { out += ["--adapter", networkAdapter] }
        if let networkShape { out += ["--shape", networkShape] }
        if let networkVpSchedule { out += ["--vp-schedule", networkVpSchedule] }
        if let networkVpSteps { out += ["--vp-steps", String(networkVpSteps)] }
        if networkVpDiscrete { out.append("--vp-discrete") }
        if let networkBatch { out += ["--batch", String(networkBatch)] }
        for option in networkOption {
            let parts = option.split(separator: "=", maxSplits: 1).map(String.init)
            out.append("--" + parts[0])
            if parts.count == 2 { out.append(parts[1]) }
        }
        return out
    }

    /// A connected network denoiser and what to stop afterwards.
    struct Connected {
        var denoiser: NetworkDenoiser
        var local: LocalNetwork?
        var group: EventLoopGroup

        func close() async {
            denoiser.close()
            local?.stop()
            try? await group.shutdownGracefully()
        }
    }

    /// The one network of a command that takes one.
    func connect() async throws -> Connected {
        let entries = self.entries
        guard entries.count <= 1 else {
            throw ValidationError(
                "this command takes one network (\(entries.count) were given); a sweep compares several")
        }
        guard let entry = entries.first else { throw Self.noNetwork }
        return try await connect(entry)
    }

    static let noNetwork = ValidationError("--method network needs --network HOST:PORT or --local-network CHECKPOINT")

    /// Every network, in the order of `entries` (at least one); on a failure the ones already started are
    /// stopped.
    func connectAll() async throws -> [Connected] {
        guard !entries.isEmpty else { throw Self.noNetwork }
        var connected: [Connected] = []
        do {
            for entry in entries { connected.append(try await connect(entry)) }
        } catch {
            for network in connected { await network.close() }
            throw error
        }
        return connected
    }

    private func connect(_ entry: Entry) async throws -> Connected {
        var local: LocalNetwork?
        let address: HostPort
        let token: [UInt8]
        if entry.local {
            let started = try LocalNetwork.start(
                checkpoint: entry.value, device: networkDevice, arguments: endpointArguments, log: note)
            local = started
            address = started.address
            token = started.token
        } else {
            address = try HostPort(entry.value)
            token = try readClusterToken(networkTokenFile!)
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let denoiser = try await NetworkDenoiser.connect(to: address, token: token, group: group)
            return Connected(denoiser: denoiser, local: local, group: group)
        } catch {
            local?.stop()
            try? await group.shutdownGracefully()
            throw error
        }
    }
}
