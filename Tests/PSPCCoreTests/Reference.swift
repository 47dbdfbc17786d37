import Foundation
import PSPCCore
import PSPCData

/// Slow, literal float64 implementations of docs/science.md's denoisers, written straight from the equations and
/// sharing no code with the engine (only `ImageShape` and plain arrays): one crop at a time, each crop's
/// posterior mean over the training set, any C, H and W. Distances are sums of per-pixel squared differences
/// (never ||a||^2 - 2 a.b + ||b||^2), softmaxes subtract their maximum logit and use the libm exp, so the
/// reference is accurate to a few ulps of its inputs at every t from 0.002 to 80.
enum Reference {
    /// Training images `[n][D]` in [-1, 1] (u / 127.5 - 1), x-flipped copies appended when asked.
    static func trainingSet(_ pixels: [UInt8], count n: Int, shape: ImageShape, xflip: Bool) -> [[Double]] {
        let dim = shape.dimension
        var images: [[Double]] = (0..<n).map { i in (0..<dim).map { Double(pixels[i * dim + $0]) / 127.5 - 1 } }
        if xflip {
            images += images.map { image in
                var flipped = image
                for c in 0..<shape.channels {
                    for y in 0..<shape.height {
                        for x in 0..<shape.width {
                            flipped[(c * shape.height + y) * shape.width + x] =
                                image[(c * shape.height + y) * shape.width + (shape.width - 1 - x)]
                        }
                    }
                }
                return flipped
            }
        }
        return images
    }

    /// Posterior mean of the values at `positions` (flat indices into the image) given z at those positions.
    static func posteriorMean(z: [Double], positions: [Int], t: Double, images: [[Double]]) -> [Double] {
        let logits = images.map { x -> Double in
            var d = 0.0
            for p in positions { d += (z[p] - x[p]) * (z[p] - x[p]) }
            return -d / (2 * t * t)
        }
        let m = logits.max()!
        var s = 0.0
        var mean = [Double](repeating: 0, count: positions.count)
        for (i, x) in images.enumerated() {
            let w = exp(logits[i] - m)
            if w == 0 { continue }
            s += w
            for (j, p) in positions.enumerated() { mean[j] += w * x[p] }
        }
        return mean.map { $0 / s }
    }

    static func empirical(z: [Double], t: Double, images: [[Double]]) -> [Double] {
        posteriorMean(z: z, positions: Array(0..<z.count), t: t, images: images)
    }

    /// All channels of the pixel positions of a mask.
    static func positions(of mask: [Int], shape: ImageShape) -> [Int] {
        (0..<shape.channels).flatMap { c in mask.map { c * shape.pixelCount + $0 } }
    }

    /// Composite of crop posterior means: every pixel the plain average over the crops covering it;
    /// uncovered pixels (no crop) take `fallback`. The posterior mean of each distinct crop is computed once
    /// (PSPC-Flex masks repeat).
    static func composite(
        z: [Double], t: Double, images: [[Double]], crops: [[Int]], shape: ImageShape,
        fallback: [Double]? = nil
    ) -> [Double] {
        var cache: [[Int]: [Double]] = [:]
        var sum = [Double](repeating: 0, count: z.count)
        var count = [Double](repeating: 0, count: shape.pixelCount)
        for crop in crops {
            let positions = positions(of: crop, shape: shape)
            let mean = cache[crop] ?? posteriorMean(z: z, positions: positions, t: t, images: images)
            cache[crop] = mean
            for (j, p) in positions.enumerated() { sum[p] += mean[j] }
            for p in crop { count[p] += 1 }
        }
        return (0..<z.count).map { i in
            let p = i % shape.pixelCount
            return count[p] > 0 ? sum[i] / count[p] : fallback![i]
        }
    }

    /// PSPC-Flex from one mask per output pixel: the composite, uncovered pixels taking the empirical value.
    static func flex(z: [Double], t: Double, images: [[Double]], masks: [[Int]], shape: ImageShape) -> [Double] {
        composite(
            z: z, t: t, images: images, crops: masks.filter { !$0.isEmpty }, shape: shape,
            fallback: empirical(z: z, t: t, images: images))
    }

    /// All s x s squares at stride 1 as pixel-position lists.
    static func squareCrops(_ s: Int, shape: ImageShape) -> [[Int]] {
        var crops: [[Int]] = []
        for y0 in 0...(shape.height - s) {
            for x0 in 0...(shape.width - s) {
                crops.append((0..<s).flatMap { dy in (0..<s).map { dx in (y0 + dy) * shape.width + x0 + dx } })
            }
        }
        return crops
    }

    /// The PSPC-Flex lambda rule from its definition (docs/science.md section 3), independently of the engine:
    /// output pixel o keeps input pixel q when the mass of the map's values strictly larger than G(o, q) is
    /// still below lambda times the map's total, i.e. the largest values are kept until they hold a fraction
    /// lambda of the mass. lambda >= 1, or a map without mass, keeps every pixel. Maps must not tie (the
    /// definition leaves the order of equal values open); with integer-valued maps every sum here is exact.
    /// `maps` is `[p][p]` (output pixel, input pixel); the result is one sorted mask per output pixel.
    static func lambdaMasks(maps: [Double], pixels p: Int, lambda: Double) -> [[Int]] {
        (0..<p).map { o in
            let row = Array(maps[(o * p)..<((o + 1) * p)])
            let total = row.reduce(0, +)
            if lambda >= 1 || total <= 0 { return Array(0..<p) }
            // Mass strictly above each value: values ascending, then suffix sums; a binary search finds each
            // pixel's value (they are distinct).
            let ascending = row.sorted()
            var above = [Double](repeating: 0, count: p)
            for i in stride(from: p - 2, through: 0, by: -1) { above[i] = above[i + 1] + ascending[i + 1] }
            return (0..<p).filter { q in
                var lo = 0, hi = p - 1
                while lo < hi {
                    let mid = (lo + hi) / 2
                    if ascending[mid] < row[q] { lo = mid + 1 } else { hi = mid }
                }
                return above[lo] < lambda * total
            }
        }
    }

    /// The nearest time of `grid` to t in log t (how a schedule or a heatmap level is chosen).
    static func nearest(_ t: Double, in grid: [Double]) -> Int {
        grid.indices.min { abs(log(grid[$0] / t)) < abs(log(grid[$1] / t)) }!
    }

    /// Gaussian denoiser mu + Sigma (Sigma + t^2 I)^-1 (z - mu), Sigma the population covariance, written in
    /// the training set's span: with Xc the n x D centred images, Sigma = Xc^T Xc / n and
    /// Sigma (Sigma + t^2 I)^-1 = Xc^T (Xc Xc^T + n t^2 I)^-1 Xc. The n x n system is solved by Cholesky. This
    /// form never builds Sigma's null space (n < D here), which a D x D solve at t = 0.002 would amplify by
    /// 1 / t^2 = 2.5e5; no eigendecomposition (the engine's route).
    struct Gaussian {
        let mean: [Double]
        /// Centred images `[n][D]`.
        let centred: [[Double]]
        /// Gram matrix Xc Xc^T.
        let gram: [[Double]]

        init(images: [[Double]]) {
            let n = images.count, dim = images[0].count
            let mean = (0..<dim).map { d in images.reduce(0) { $0 + $1[d] } / Double(n) }
            self.mean = mean
            let centred = images.map { x in (0..<dim).map { x[$0] - mean[$0] } }
            self.centred = centred
            var gram = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
            for i in 0..<n {
                for j in 0...i {
                    var s = 0.0
                    for d in 0..<dim { s += centred[i][d] * centred[j][d] }
                    gram[i][j] = s
                    gram[j][i] = s
                }
            }
            self.gram = gram
        }

        func denoise(_ z: [Double], t: Double) -> [Double] {
            let n = centred.count, dim = mean.count
            let r = (0..<dim).map { z[$0] - mean[$0] }
            var a = gram
            for i in 0..<n { a[i][i] += Double(n) * t * t }
            // Cholesky a = L L^T.
            var l = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
            for i in 0..<n {
                for j in 0...i {
                    var s = a[i][j]
                    for k in 0..<j { s -= l[i][k] * l[j][k] }
                    l[i][j] = i == j ? s.squareRoot() : s / l[j][j]
                }
            }
            var y = centred.map { x in (0..<dim).reduce(0.0) { $0 + x[$1] * r[$1] } }
            for i in 0..<n {
                for k in 0..<i { y[i] -= l[i][k] * y[k] }
                y[i] /= l[i][i]
            }
            for i in stride(from: n - 1, through: 0, by: -1) {
                for k in (i + 1)..<n { y[i] -= l[k][i] * y[k] }
                y[i] /= l[i][i]
            }
            var out = mean
            for i in 0..<n where y[i] != 0 { for d in 0..<dim { out[d] += centred[i][d] * y[i] } }
            return out
        }
    }
}

/// Real Fashion-MNIST for the tests (Debian's dataset package, no download).
enum FashionMNIST {
    static let directory = DatasetSource.fashionMNISTDirectory
}

func maxAbsDifference(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count)
    return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

/// max |a - b| / max |b|: the error relative to the largest reference value (a per-element relative error
/// with the floor max |b|, which pixel values in [-1, 1] keep near 1).
func relativeError(_ a: [Double], _ reference: [Double]) -> Double {
    let scale = reference.reduce(0) { max($0, abs($1)) }
    return maxAbsDifference(a, reference) / max(scale, .leastNormalMagnitude)
}
