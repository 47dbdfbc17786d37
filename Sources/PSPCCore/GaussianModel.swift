import CBLAS
import Foundation

/// The Gaussian baseline (docs/science.md section 5): the training set's mean mu and population covariance
/// Sigma = U diag(l) U^T, and D(z, t) = mu + U diag(l / (l + t^2)) U^T (z - mu).
public struct GaussianModel: Sendable {
    public let mean: [Double]
    /// Eigenvalues, ascending; those below D eps lambda_max (rounding of a rank-deficient covariance) are 0.
    public let eigenvalues: [Double]
    /// U^T `[D, D]` row-major: row k is the k-th eigenvector.
    public let eigenvectorsT: [Double]
    public let dimension: Int

    public init(moments: Moments) throws {
        let dim = moments.sum.count
        guard moments.count > 0 else { throw PSPCError.numerical("Gaussian baseline over an empty training set") }
        guard moments.rows == 0..<dim && moments.outer.count == dim * dim else {
            throw PSPCError.shapeMismatch("the Gaussian baseline needs every row of the outer sum, got \(moments.rows)")
        }
        let n = Double(moments.count)
        let mean = moments.sum.map { $0 / n }
        var cov = [Double](repeating: 0, count: dim * dim)
        for i in 0..<dim {
            for j in 0..<dim { cov[i * dim + j] = moments.outer[i * dim + j] / n - mean[i] * mean[j] }
        }
        // dsyevd on the symmetric matrix: column-major equals row-major; on return column k (stored at
        // k * dim) holds eigenvector k, which read row-major is row k of U^T.
        var w = [Double](repeating: 0, count: dim)
        var jobz = Int8(UInt8(ascii: "V")), uplo = Int8(UInt8(ascii: "U"))
        var nn = Int32(dim), lda = Int32(dim), info: Int32 = 0
        var lwork: Int32 = -1, liwork: Int32 = -1
        var workQuery = 0.0
        var iworkQuery: Int32 = 0
        dsyevd_(&jobz, &uplo, &nn, &cov, &lda, &w, &workQuery, &lwork, &iworkQuery, &liwork, &info)
        lwork = Int32(workQuery)
        liwork = iworkQuery
        var work = [Double](repeating: 0, count: Int(lwork))
        var iwork = [Int32](repeating: 0, count: Int(liwork))
        dsyevd_(&jobz, &uplo, &nn, &cov, &lda, &w, &work, &lwork, &iwork, &liwork, &info)
        guard info == 0 else { throw PSPCError.numerical("covariance eigendecomposition failed (dsyevd info \(info))") }
        self.mean = mean
        // Eigenvalues below D eps lambda_max are rounding, not variance: the covariance (formed as
        // E[x x^T] - mu mu^T) and dsyevd resolve eigenvalues only to about eps lambda_max, so a rank-deficient
        // covariance (fewer images than dimensions) has null-space eigenvalues of order +-1e-16 lambda_max. Kept,
        // they pass l / (l + t^2) of the query's null-space component: 5e-8 of it at t = 0.002 for lambda_max
        // ~ 1e3 (3x32x32 colour images). They are zeroed, as numerical rank does (LAPACK's and numpy's
        // max(M, N) eps sigma_max).
        let threshold = Double(dim) * Double.ulpOfOne * (w.max() ?? 0)
        self.eigenvalues = w.map { $0 > threshold ? $0 : 0 }
        self.eigenvectorsT = cov
        self.dimension = dim
    }

    /// D(z, t) for `[count, D]` queries.
    public func denoise(_ z: [Double], t: Double) -> [Double] {
        let dim = dimension, b = z.count / dim
        guard b > 0 else { return [] }
        var centered = z
        for q in 0..<b { for d in 0..<dim { centered[q * dim + d] -= mean[d] } }
        var y = [Double](repeating: 0, count: b * dim)
        // y = (z - mu) U, then scale coordinate k by l_k / (l_k + t^2), then out = y U^T + mu.
        cblas_dgemm(
            CblasRowMajor, CblasNoTrans, CblasTrans, Int32(b), Int32(dim), Int32(dim), 1, centered, Int32(dim),
            eigenvectorsT, Int32(dim), 0, &y, Int32(dim))
        let t2 = t * t
        let shrink = eigenvalues.map { $0 / ($0 + t2) }
        for q in 0..<b { for k in 0..<dim { y[q * dim + k] *= shrink[k] } }
        var out = [Double](repeating: 0, count: b * dim)
        for q in 0..<b { for d in 0..<dim { out[q * dim + d] = mean[d] } }
        cblas_dgemm(
            CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(b), Int32(dim), Int32(dim), 1, y, Int32(dim),
            eigenvectorsT, Int32(dim), 1, &out, Int32(dim))
        return out
    }
}
