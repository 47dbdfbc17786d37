import ArgumentParser
import Foundation
import PSPCCore
import PSPCData

struct Queries: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make noisy queries z = x0 + t eps from a dataset (forward process), for `pspc denoise`.",
        discussion: "Writes z.npy (float32 [B, C, H, W]) and x0.npy (the clean images) to --out.")

    @Option(help: "Images to noise: any `pspc ingest` source, e.g. fashion-mnist:test.") var source: String =
        "fashion-mnist:test"
    @Option(help: "Noise level t > 0.") var t: Double
    @Option(help: "Number of queries (the first B images).") var count: Int = 16
    @Option(help: "Seed of eps.") var seed: UInt64 = 0
    @Option(help: "Output directory.") var out: String

    func validate() throws {
        guard t > 0 && t.isFinite else { throw ValidationError("--t must be positive and finite") }
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
    }

    func run() async throws {
        for name in ["z.npy", "x0.npy"] { try FileIO.checkRegularOutput((out as NSString).appendingPathComponent(name)) }
        let images = try DatasetSource(parsing: source).load(limit: count)
        let dim = images.shape.dimension
        let x0 = images.pixels.map { Double($0) / 127.5 - 1 }
        var z = x0
        let noise = NormalNoise(seed: seed)
        for i in 0..<images.count {
            let eps = noise.normals(stream: UInt64(i), count: dim)
            for d in 0..<dim { z[i * dim + d] += t * eps[d] }
        }
        // The pair is written whole or not at all: a failure never leaves new queries beside old clean images.
        try FileIO.createDirectory(out)
        try FileIO.writeAtomically([
            (QueryFile.encode(z, shape: images.shape), (out as NSString).appendingPathComponent("z.npy")),
            (QueryFile.encode(x0, shape: images.shape), (out as NSString).appendingPathComponent("x0.npy")),
        ])
        note("wrote \(images.count) queries at t = \(t) to \(out)/z.npy (clean images in x0.npy)")
    }
}

struct Grid: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw .npy image batches as rows of one PNG (values in [-1, 1]).")

    @Argument(help: "Arrays [B, C, H, W]; each becomes a row.") var inputs: [String]
    @Option(help: "Images per row (default: all of the first array).") var columns: Int?
    @Option(help: "Output PNG.") var out: String

    func run() async throws {
        try FileIO.checkOutput(out, option: "--out", inputs: inputs.map { ("input", $0) })
        var pixels: [UInt8] = []
        var shape: [Int] = []
        var rows = 0
        for input in inputs {
            let array = try NPY.read(path: input)
            guard array.shape.count == 4 else {
                throw DataError.invalid("\(input): expected [B, C, H, W], got \(array.shape)")
            }
            if shape.isEmpty { shape = array.shape }
            guard Array(array.shape[1...]) == Array(shape[1...]) else {
                throw DataError.invalid("\(input): images are \(array.shape), the first array's are \(shape)")
            }
            let perRow = min(columns ?? shape[0], array.shape[0])
            let dim = shape[1] * shape[2] * shape[3]
            var row = PNG.quantize(Array(array.asDoubles()[0..<(perRow * dim)]))
            row += [UInt8](repeating: 255, count: ((columns ?? shape[0]) - perRow) * dim)
            pixels += row
            rows += 1
        }
        let perRow = columns ?? shape[0]
        let png = try PNG.grid(
            images: pixels, count: rows * perRow, channels: shape[1], height: shape[2], width: shape[3], columns: perRow
        )
        try FileIO.writeAtomically(png, to: out)
        note("wrote \(rows) rows to \(out)")
    }
}
