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
    /// Sum of images and rows `rows` of the sum of their outer products (every row when nil), for the Gaussian
    /// baseline. The engine names the rows, 0..<D, so that a coordinator whose workers cannot send a D x D
    /// matrix in one frame can ask for it in blocks of rows.
    case moments(rows: Range<Int>?)
    /// LS / ELS (Kamb & Ganguli): per query and pixel p, the softmax over candidate `patchSize` x `patchSize`
    /// training windows (zero-padded) with value the candidate's centre pixel: slots `query * H * W + p`, values the
    /// C channels. `equivariant` false: the windows at p (LS); true: at every position of p's padding class (ELS).
    case windowPosterior(queries: QueryBatch, t: Double, patchSize: Int, equivariant: Bool)
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

/// First and second moments of a set of images in [-1, 1]: count, sum x `[D]`, and rows `rows` of
/// sum x x^T `[D, D]` row-major (all of them unless a block of rows was asked for).
public struct Moments: Sendable, Equatable {
    public var count: Int
    public var sum: [Double]
    /// Rows `rows` of sum x x^T, `[rows.count, D]` row-major.
    public var outer: [Double]
    /// Which rows of the `[D, D]` outer-product sum `outer` holds.
    public var rows: Range<Int>

    public init(count: Int, sum: [Double], outer: [Double], rows: Range<Int>) {
        self.count = count
        self.sum = sum
        self.outer = outer
        self.rows = rows
    }

    /// No images, over `rows` (every row when nil) of a `dimension`-pixel outer sum.
    public static func zero(dimension: Int, rows: Range<Int>? = nil) -> Moments {
        let rows = rows ?? 0..<dimension
        return Moments(
            count: 0, sum: [Double](repeating: 0, count: dimension),
            outer: [Double](repeating: 0, count: rows.count * dimension), rows: rows)
    }

    /// Adds the moments of another part of the training set, over the same rows.
    public mutating func merge(_ other: Moments) throws {
        guard other.rows == rows, other.sum.count == sum.count, other.outer.count == outer.count else {
            throw PSPCError.shapeMismatch(
                "moments over rows \(other.rows) of dimension \(other.sum.count) cannot be added to rows \(rows) "
                    + "of dimension \(sum.count)")
        }
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

/// A source that evaluates on the calling thread and stops at its safe points once `cancellation` is set
/// (throwing `CancellationError`): what a worker runs behind the wire, one request at a time on its compute
/// thread.
public protocol BlockingPartialSumSource: PartialSumSource {
    func evaluateNow(_ request: PartialRequest, cancellation: CancellationFlag?) throws -> PartialResponse
}

extension BlockingPartialSumSource {
    /// `evaluateNow` to the end, with no way to stop it.
    public func evaluateNow(_ request: PartialRequest) throws -> PartialResponse {
        try evaluateNow(request, cancellation: nil)
    }
}

/// Shards answered together: a cluster asks each worker once per request for all the shards it routes to it
/// (the queries travel once per worker instead of once per shard) and hands back each shard's own partials, so
/// the engine merges them in shard order exactly as it merges separate sources.
public protocol PartialSumGroup: Sendable {
    /// The answers of `shards` (indices into the engine's sources) to `request`, in that order.
    func evaluate(_ request: PartialRequest, shards: [Int]) async throws -> [PartialResponse]
}
