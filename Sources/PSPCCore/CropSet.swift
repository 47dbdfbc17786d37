/// The crops whose patch posteriors a PSPC composite averages (docs/science.md section 3).
public enum CropSet: Sendable, Equatable {
    /// Every s x s square inside the image at stride 1, upper-left corner (y0, x0) row-major:
    /// (H - s + 1) (W - s + 1) crops.
    case square(patchSize: Int)
    /// Arbitrary pixel masks (PSPC-Flex).
    case masks(MaskSet)

    public func cropCount(for shape: ImageShape) -> Int {
        switch self {
        case .square(let s): return (shape.height - s + 1) * (shape.width - s + 1)
        case .masks(let masks): return masks.count
        }
    }

    /// How many crops cover each pixel position (weighted by mask multiplicity), `[H * W]`.
    public func coverage(for shape: ImageShape) -> [Double] {
        switch self {
        case .square(let s):
            var out = [Double](repeating: 0, count: shape.pixelCount)
            for y in 0..<shape.height {
                let ny = min(y, shape.height - s) - max(0, y - s + 1) + 1
                for x in 0..<shape.width {
                    let nx = min(x, shape.width - s) - max(0, x - s + 1) + 1
                    out[y * shape.width + x] = Double(ny * nx)
                }
            }
            return out
        case .masks(let masks):
            var out = [Double](repeating: 0, count: shape.pixelCount)
            for k in 0..<masks.count {
                for j in masks.offsets[k]..<masks.offsets[k + 1] { out[Int(masks.pixels[j])] += masks.multiplicity[k] }
            }
            return out
        }
    }

    public func validate(for shape: ImageShape) throws {
        switch self {
        case .square(let s):
            guard s >= 1 else { throw PSPCError.invalidArgument("patch size must be at least 1, got \(s)") }
            guard s <= shape.height && s <= shape.width else {
                throw PSPCError.invalidArgument(
                    "patch size \(s) is larger than the \(shape.height)x\(shape.width) image")
            }
        case .masks(let masks):
            guard masks.pixelCount == shape.pixelCount else {
                throw PSPCError.shapeMismatch(
                    "masks are for \(masks.pixelCount) pixel positions, the images have \(shape.pixelCount)")
            }
        }
    }
}

/// Pixel masks as compressed rows: mask k covers positions `pixels[offsets[k]..<offsets[k+1]]`
/// (p = y * W + x, all channels). Identical masks are stored once with a multiplicity.
public struct MaskSet: Sendable, Equatable {
    public var offsets: [Int]
    public var pixels: [Int32]
    public var multiplicity: [Double]
    /// H * W of the images the masks are for.
    public var pixelCount: Int

    public var count: Int { multiplicity.count }

    /// Builds a set from one mask per output pixel (each a sorted or unsorted list of positions), merging
    /// duplicates. Empty masks are dropped (they cover nothing).
    public init(masks: [[Int]], pixelCount: Int) {
        var index: [[Int]: Int] = [:]
        var unique: [[Int]] = []
        var multiplicity: [Double] = []
        for mask in masks where !mask.isEmpty {
            let key = mask.sorted()
            if let k = index[key] {
                multiplicity[k] += 1
            } else {
                index[key] = unique.count
                unique.append(key)
                multiplicity.append(1)
            }
        }
        var offsets = [0]
        var pixels: [Int32] = []
        for mask in unique {
            pixels += mask.map { Int32($0) }
            offsets.append(pixels.count)
        }
        self.offsets = offsets
        self.pixels = pixels
        self.multiplicity = multiplicity
        self.pixelCount = pixelCount
    }
}

extension MaskSet {
    /// The rows the kernels read: each mask as listed, or, when it covers more than half of the positions
    /// (and lists each at most once), as its complement with `complement[k] = 1`, so the work per mask is
    /// min(|mask|, H W - |mask|).
    func kernelRows() -> (offsets: [Int], pixels: [Int32], complement: [UInt8]) {
        var offsets = [0]
        var pixels: [Int32] = []
        var complement: [UInt8] = []
        offsets.reserveCapacity(count + 1)
        complement.reserveCapacity(count)
        var covered = [Bool](repeating: false, count: pixelCount)
        for k in 0..<count {
            let row = self.pixels[self.offsets[k]..<self.offsets[k + 1]]
            var distinct = true
            if row.count * 2 > pixelCount {
                for q in row {
                    if covered[Int(q)] { distinct = false }
                    covered[Int(q)] = true
                }
                if distinct {
                    for q in 0..<pixelCount where !covered[q] { pixels.append(Int32(q)) }
                }
                for q in row { covered[Int(q)] = false }
            }
            if row.count * 2 > pixelCount && distinct {
                complement.append(1)
            } else {
                pixels += row
                complement.append(0)
            }
            offsets.append(pixels.count)
        }
        return (offsets, pixels, complement)
    }
}
