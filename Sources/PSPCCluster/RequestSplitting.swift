import PSPCCore

extension PartialRequest {
    /// The same request over the first and the second half of its queries, or for moments of its rows; nil
    /// when it has fewer than two (or moments that name no rows: the whole matrix, of a size this cannot know).
    public func halves() -> (PartialRequest, PartialRequest)? {
        func split(_ q: QueryBatch) -> (QueryBatch, QueryBatch, Int)? {
            guard q.count >= 2 else { return nil }
            let n = q.count / 2, d = q.shape.dimension
            return (
                QueryBatch(values: Array(q.values[..<(n * d)]), shape: q.shape),
                QueryBatch(values: Array(q.values[(n * d)...]), shape: q.shape), n
            )
        }
        switch self {
        case .empirical(let q, let t):
            guard let (a, b, _) = split(q) else { return nil }
            return (.empirical(queries: a, t: t), .empirical(queries: b, t: t))
        case .cropNormalizers(let q, let t, let crops):
            guard let (a, b, _) = split(q) else { return nil }
            return (.cropNormalizers(queries: a, t: t, crops: crops), .cropNormalizers(queries: b, t: t, crops: crops))
        case .cropComposite(let q, let t, let crops, let logZ):
            guard let (a, b, n) = split(q) else { return nil }
            let perQuery = logZ.count / q.count
            return (
                .cropComposite(queries: a, t: t, crops: crops, logZ: Array(logZ[..<(n * perQuery)])),
                .cropComposite(queries: b, t: t, crops: crops, logZ: Array(logZ[(n * perQuery)...]))
            )
        case .windowPosterior(let q, let t, let patchSize, let equivariant):
            guard let (a, b, _) = split(q) else { return nil }
            return (
                .windowPosterior(queries: a, t: t, patchSize: patchSize, equivariant: equivariant),
                .windowPosterior(queries: b, t: t, patchSize: patchSize, equivariant: equivariant)
            )
        case .moments(let rows):
            guard let rows, rows.count >= 2 else { return nil }
            let middle = rows.lowerBound + rows.count / 2
            return (.moments(rows: rows.lowerBound..<middle), .moments(rows: middle..<rows.upperBound))
        }
    }
}

extension PartialResponse {
    /// The answers to two halves of a batch, as the answer to the whole batch (slots in query order); for
    /// moments, two adjacent blocks of rows of one shard (the same count and sums) as one block.
    public func concatenated(_ other: PartialResponse) throws -> PartialResponse {
        switch (self, other) {
        case (.softmax(let a), .softmax(let b)) where a.valueLength == b.valueLength:
            return .softmax(SoftmaxPartials(m: a.m + b.m, s: a.s + b.s, v: a.v + b.v, valueLength: a.valueLength))
        case (.sums(let a), .sums(let b)):
            return .sums(a + b)
        case (.moments(let a), .moments(let b)):
            guard a.rows.upperBound == b.rows.lowerBound, a.count == b.count, a.sum == b.sum else {
                throw ClusterError.invalidConfiguration(
                    "moments rows \(a.rows) and \(b.rows) are not adjacent blocks of one shard's outer sum")
            }
            let rows = a.rows.lowerBound..<b.rows.upperBound
            return .moments(Moments(count: a.count, sum: a.sum, outer: a.outer + b.outer, rows: rows))
        default:
            throw ClusterError.invalidConfiguration("the halves of a split request came back as different kinds")
        }
    }
}
