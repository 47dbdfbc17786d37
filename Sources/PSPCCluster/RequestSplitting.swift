import PSPCCore

extension PartialRequest {
    /// The same request over the first and the second half of its queries; nil when it has fewer than two
    /// queries or none (moments).
    func halves() -> (PartialRequest, PartialRequest)? {
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
        case .moments:
            return nil
        }
    }
}

extension PartialResponse {
    /// The answers to two halves of a batch, as the answer to the whole batch (slots in query order).
    func concatenated(_ other: PartialResponse) throws -> PartialResponse {
        switch (self, other) {
        case (.softmax(let a), .softmax(let b)) where a.valueLength == b.valueLength:
            return .softmax(SoftmaxPartials(m: a.m + b.m, s: a.s + b.s, v: a.v + b.v, valueLength: a.valueLength))
        case (.sums(let a), .sums(let b)):
            return .sums(a + b)
        default:
            throw ClusterError.invalidConfiguration("the halves of a split request came back as different kinds")
        }
    }
}
