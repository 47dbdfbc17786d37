/// PSPC-Flex crops from gradient-sensitivity heatmaps (docs/science.md section 3): for output pixel (y, x) at time t,
/// the map G(y, x, t) over input pixels, normalised to sum 1, keeps its largest values until their mass
/// reaches lambda(t). lambda >= 1 keeps the whole image.
public struct FlexMasks: Sendable {
    /// Heatmaps `[levels][H * W (output pixel)][H * W (input pixel)]`.
    public let heatmaps: [[Double]]
    /// The time of each heatmap level.
    public let levelTimes: [Double]
    public let lambda: LambdaSchedule
    public let height: Int
    public let width: Int

    /// `maps` is `[levels, H, W, H, W]` flattened; `levelTimes` gives each level's t (one level: any t).
    public init(maps: [Double], levels: Int, height: Int, width: Int, levelTimes: [Double], lambda: LambdaSchedule)
        throws
    {
        let p = height * width
        guard levels >= 1, maps.count == levels * p * p else {
            throw PSPCError.shapeMismatch(
                "heatmaps hold \(maps.count) values, expected \(levels) x \(height)x\(width)x\(height)x\(width)")
        }
        guard levelTimes.count == levels else {
            throw PSPCError.invalidArgument("\(levels) heatmap levels but \(levelTimes.count) level times")
        }
        guard maps.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
            throw PSPCError.nonFiniteInput("heatmaps must be finite and non-negative")
        }
        self.heatmaps = (0..<levels).map { Array(maps[($0 * p * p)..<(($0 + 1) * p * p)]) }
        self.levelTimes = levelTimes
        self.lambda = lambda
        self.height = height
        self.width = width
    }

    /// The masks in force at time t, identical masks merged.
    public func masks(at t: Double) -> MaskSet {
        let p = height * width
        let level = heatmaps.count == 1 ? 0 : EDM.nearestIndex(of: t, in: levelTimes)
        let lam = lambda.value(at: t)
        let maps = heatmaps[level]
        var masks: [[Int]] = []
        masks.reserveCapacity(p)
        for out in 0..<p {
            let row = maps[(out * p)..<((out + 1) * p)]
            let total = row.reduce(0, +)
            if lam >= 1 || total <= 0 {
                // lambda = 1 is the whole image; a map with no mass cannot rank pixels, so it keeps all too.
                masks.append(Array(0..<p))
                continue
            }
            let order = (0..<p).sorted { row[row.startIndex + $0] > row[row.startIndex + $1] }
            var mass = 0.0
            var mask: [Int] = []
            for q in order {
                if mass >= lam * total { break }
                mask.append(q)
                mass += row[row.startIndex + q]
            }
            masks.append(mask)
        }
        return MaskSet(masks: masks, pixelCount: p)
    }
}
