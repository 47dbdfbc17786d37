import Foundation
import PSPCCore
import PSPCData

/// `--grid` values: the EDM grid or a log-spaced one, t descending.
public enum TimeGrid {
    public static func parse(_ spec: String) throws -> [Double] {
        let parts = spec.split(separator: ":").map(String.init)
        if parts.count == 2, parts[0] == "edm", let n = Int(parts[1]), n >= 2 { return EDM.grid(steps: n) }
        if parts.count == 4, parts[0] == "log", let k = Int(parts[1]), k >= 2, let lo = Double(parts[2]),
            let hi = Double(parts[3]), lo > 0, hi > lo, hi.isFinite
        {
            return (0..<k).map { hi * pow(lo / hi, Double($0) / Double(k - 1)) }
        }
        throw PSPCError.invalidArgument("--grid must be edm:N (N >= 2) or log:K:TMIN:TMAX (K >= 2, 0 < TMIN < TMAX), got '\(spec)'")
    }
}

/// The clean images of a forward sweep.
public enum TrainingDraw {
    /// `count` distinct images drawn with `seed`: from the training set of `data` (the x-flipped set when
    /// `xflip`: index i >= N is image i - N mirrored), the test split of its source, or any ingest source.
    /// Values in [-1, 1], `[count, C, H, W]`.
    public static func images(from: String, data: String?, xflip: Bool, count: Int, seed: UInt64, shape: ImageShape) throws
        -> [Double]
    {
        try images(from: from, data: data, xflip: xflip, count: count, seeds: [seed], shape: shape)[0]
    }

    /// One draw of `count` distinct images per seed, the source read once (the independent draws of a forward
    /// sweep: one seed per t).
    public static func images(
        from: String, data: String?, xflip: Bool, count: Int, seeds: [UInt64], shape: ImageShape
    ) throws -> [[Double]] {
        let pixels: [UInt8]
        let available: Int
        var mirrored = false
        switch from {
        case "train":
            guard let data else { throw DataError.invalid("--from train needs --data (the ingested training set)") }
            let (_, parts) = try ShardStore.readAll(directory: data)
            pixels = parts.flatMap(\.pixels)
            available = parts.reduce(0) { $0 + $1.count }
            mirrored = xflip
        default:
            var spec = from
            if from == "test" {
                guard let data else { throw DataError.invalid("--from test needs --data (to find the test split)") }
                let source = try Manifest.read(directory: data).source
                guard source.hasSuffix(":train") else {
                    throw DataError.invalid("the training set's source '\(source)' has no test split; give --from SOURCE")
                }
                spec = String(source.dropLast(6)) + ":test"
            }
            let images = try DatasetSource(parsing: spec).load()
            guard images.shape == shape else {
                throw DataError.invalid("\(spec) holds \(images.shape) images, the training set \(shape)")
            }
            pixels = images.pixels
            available = images.count
        }
        let total = mirrored ? 2 * available : available
        guard count <= total else { throw DataError.invalid("asked for \(count) images, the set has \(total)") }
        let dim = shape.dimension
        return seeds.map { seed in
            var out: [Double] = []
            out.reserveCapacity(count * dim)
            for index in SeededDraw.distinct(count, from: total, seed: seed) {
                let i = index % available
                let image = pixels[(i * dim)..<((i + 1) * dim)].map { Double($0) / 127.5 - 1 }
                if index < available {
                    out += image
                } else {
                    // The mirror image: x -> W - 1 - x in every row of every channel.
                    for row in 0..<(shape.channels * shape.height) {
                        out += image[(row * shape.width)..<((row + 1) * shape.width)].reversed()
                    }
                }
            }
            return out
        }
    }
}

/// Distinct indices from a seed (a partial Fisher-Yates shuffle driven by SplitMix64).
public enum SeededDraw {
    public static func distinct(_ count: Int, from total: Int, seed: UInt64) -> [Int] {
        var state = seed &+ 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        var swapped: [Int: Int] = [:]
        var out: [Int] = []
        for i in 0..<count {
            let j = i + Int(next() % UInt64(total - i))
            let a = swapped[i] ?? i, b = swapped[j] ?? j
            swapped[j] = a
            out.append(b)
        }
        return out
    }
}
