import ArgumentParser
import Foundation
import PSPCCore
import PSPCData
import PSPCExperiments

struct Heatmap: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Gradient-sensitivity heatmaps of the network on a time grid, for pspc-flex (docs/science.md section 4).",
        discussion: """
            Writes heatmaps (float32 [L, H, W, H, W], output pixel first), their times (read by pspc-flex from \
            beside the .npy) and the locality per t (the mean side of the centred square holding 50 / 75 / 95 % \
            of a map's mass). Forward-process samples x0 come from the endpoint's training set, or with --data \
            from that ingested dataset: for level l, sample i takes the i-th of --samples distinct indices drawn \
            from seed S + l (SeededDraw: a partial Fisher-Yates shuffle driven by SplitMix64) over the N images \
            (2N with --xflip on, an index k >= N being image k - N mirrored); pspc draws them and sends only those \
            images, in order, and the endpoint draws the noise from the same seed. Maps larger than a frame (64x64: 134 MB of float64) come in \
            requests of consecutive output pixels, assembled bit for bit as one request would give them.
            """)

    @OptionGroup var networkOptions: NetworkOptions
    @Option(help: "edm:N (the N-step EDM grid) or a comma-separated list of t.") var grid: String = "edm:18"
    @Option(help: "Forward-process samples per t.") var samples: Int = 8
    @Option(help: "Seed of the samples.") var seed: UInt64 = 0
    @Option(help: "Dataset directory written by `pspc ingest` to draw x0 from (default: the endpoint's own set).")
    var data: String?
    @Option(help: "With --data: draw from the images and their horizontally flipped copies.") var xflip: Switch = .on
    @Option(help: "Output pixels per heatmap request (default: as many as fit a 64 MiB frame).")
    var pixelsPerRequest: Int?
    @Option(
        help:
            "A run directory (heatmaps.npy, heatmaps.times.json, locality.csv/json, config.json; resumable), or a path ending in .npy (.times.json and .locality.csv beside it)."
    )
    var out: String

    func validate() throws {
        guard samples >= 1 else { throw ValidationError("--samples must be at least 1") }
        if let pixelsPerRequest, pixelsPerRequest < 1 {
            throw ValidationError("--pixels-per-request must be at least 1")
        }
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
        let entries = networkOptions.entries
        guard entries.count > 1 else { return try await runOne() }
        // Several networks: one run directory each, OUT/NAME, from the same draws (the same seed and data).
        guard !out.hasSuffix(".npy") else {
            throw ValidationError("several networks write a run directory each: give --out a directory, not an .npy file")
        }
        var table = "network,t,side50,side75,side95\n"
        for entry in entries {
            var one = self
            one.networkOptions = networkOptions.only(entry)
            one.out = (out as NSString).appendingPathComponent(entry.name!)
            try await one.runOne()
            let csv = String(decoding: try FileIO.read(RunDirectory(one.out).file("locality.csv")), as: UTF8.self)
            for line in csv.split(separator: "\n").dropFirst() { table += entry.name! + "," + line + "\n" }
        }
        try FileIO.writeAtomically(Array(table.utf8), to: (out as NSString).appendingPathComponent("locality.csv"))
        note("wrote the heatmaps of \(entries.count) networks to \(out)/NAME and their locality side by side to \(out)/locality.csv")
    }

    /// The heatmaps of the one network of `networkOptions`.
    func runOne() async throws {
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
        ] + (data == nil ? [] : [("data", try dataConfig())]))
        if try run.prepare(config: config) { note("resuming \(run.path): finished levels are kept") }
        var draw = try data.map { try HeatmapImages(directory: $0, xflip: xflip == .on) }
        if let draw, draw.total < samples {
            throw ValidationError("--samples \(samples): \(data!) holds \(draw.total) images (x-flip \(xflip))")
        }
        let network = try await networkOptions.connect()
        do {
            if let draw, let shape = network.denoiser.imageShape, shape != draw.manifest.shape {
                throw ValidationError("\(data!) holds \(draw.manifest.shape) images, the network takes \(shape)")
            }
            let bar = ProgressBar("heatmaps", total: levels.count, unit: " levels")
            for (i, t) in levels.enumerated() {
                let part = String(format: "level-%02d.npy", i)
                if !run.hasPart(part) {
                    let levelSeed = seed &+ UInt64(i)
                    let images = try draw?.images(samples, seed: levelSeed)
                    let result = try await network.denoiser.heatmap(
                        t: t, samples: samples, seed: levelSeed, images: images, imagesInOrder: images != nil,
                        pixelsPerRequest: pixelsPerRequest)
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
        // Assembled level by level into the output file (64x64 maps are 67 MB of float32 a level): one level in
        // memory at a time.
        let base = isRunDirectory ? run.file("heatmaps") : String(out.dropLast(4))
        let output = try OutputFile(path: base + ".npy")
        var shape: [Int] = []
        var csv = "t,side50,side75,side95\n"
        var rows: [JSONValue] = []
        for (i, t) in levels.enumerated() {
            let array = try NPY.read(path: run.file("parts", String(format: "level-%02d.npy", i)))
            if i == 0 {
                shape = array.shape
                try output.write(NPY.header(shape: [levels.count] + shape, descr: "<f4"))
            } else if array.shape != shape {
                throw DataError.invalid("heatmap level \(i) is \(array.shape), level 0 was \(shape)")
            }
            var bytes: [UInt8] = []
            bytes.reserveCapacity(array.shape.reduce(1, *) * 4)
            let values: [Float]
            if case .float32(let v) = array.data { values = v } else { values = array.asDoubles().map(Float.init) }
            for value in values { NPY.appendLittleEndian(value.bitPattern, to: &bytes) }
            try output.write(bytes)
            let locality = try NPY.read(path: run.file("parts", String(format: "level-%02d.locality.npy", i))).asDoubles()
            csv += CSVText.line([RunNumber.text(t)] + locality.map(RunNumber.text))
            rows.append(
                .object([
                    ("t", .number(t)), ("side50", .number(locality[0])), ("side75", .number(locality[1])),
                    ("side95", .number(locality[2])),
                ]))
        }
        try output.commit()
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

extension Heatmap {
    /// The dataset behind --data, for config.json.
    func dataConfig() throws -> JSONValue {
        let manifest = try Manifest.read(directory: data!)
        return .object([
            ("directory", .string(data!)), ("source", .string(manifest.source)), ("images", .int(manifest.count)),
            ("fingerprint", .string(manifest.fingerprint)), ("xflip", .bool(xflip == .on)),
        ])
    }
}

/// x0 for `pspc heatmap --data`: `samples` distinct images per level drawn from the seed (see Heatmap's
/// discussion), read shard by shard as needed (at most `samples` shards held at once), never the whole set.
struct HeatmapImages {
    let directory: String
    let manifest: Manifest
    let xflip: Bool
    private var shards: [Int: ImageArray] = [:]

    init(directory: String, xflip: Bool) throws {
        self.directory = directory
        self.manifest = try Manifest.read(directory: directory)
        self.xflip = xflip
    }

    /// Images to draw from: N, or 2N with the flipped copies.
    var total: Int { manifest.count * (xflip ? 2 : 1) }

    /// The chosen images in sample order, `[samples, C, H, W]` uint8.
    mutating func images(_ samples: Int, seed: UInt64) throws -> ImageArray {
        let shape = manifest.shape, dim = shape.dimension
        shards = [:]
        var pixels: [UInt8] = []
        pixels.reserveCapacity(samples * dim)
        for index in SeededDraw.distinct(samples, from: total, seed: seed) {
            let i = index % manifest.count
            guard let s = manifest.shards.firstIndex(where: { i >= $0.first && i < $0.first + $0.count }) else {
                throw DataError.corrupt(path: directory, reason: "no shard holds image \(i)")
            }
            if shards[s] == nil {
                shards[s] = try ShardStore.readShard(manifest.shards[s], manifest: manifest, directory: directory)
            }
            let offset = (i - manifest.shards[s].first) * dim
            let image = shards[s]!.pixels[offset..<(offset + dim)]
            if index < manifest.count {
                pixels += image
            } else {
                // The mirror image: x -> W - 1 - x in every row of every channel.
                for row in 0..<(shape.channels * shape.height) {
                    let start = image.startIndex + row * shape.width
                    pixels += image[start..<(start + shape.width)].reversed()
                }
            }
        }
        return ImageArray(pixels: pixels, count: samples, shape: shape)
    }
}
