import Foundation
import PSPCCore

/// Slow, literal float64 implementations of docs/science.md's denoisers, written straight from the equations and
/// sharing no code with the engine: one crop at a time, each crop's posterior mean over the training set.
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
    /// `uncovered` pixels (no crop) take `fallback`.
    static func composite(
        z: [Double], t: Double, images: [[Double]], crops: [[Int]], shape: ImageShape,
        fallback: [Double]? = nil
    ) -> [Double] {
        var sum = [Double](repeating: 0, count: z.count)
        var count = [Double](repeating: 0, count: shape.pixelCount)
        for crop in crops {
            let positions = positions(of: crop, shape: shape)
            let mean = posteriorMean(z: z, positions: positions, t: t, images: images)
            for (j, p) in positions.enumerated() { sum[p] += mean[j] }
            for p in crop { count[p] += 1 }
        }
        return (0..<z.count).map { i in
            let p = i % shape.pixelCount
            return count[p] > 0 ? sum[i] / count[p] : fallback![i]
        }
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

    /// Gaussian denoiser mu + Sigma (Sigma + t^2 I)^-1 (z - mu), solved by Cholesky (no eigendecomposition).
    struct Gaussian {
        let mean: [Double]
        let covariance: [[Double]]

        init(images: [[Double]]) {
            let n = Double(images.count), dim = images[0].count
            let mean = (0..<dim).map { d in images.reduce(0) { $0 + $1[d] } / n }
            self.mean = mean
            var cov = [[Double]](repeating: [Double](repeating: 0, count: dim), count: dim)
            for x in images {
                let c = (0..<dim).map { x[$0] - mean[$0] }
                for i in 0..<dim where c[i] != 0 { for j in 0..<dim { cov[i][j] += c[i] * c[j] } }
            }
            covariance = cov.map { $0.map { $0 / n } }
        }

        func denoise(_ z: [Double], t: Double) -> [Double] {
            let dim = mean.count
            var a = covariance
            for i in 0..<dim { a[i][i] += t * t }
            // Cholesky a = L L^T.
            var l = [[Double]](repeating: [Double](repeating: 0, count: dim), count: dim)
            for i in 0..<dim {
                for j in 0...i {
                    var s = a[i][j]
                    for k in 0..<j { s -= l[i][k] * l[j][k] }
                    l[i][j] = i == j ? s.squareRoot() : s / l[j][j]
                }
            }
            var y = (0..<dim).map { z[$0] - mean[$0] }
            for i in 0..<dim {
                for k in 0..<i { y[i] -= l[i][k] * y[k] }
                y[i] /= l[i][i]
            }
            for i in stride(from: dim - 1, through: 0, by: -1) {
                for k in (i + 1)..<dim { y[i] -= l[k][i] * y[k] }
                y[i] /= l[i][i]
            }
            return (0..<dim).map { i in mean[i] + (0..<dim).reduce(0) { $0 + covariance[i][$1] * y[$1] } }
        }
    }
}

/// Real Fashion-MNIST for the tests: the first `trainCount` training images and the first test images.
enum FashionMNIST {
    static let directory = "/usr/share/datasets/fashion-mnist"
}

func maxAbsDifference(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count)
    return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}
