/// What a coordinator asks of a shard of the training set. Every method of the engine reduces to these
/// requests, whether the shard is evaluated in this process or on a remote worker (docs/design.md section 3).
public enum PartialRequest: Sendable {
    /// Softmax over whole images: per query, (m, s, v) with v the weighted image sum.
    case empirical(queries: QueryBatch, t: Double)
    /// PSPC round 1: per query and crop, the normaliser (m, s); slots are `query * crops + crop`.
    case cropNormalizers(queries: QueryBatch, t: Double, crops: CropSet)
    /// PSPC round 2: per query, the composite numerator sum_i x_i(p) sum_{C covers p} exp(l_i(C) - logZ_C),
    /// `[B, C, H, W]`; plain sums across shards. `logZ` is `[B][crops]`.
    case cropComposite(queries: QueryBatch, t: Double, crops: CropSet, logZ: [Double])
    /// Sum of images and of their outer products, for the Gaussian baseline.
    case moments
}

/// A shard's answer to a `PartialRequest`.
public enum PartialResponse: Sendable {
    case softmax(SoftmaxPartials)
    case sums([Double])
    case moments(Moments)
}

/// A batch of queries z, `[count, C, H, W]` row-major float64.
public struct QueryBatch: Sendable {
    public var values: [Double]
    public var shape: ImageShape
    public var count: Int { values.count / shape.dimension }

    public init(values: [Double], shape: ImageShape) {
        precondition(values.count % shape.dimension == 0)
        self.values = values
        self.shape = shape
    }
}

/// First and second moments of a set of images in [-1, 1]: count, sum x `[D]`, sum x x^T `[D, D]` row-major.
public struct Moments: Sendable, Equatable {
    public var count: Int
    public var sum: [Double]
    public var outer: [Double]

    public static func zero(dimension: Int) -> Moments {
        Moments(
            count: 0, sum: [Double](repeating: 0, count: dimension),
            outer: [Double](repeating: 0, count: dimension * dimension))
    }

    public mutating func merge(_ other: Moments) {
        count += other.count
        for i in sum.indices { sum[i] += other.sum[i] }
        for i in outer.indices { outer[i] += other.outer[i] }
    }
}

/// Anything that answers partial-sum requests over a part of the training set: a shard in this process,
/// or (with the cluster) a remote worker.
public protocol PartialSumSource: Sendable {
    var shape: ImageShape { get }
    /// Training images behind this source (x-flipped copies included).
    var imageCount: Int { get }
    func evaluate(_ request: PartialRequest) async throws -> PartialResponse
}
