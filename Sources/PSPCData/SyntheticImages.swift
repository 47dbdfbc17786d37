import Foundation
import PSPCCore

/// A deterministic generator of structured images of any size and number: Fashion-MNIST items scaled
/// (bilinear), tinted per channel and placed at random offsets on smooth two-colour gradients. Image `i`
/// depends only on the seed, `i` and the items, through integer arithmetic only, so it is the same bytes
/// on every machine, whatever the number of threads that make it.
public struct SyntheticImages: Sendable {
    public let shape: ImageShape
    public let seed: UInt64
    private let items: [UInt8]
    private let itemCount: Int
    private let itemSide: (height: Int, width: Int)
    private let itemLabels: [UInt8]

    /// Images of `shape` (1 or 3 channels, sides 8 to 4096) made from the gray `items` (`[n, 1, h, w]`) and
    /// their `labels` (one a item).
    public init(shape: ImageShape, seed: UInt64, items: ImageArray, labels: [UInt8]) throws {
        guard shape.channels == 1 || shape.channels == 3 else {
            throw DataError.invalid("synthetic images have 1 or 3 channels, not \(shape.channels)")
        }
        guard (8...4096).contains(shape.height), (8...4096).contains(shape.width) else {
            throw DataError.invalid("synthetic image sides must be 8 to 4096, not \(shape.height)x\(shape.width)")
        }
        guard items.shape.channels == 1, items.count > 0, labels.count == items.count else {
            throw DataError.invalid("synthetic images need gray items with one label each")
        }
        self.shape = shape
        self.seed = seed
        self.items = items.pixels
        self.itemCount = items.count
        self.itemSide = (items.shape.height, items.shape.width)
        self.itemLabels = labels
    }

    /// Fashion-MNIST's training or test items and labels (Debian's dataset-fashion-mnist).
    public static func fashionMNIST(train: Bool) throws -> (items: ImageArray, labels: [UInt8]) {
        let prefix = train ? "train" : "t10k"
        let directory = DatasetSource.fashionMNISTDirectory as NSString
        let items = try DatasetSource.fashionMNIST(train: train).load()
        let labels = try IDXReader.readLabels(path: directory.appendingPathComponent("\(prefix)-labels-idx1-ubyte.gz"))
        return (items, labels)
    }

    /// Image `index`, uint8 `[C, H, W]`, and its label (the item's class).
    public func image(_ index: Int) -> (pixels: [UInt8], label: UInt8) {
        var rng = SplitMix64(seed: seed, stream: UInt64(index))
        let h = shape.height, w = shape.width, channels = shape.channels
        let item = Int(rng.next() % UInt64(itemCount))
        // The item's side: half to all of the image's shorter side; its top-left corner anywhere it fits.
        let shorter = min(h, w)
        let side = shorter / 2 + Int(rng.next() % UInt64(shorter - shorter / 2 + 1))
        let top = Int(rng.next() % UInt64(h - side + 1))
        let left = Int(rng.next() % UInt64(w - side + 1))
        let flip = rng.next() & 1 == 1
        let direction = Int(rng.next() % 4)
        var from = [Int](repeating: 0, count: channels), to = from, tint = from
        for c in 0..<channels {
            from[c] = Int(rng.next() & 255)
            to[c] = Int(rng.next() & 255)
            tint[c] = Int(rng.next() & 255)
        }

        // The item's coverage (0...255) at each pixel of its side x side square: bilinear in 1/256ths.
        let ih = itemSide.height, iw = itemSide.width
        let base = item * ih * iw
        func sample(_ u: Int, _ n: Int) -> (Int, Int, Int) {
            let position = max(0, (2 * u + 1) * n * 256 / (2 * side) - 128)
            let lower = min(position >> 8, n - 1)
            return (lower, min(lower + 1, n - 1), position & 255)
        }
        let columns = (0..<side).map { sample(flip ? side - 1 - $0 : $0, iw) }
        var coverage = [Int](repeating: 0, count: side * side)
        for v in 0..<side {
            let (y0, y1, wy) = sample(v, ih)
            for u in 0..<side {
                let (x0, x1, wx) = columns[u]
                let p00 = Int(items[base + y0 * iw + x0]), p01 = Int(items[base + y0 * iw + x1])
                let p10 = Int(items[base + y1 * iw + x0]), p11 = Int(items[base + y1 * iw + x1])
                let value = (p00 * (256 - wx) + p01 * wx) * (256 - wy) + (p10 * (256 - wx) + p11 * wx) * wy
                coverage[v * side + u] = (value + 32768) >> 16
            }
        }

        // A gradient between two colours, along x, y or a diagonal, with the tinted item over it.
        let span: Int
        switch direction {
        case 0: span = w - 1
        case 1: span = h - 1
        default: span = h + w - 2
        }
        var pixels = [UInt8](repeating: 0, count: shape.dimension)
        for y in 0..<h {
            for x in 0..<w {
                let t: Int
                switch direction {
                case 0: t = x
                case 1: t = y
                case 2: t = x + y
                default: t = (w - 1 - x) + y
                }
                let inside = y >= top && y < top + side && x >= left && x < left + side
                let alpha = inside ? coverage[(y - top) * side + (x - left)] : 0
                for c in 0..<channels {
                    let background = (from[c] * (span - t) + to[c] * t + span / 2) / span
                    pixels[(c * h + y) * w + x] = UInt8((background * (255 - alpha) + tint[c] * alpha + 127) / 255)
                }
            }
        }
        return (pixels, itemLabels[item])
    }
}

/// SplitMix64 (Steele, Lea and Flood 2014) over the seed and a stream number: independent, reproducible
/// sequences per image.
struct SplitMix64 {
    private var state: UInt64

    init(seed: UInt64, stream: UInt64) {
        var mixer = SplitMix64(state: seed)
        state = mixer.next() ^ (stream &* 0xD1B5_4A32_D192_ED03)
        _ = next()
    }

    private init(state: UInt64) { self.state = state }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
