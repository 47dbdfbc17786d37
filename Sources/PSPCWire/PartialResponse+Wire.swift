import PSPCCore

extension Pspc_V1_PartialResponse {
    /// Sums travel as a flat `[n]` tensor.
    public init(_ response: PartialResponse, compression: TensorCompression = .automatic) {
        self.init()
        switch response {
        case .softmax(let partials):
            result = .softmax(Pspc_V1_SoftmaxPartialsMsg(partials, compression: compression))
        case .sums(let sums):
            result = .sums(Pspc_V1_Tensor(float64: sums, shape: [sums.count], compression: compression))
        case .moments(let moments):
            result = .moments(Pspc_V1_MomentsMsg(moments, compression: compression))
        }
    }
}

extension PartialResponse {
    /// The engine's response, with the checks of `SoftmaxPartials(wire:)` and `Moments(wire:)`; sums must be
    /// a finite `[n]` tensor.
    public init(wire: Pspc_V1_PartialResponse, limits: WireLimits = .default) throws {
        switch wire.result {
        case .none:
            throw WireError.unknownOperation(
                wire.unknownFields.data.isEmpty
                    ? "the partial response carries no result"
                    : "the partial response's result is of a kind this build does not know")
        case .softmax(let partials):
            self = .softmax(try SoftmaxPartials(wire: partials, field: "softmax", limits: limits))
        case .sums(let tensor):
            let sums = try tensor.doubleValues(field: "sums", limits: limits)
            try WireValues.requireShape(tensor, [sums.count], field: "sums", limits: limits)
            try WireValues.requireFinite(sums, field: "sums")
            self = .sums(sums)
        case .moments(let moments):
            self = .moments(try Moments(wire: moments, field: "moments", limits: limits))
        case .perShard:
            throw WireError.unexpectedMessage(
                expected: "one shard's partials", got: "per-shard partials (read them with perShardPartials)")
        }
    }

    /// As `init(wire:limits:)`, and the sizes must fit images of `shape`: softmax values per slot 0,
    /// `shape.channels` or `shape.dimension`, sums a whole number of images, moments of dimension `shape.dimension`.
    public init(wire: Pspc_V1_PartialResponse, shape: ImageShape, limits: WireLimits = .default) throws {
        try self.init(wire: wire, limits: limits)
        let d = shape.dimension
        switch self {
        case .softmax(let partials):
            // 0 (normalisers), D (whole images) or C (a pixel's channels: the LS / ELS window posteriors).
            guard [0, d, shape.channels].contains(partials.valueLength) else {
                throw WireError.invalidArgument(
                    "softmax values have length \(partials.valueLength), not 0, \(shape.channels) or \(d) (\(shape))")
            }
        case .sums(let sums):
            guard d > 0 && sums.count % d == 0 else {
                throw WireError.invalidArgument("\(sums.count) sums are not a whole number of \(shape) images")
            }
        case .moments(let moments):
            guard moments.sum.count == d else {
                throw WireError.invalidArgument("moments of dimension \(moments.sum.count), expected \(d) (\(shape))")
            }
        }
    }
}

extension Pspc_V1_PartialResponse {
    /// The answers of a per-shard request, `count` of them, each checked as `PartialResponse(wire:shape:)`.
    public func perShardPartials(count: Int, shape: ImageShape, limits: WireLimits = .default) throws
        -> [PartialResponse]
    {
        guard case .perShard(let list) = result else {
            throw WireError.unexpectedMessage(expected: "per-shard partials", got: "one merged answer")
        }
        guard list.shards.count == count else {
            throw WireError.invalidArgument("per-shard partials for \(list.shards.count) shards; \(count) were asked")
        }
        return try list.shards.map { try PartialResponse(wire: $0, shape: shape, limits: limits) }
    }
}
