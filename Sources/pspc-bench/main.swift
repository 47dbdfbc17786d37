// Engine benchmark (not a test): per-query times of the engine against a straightforward implementation
// run in the same process on the same data, and their ratio. Fashion-MNIST, N training images without
// x-flip, test-set queries at one t. Run through scripts/bench.sh.
import Dispatch
import Foundation
import NIOPosix
import PSPCCluster
import PSPCCore
import PSPCData
import PSPCKernels

struct Settings {
    var trainCount = 10_000
    var queries = 256
    var baselineQueries = 8
    var t = 1.09
    var patchSize = 7
    var threads = ProcessInfo.processInfo.activeProcessorCount
    /// With N > 0: also run through N local worker processes and compare.
    var clusterWorkers = 0
    /// Engine and cluster timings are the best of this many runs (the machine is shared and noisy).
    var repeats = 3
    /// PSPC-Flex: lambda, queries timed per kernel, optional heatmaps `[H, W, H, W]` (.npy; default: three
    /// synthetic profiles).
    var lambda = 0.5
    var flexQueries = 16
    var heatmaps: String?
    /// "all" (empirical, square, flex) or "flex".
    var methods = "all"
    /// Colour images: 3x32x32 made from Fashion-MNIST (three images per colour image, padded to 32x32).
    var colour = false

    init() {
        var args = CommandLine.arguments.dropFirst().makeIterator()
        while let flag = args.next() {
            guard let value = args.next() else { fatalError("\(flag) needs a value") }
            switch flag {
            case "--train": trainCount = Int(value)!
            case "--queries": queries = Int(value)!
            case "--baseline-queries": baselineQueries = Int(value)!
            case "--t": t = Double(value)!
            case "--patch-size": patchSize = Int(value)!
            case "--threads": threads = Int(value)!
            case "--cluster-workers": clusterWorkers = Int(value)!
            case "--repeat": repeats = max(1, Int(value)!)
            case "--lambda": lambda = Double(value)!
            case "--flex-queries": flexQueries = Int(value)!
            case "--heatmaps": heatmaps = value
            case "--methods": methods = value
            case "--colour": colour = value == "1" || value == "true"
            default: fatalError("unknown option \(flag)")
            }
        }
    }
}

func seconds(repeats: Int = 1, _ body: () async throws -> Void) async rethrows -> Double {
    var best = Double.infinity
    for _ in 0..<repeats {
        let start = DispatchTime.now().uptimeNanoseconds
        try await body()
        best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
    return best
}

/// The paper's released code, transcribed: one crop at a time, each crop's posterior mean streamed over the
/// training set with a running log-sum-exp, then the overlap average. Float32 storage, float64 sums.
func straightforwardComposite(z: [Double], t: Double, train: [Float], count n: Int, side: Int, patch s: Int) -> [Double]
{
    let dim = side * side
    var sum = [Double](repeating: 0, count: dim), cover = [Double](repeating: 0, count: dim)
    var mean = [Double](repeating: 0, count: s * s)
    for y0 in 0...(side - s) {
        for x0 in 0...(side - s) {
            var m = -Double.infinity, total = 0.0
            for j in 0..<(s * s) { mean[j] = 0 }
            for i in 0..<n {
                var d = 0.0
                for dy in 0..<s {
                    let row = (y0 + dy) * side + x0
                    for dx in 0..<s {
                        let diff = z[row + dx] - Double(train[i * dim + row + dx])
                        d += diff * diff
                    }
                }
                let l = -d / (2 * t * t)
                if l > m {
                    let scale = exp(m - l)
                    total *= scale
                    for j in 0..<(s * s) { mean[j] *= scale }
                    m = l
                }
                let w = exp(l - m)
                total += w
                for dy in 0..<s {
                    let row = (y0 + dy) * side + x0
                    for dx in 0..<s { mean[dy * s + dx] += w * Double(train[i * dim + row + dx]) }
                }
            }
            for dy in 0..<s {
                for dx in 0..<s {
                    let p = (y0 + dy) * side + x0 + dx
                    sum[p] += mean[dy * s + dx] / total
                    cover[p] += 1
                }
            }
        }
    }
    return (0..<dim).map { sum[$0] / cover[$0] }
}

/// The empirical denoiser one training image at a time.
func straightforwardEmpirical(z: [Double], t: Double, train: [Float], count n: Int) -> [Double] {
    let dim = z.count
    var m = -Double.infinity, total = 0.0
    var mean = [Double](repeating: 0, count: dim)
    for i in 0..<n {
        var d = 0.0
        for j in 0..<dim {
            let diff = z[j] - Double(train[i * dim + j])
            d += diff * diff
        }
        let l = -d / (2 * t * t)
        if l > m {
            let scale = exp(m - l)
            total *= scale
            for j in 0..<dim { mean[j] *= scale }
            m = l
        }
        let w = exp(l - m)
        total += w
        for j in 0..<dim { mean[j] += w * Double(train[i * dim + j]) }
    }
    return mean.map { $0 / total }
}

/// Runs `body` for each query on `threads` threads (the baselines use every core too).
func parallelQueries(_ count: Int, threads: Int, _ body: @escaping @Sendable (Int) -> [Double]) -> [[Double]] {
    final class Box: @unchecked Sendable {
        var results: [[Double]]; let lock = NSLock(); init(_ n: Int) { results = Array(repeating: [], count: n) }
    }
    let box = Box(count)
    DispatchQueue.concurrentPerform(iterations: threads) { worker in
        var i = worker
        while i < count {
            let r = body(i)
            box.lock.lock(); box.results[i] = r; box.lock.unlock()
            i += threads
        }
    }
    return box.results
}

/// 3x32x32 colour images from grey 28x28 ones: channel c of image j is image 3j + c, centred with a 2-pixel border.
func colourImages(_ grey: ImageArray, count: Int) -> ImageArray {
    var pixels = [UInt8](repeating: 0, count: count * 3 * 1024)
    for j in 0..<count {
        for c in 0..<3 {
            let source = (3 * j + c) % grey.count
            for y in 0..<28 {
                for x in 0..<28 {
                    pixels[((j * 3 + c) * 32 + y + 2) * 32 + x + 2] = grey.pixels[source * 784 + y * 28 + x]
                }
            }
        }
    }
    return ImageArray(pixels: pixels, count: count, shape: ImageShape(channels: 3, height: 32, width: 32))
}

let settings = Settings()
let (trainImages, testImages) = try { () throws -> (ImageArray, ImageArray) in
    let train = try IDXReader.read(
        path: DatasetSource.fashionMNISTDirectory + "/train-images-idx3-ubyte.gz",
        limit: settings.colour ? min(60_000, 3 * settings.trainCount) : settings.trainCount)
    let test = try IDXReader.read(
        path: DatasetSource.fashionMNISTDirectory + "/t10k-images-idx3-ubyte.gz",
        limit: settings.colour ? 3 * settings.queries : settings.queries)
    guard settings.colour else { return (train, test) }
    guard settings.methods == "flex" else { fatalError("--colour 1 needs --methods flex") }
    return (colourImages(train, count: settings.trainCount), colourImages(test, count: settings.queries))
}()
let shape = trainImages.shape, dim = shape.dimension
let eps = NormalNoise(seed: 0).normals(stream: 0, count: settings.queries * dim)
let z = (0..<(settings.queries * dim)).map { Double(testImages.pixels[$0]) / 127.5 - 1 + settings.t * eps[$0] }
let trainFloat = trainImages.pixels.map { Float($0) / 127.5 - 1 }

print(
    "pspc engine benchmark: Fashion-MNIST\(settings.colour ? " as 3x32x32 colour" : ""), N = \(trainImages.count) training images (no x-flip), \(settings.queries) test queries, t = \(settings.t)"
)
print(
    "kernels: \(String(cString: pspc_kernel_level_name())), threads: \(settings.threads), OpenBLAS threads: \(ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"] ?? "default")"
)
print("memory: training images held as uint8, \(trainImages.pixels.count) bytes")

let engine = try DenoisingEngine(sources: [
    InProcessShard(
        images: try ImageSet(pixels: trainImages.pixels, count: trainImages.count, shape: shape, xflip: false),
        threads: settings.threads)
])
_ = try await engine.denoise(Array(z[0..<dim]), t: settings.t, method: .empirical)  // warm up

let nb = min(settings.baselineQueries, settings.queries)
let baseZ = (0..<nb).map { Array(z[($0 * dim)..<(($0 + 1) * dim)]) }
let threads = settings.threads

var engineEmpirical: [Double] = [], engineSquare: [Double] = []
var engineEmpiricalSeconds = 0.0, engineSquareSeconds = 0.0
if settings.methods == "all" {
    engineEmpiricalSeconds = try await seconds(repeats: settings.repeats) {
        engineEmpirical = try await engine.denoise(z, t: settings.t, method: .empirical).values
    }
    var baseEmpirical: [[Double]] = []
    let baseEmpiricalSeconds = await seconds {
        baseEmpirical = parallelQueries(nb, threads: threads) {
            straightforwardEmpirical(z: baseZ[$0], t: settings.t, train: trainFloat, count: trainImages.count)
        }
    }
    engineSquareSeconds = try await seconds(repeats: settings.repeats) {
        engineSquare = try await engine.denoise(z, t: settings.t, method: .pspcSquare(.constant(settings.patchSize))).values
    }
    var baseSquare: [[Double]] = []
    let baseSquareSeconds = await seconds {
        baseSquare = parallelQueries(nb, threads: threads) {
            straightforwardComposite(
                z: baseZ[$0], t: settings.t, train: trainFloat, count: trainImages.count, side: shape.width,
                patch: settings.patchSize)
        }
    }

    func agreement(_ engine: [Double], _ base: [[Double]]) -> Double {
        var worst = 0.0
        for (q, b) in base.enumerated() { for j in 0..<dim { worst = max(worst, abs(engine[q * dim + j] - b[j])) } }
        return worst
    }

    let rows: [(String, Double, Double, Double)] = [
        (
            "empirical", engineEmpiricalSeconds / Double(settings.queries), baseEmpiricalSeconds / Double(nb),
            agreement(engineEmpirical, baseEmpirical)
        ),
        (
            "pspc-square s=\(settings.patchSize)", engineSquareSeconds / Double(settings.queries),
            baseSquareSeconds / Double(nb), agreement(engineSquare, baseSquare)
        ),
    ]
    print("")
    print("method             engine ms/query   straightforward ms/query   speed-up   max |diff|")
    for (name, e, b, diff) in rows {
        print(String(format: "%-18@ %15.3f   %24.2f   %7.1fx   %.1e", name as NSString, e * 1000, b * 1000, b / e, diff))
    }
    print("(straightforward: \(nb) queries, one crop at a time streamed over the training set, on \(threads) threads)")
}

// MARK: - PSPC-Flex: row runs against the per-pixel kernel

/// Synthetic gradient heatmaps shaped like a trained network's (docs/science.md section 4): a peak at the output
/// pixel (width `peak`), a broad halo (weight `halo`, width `spread`) and multiplicative log-normal noise
/// (`noise`), so lambda = 0.5 keeps a blob with ragged edges and stray pixels.
struct HeatmapProfile {
    var name: String
    var peak: Double
    var halo: Double
    var spread: Double
    var noise: Double

    static let all = [
        HeatmapProfile(name: "sharp, noisy", peak: 1.5, halo: 0.15, spread: 6, noise: 0.6),
        HeatmapProfile(name: "broad, noisy", peak: 2, halo: 0.5, spread: 10, noise: 0.3),
        HeatmapProfile(name: "broad, smooth", peak: 2, halo: 0.5, spread: 10, noise: 0.1),
    ]

    func maps(height h: Int, width w: Int) -> [Double] {
        let p = h * w
        let random = NormalNoise(seed: 1)
        var maps = [Double](repeating: 0, count: p * p)
        for out in 0..<p {
            let u = random.normals(stream: UInt64(out), count: p)
            for q in 0..<p {
                let dy = Double(q / w - out / w), dx = Double(q % w - out % w)
                let r2 = dy * dy + dx * dx
                maps[out * p + q] =
                    (exp(-r2 / (2 * peak * peak)) + halo * exp(-r2 / (2 * spread * spread))) * exp(noise * u[q])
            }
        }
        return maps
    }
}

/// CPU time of this process, all threads (the machine may be shared: wall time alone overstates the cost).
func processCPUSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

func flexBenchmark(_ name: String, maps: [Double]) async throws {
    let flex = try FlexMasks(
        maps: maps, levels: 1, height: shape.height, width: shape.width, levelTimes: [1],
        lambda: .constant(settings.lambda))
    let masks = flex.masks(at: settings.t)
    let reads = masks.kernelReads(width: shape.width)
    let set = try ImageSet(pixels: trainImages.pixels, count: trainImages.count, shape: shape, xflip: false)
    let nq = min(settings.flexQueries, settings.queries)
    let flexZ = Array(z[0..<(nq * dim)])
    var results: [[Double]] = []
    var times: [Double] = [], cpuTimes: [Double] = []
    for kernel in [InProcessShard.FlexKernel.perPixel, .rowRuns] {
        let flexEngine = try DenoisingEngine(sources: [
            InProcessShard(images: set, threads: settings.threads, flexKernel: kernel)
        ])
        var out: [Double] = []
        var cpu = Double.infinity
        times.append(
            try await seconds(repeats: settings.repeats) {
                let before = processCPUSeconds()
                out = try await flexEngine.denoise(flexZ, t: settings.t, method: .pspcFlex(flex)).values
                cpu = min(cpu, processCPUSeconds() - before)
            } / Double(nq))
        cpuTimes.append(cpu / Double(nq))
        results.append(out)
    }
    let diff = zip(results[0], results[1]).reduce(0) { max($0, abs($1.0 - $1.1)) }
    let meanSize = Double(masks.pixels.count) / Double(max(1, masks.count))
    print("")
    print(
        "pspc-flex lambda = \(settings.lambda), \(name): \(masks.count) distinct masks of \(String(format: "%.1f", meanSize)) positions on average; reads per image (all masks): per-pixel \(reads.perPixel), row runs \(reads.rowRuns)"
    )
    print("kernel             engine ms/query   speed-up   CPU ms/query   speed-up   max |diff|")
    print(String(format: "%-18@ %15.3f   %8@   %12.3f", "per-pixel" as NSString, times[0] * 1000, "" as NSString, cpuTimes[0] * 1000))
    print(
        String(
            format: "%-18@ %15.3f   %7.2fx   %12.3f   %7.2fx   %.1e", "row runs" as NSString, times[1] * 1000,
            times[0] / times[1], cpuTimes[1] * 1000, cpuTimes[0] / cpuTimes[1], diff))
    print("(\(nq) queries, best of \(settings.repeats), \(settings.threads) threads)")
}

if settings.methods != "all" && settings.methods != "flex" { fatalError("--methods is all or flex") }
if let path = settings.heatmaps {
    try await flexBenchmark(path, maps: try NPY.read(path: path).asDoubles())
} else {
    for profile in HeatmapProfile.all {
        try await flexBenchmark(
            "synthetic heatmaps (\(profile.name))", maps: profile.maps(height: shape.height, width: shape.width))
    }
}

// MARK: - Through local worker processes

if settings.clusterWorkers > 0 && settings.methods == "all" {
    let workers = settings.clusterWorkers
    let directory = NSTemporaryDirectory() + "pspc-bench-\(getpid())"
    defer { try? FileManager.default.removeItem(atPath: directory) }
    try ShardStore.write(trainImages, shards: workers, to: directory, source: "fashion-mnist:train (bench)")
    let binary = URL(fileURLWithPath: LocalClusterBinary.path).deletingLastPathComponent().appendingPathComponent(
        "pspc"
    ).path
    let local = try LocalCluster.start(
        workers: workers, data: directory, replication: 1, threadsPerWorker: max(1, threads / workers), xflip: false,
        binary: binary)
    defer { local.stop() }
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let cluster = try await Cluster.connect(
        to: local.addresses, token: try readClusterToken(local.tokenFile), group: group)
    let remote = try DenoisingEngine(
        sources: cluster.sources(), concurrentSources: true, batchesInFlight: 3, group: cluster)
    _ = try await remote.denoise(Array(z[0..<dim]), t: settings.t, method: .empirical)  // warm up

    func measure(_ method: DenoiseMethod, _ reference: [Double]) async throws -> (
        seconds: Double, bytes: Double, diff: Double
    ) {
        let before = cluster.traffic.totals
        var out: [Double] = []
        var time = Double.infinity
        var after = before
        for run in 0..<settings.repeats {
            let start = DispatchTime.now().uptimeNanoseconds
            out = try await remote.denoise(z, t: settings.t, method: method).values
            time = min(time, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            if run == 0 { after = cluster.traffic.totals }
        }
        let bytes = Double(after.sent - before.sent + after.received - before.received) / Double(settings.queries)
        return (time, bytes, zip(out, reference).reduce(0) { max($0, abs($1.0 - $1.1)) })
    }
    let clusterEmpirical = try await measure(.empirical, engineEmpirical)
    let clusterSquare = try await measure(.pspcSquare(.constant(settings.patchSize)), engineSquare)
    print("")
    print("through \(workers) local worker processes (\(max(1, threads / workers)) threads each), same queries:")
    print("method             cluster ms/query   throughput vs in-process   wire bytes/query   max |diff|")
    for (name, inProcess, run) in [
        ("empirical", engineEmpiricalSeconds, clusterEmpirical),
        ("pspc-square s=\(settings.patchSize)", engineSquareSeconds, clusterSquare),
    ] {
        print(
            String(
                format: "%-18@ %16.3f   %24.2f   %16.0f   %.1e", name as NSString,
                run.seconds / Double(settings.queries) * 1000, inProcess / run.seconds, run.bytes, run.diff))
    }
    await cluster.close()
    try await group.shutdownGracefully()
}

enum LocalClusterBinary {
    static var path: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}
