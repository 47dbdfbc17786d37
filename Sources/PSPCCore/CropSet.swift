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
            guard masks.offsets.count == masks.count + 1, masks.offsets.first == 0,
                masks.offsets.last == masks.pixels.count, zip(masks.offsets, masks.offsets.dropFirst()).allSatisfy({ $0 <= $1 })
            else {
                throw PSPCError.shapeMismatch("mask offsets do not match \(masks.count) masks of \(masks.pixels.count) positions")
            }
            if let bad = masks.pixels.first(where: { $0 < 0 || Int($0) >= shape.pixelCount }) {
                throw PSPCError.invalidArgument("a mask lists position \(bad), outside 0..<\(shape.pixelCount)")
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

/// Masks in the row-run form the kernels read (`pspc_mask_runs` in PSPCKernels.h, docs/design.md section 2): per
/// mask an even number of indices into the per-(query, image) table
/// [e (H W) | inclusive row prefix sums of e (H W) | both negated | 0], terms of negative total first.
struct MaskRunRows {
    var offsets: [Int] = [0]
    var entries: [Int32] = []
    /// The transpose, for round 2: the masks reading table entry q are `slotMasks[slotOffsets[q]..<slotOffsets[q + 1]]`
    /// (the zero entry, 4 H W, left out).
    var slotOffsets: [Int] = []
    var slotMasks: [Int32] = []

    /// Fills the transpose from `offsets` and `entries` for a table of `slots` entries before the zero one.
    mutating func transpose(slots: Int) {
        var counts = [Int](repeating: 0, count: slots + 1)
        for q in entries where Int(q) < slots { counts[Int(q) + 1] += 1 }
        for q in 0..<slots { counts[q + 1] += counts[q] }
        slotOffsets = counts
        var next = counts
        slotMasks = [Int32](repeating: 0, count: counts[slots])
        for k in 0..<(offsets.count - 1) {
            for j in offsets[k]..<offsets[k + 1] where Int(entries[j]) < slots {
                slotMasks[next[Int(entries[j])]] = Int32(k)
                next[Int(entries[j])] += 1
            }
        }
    }
}

extension MaskSet {
    /// Table or image entries each kernel reads per (query, training image) for these masks on images `width`
    /// wide: the per-pixel kernel one per listed position (or per uncovered one, for masks over half the image),
    /// the row-run kernel one per short-run pixel and one or two per longer run.
    public func kernelReads(width: Int) -> (perPixel: Int, rowRuns: Int) {
        (kernelRows().pixels.count, kernelRuns(width: width).entries.count)
    }

    /// Each mask row by row: a row is written either as its runs or as the row's sum less its gaps, whichever
    /// reads fewer table entries (ties: the runs, which subtract nothing large). Runs of 1 or 2 pixels read e
    /// directly, a run from column 0 one prefix entry, any other run a pair (prefix at its end, negated prefix
    /// before its start). A position listed twice in a mask counts twice, as in the listed form.
    func kernelRuns(width: Int) -> MaskRunRows {
        precondition(width > 0 && pixelCount % width == 0)
        let height = pixelCount / width, hw = Int32(pixelCount)
        let zero = 4 * hw
        var out = MaskRunRows()
        out.offsets.reserveCapacity(count + 1)
        var times = [Int32](repeating: 0, count: pixelCount)
        var rowUsed = [Bool](repeating: false, count: height)
        // The mask's terms: pairs and singles of negative total, then of positive total.
        var negativePairs: [Int32] = [], negative: [Int32] = [], positivePairs: [Int32] = [], positive: [Int32] = []
        // One row's terms in the two forms.
        var runPairs: [Int32] = [], runSingles: [Int32] = [], gapPairs: [Int32] = [], gapSingles: [Int32] = []
        for k in 0..<count {
            negativePairs.removeAll(keepingCapacity: true)
            negative.removeAll(keepingCapacity: true)
            positivePairs.removeAll(keepingCapacity: true)
            positive.removeAll(keepingCapacity: true)
            let row = self.pixels[self.offsets[k]..<self.offsets[k + 1]]
            for q in row {
                times[Int(q)] += 1
                rowUsed[Int(q) / width] = true
            }
            for y in 0..<height where rowUsed[y] {
                rowUsed[y] = false
                let base = Int32(y * width)
                let e = { (x: Int) in base + Int32(x) }
                let prefix = { (x: Int) in hw + base + Int32(x) }  // e(y, 0) + ... + e(y, x)
                let negated = { (index: Int32) in index + 2 * hw }
                runPairs.removeAll(keepingCapacity: true)
                runSingles.removeAll(keepingCapacity: true)
                gapPairs.removeAll(keepingCapacity: true)
                gapSingles.removeAll(keepingCapacity: true)
                // Segments [x0, x1) of covered (runs) and uncovered (gaps) positions.
                var x0 = 0
                while x0 < width {
                    let covered = times[Int(base) + x0] > 0
                    var x1 = x0 + 1
                    while x1 < width && (times[Int(base) + x1] > 0) == covered { x1 += 1 }
                    let length = x1 - x0
                    if length <= 2 && !(x0 == 0 && length == 2) {
                        for x in x0..<x1 {
                            if covered { runSingles.append(e(x)) } else { gapSingles.append(negated(e(x))) }
                        }
                    } else if x0 == 0 {
                        if covered {
                            runSingles.append(prefix(x1 - 1))
                        } else {
                            gapSingles.append(negated(prefix(x1 - 1)))
                        }
                    } else if covered {
                        runPairs += [prefix(x1 - 1), negated(prefix(x0 - 1))]
                    } else {
                        gapPairs += [prefix(x0 - 1), negated(prefix(x1 - 1))]
                    }
                    x0 = x1
                }
                if runPairs.count + runSingles.count <= 1 + gapPairs.count + gapSingles.count {
                    positivePairs += runPairs
                    positive += runSingles
                } else {
                    negativePairs += gapPairs
                    negative += gapSingles
                    positive.append(prefix(width - 1))
                }
                // Positions listed more than once: the extra copies.
                for x in 0..<width where times[Int(base) + x] > 1 {
                    positive += Array(repeating: e(x), count: Int(times[Int(base) + x]) - 1)
                }
            }
            for q in row { times[Int(q)] = 0 }
            // Pairs stay at even positions; each sign's block is padded to an even count with the zero entry.
            out.entries += negativePairs
            out.entries += negative
            if negative.count % 2 == 1 { out.entries.append(zero) }
            out.entries += positivePairs
            out.entries += positive
            if positive.count % 2 == 1 { out.entries.append(zero) }
            out.offsets.append(out.entries.count)
        }
        out.transpose(slots: 4 * pixelCount)
        return out
    }
}
