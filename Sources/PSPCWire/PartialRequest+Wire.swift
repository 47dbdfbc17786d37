import PSPCCore

extension Pspc_V1_PartialRequest {
    /// The request as it travels; `shards` names which of the worker's shards answer it (empty: all), each
    /// id in `0...UInt32.max`.
    public init(_ request: PartialRequest, shards: [Int] = [], compression: TensorCompression = .automatic) {
        self.init()
        self.shards = shards.map { id in
            guard let wireID = UInt32(exactly: id) else { preconditionFailure("shard id \(id) does not fit the wire") }
            return wireID
        }
        switch request {
        case .empirical(let queries, let t):
            var op = Pspc_V1_EmpiricalOp()
            op.queries = Pspc_V1_Tensor(queries, compression: compression)
            op.t = t
            self.op = .empirical(op)
        case .cropNormalizers(let queries, let t, let crops):
            var op = Pspc_V1_CropNormalizersOp()
            op.queries = Pspc_V1_Tensor(queries, compression: compression)
            op.t = t
            op.crops = Pspc_V1_CropSpec(crops)
            self.op = .cropNormalizers(op)
        case .cropComposite(let queries, let t, let crops, let logZ):
            var op = Pspc_V1_CropCompositeOp()
            op.queries = Pspc_V1_Tensor(queries, compression: compression)
            op.t = t
            op.crops = Pspc_V1_CropSpec(crops)
            // [B, crops]; counts that disagree travel flat, for the receiver to refuse with a clear message.
            let cropCount = crops.cropCount(for: queries.shape)
            let shape =
                cropCount >= 0 && logZ.count == queries.count * cropCount ? [queries.count, cropCount] : [logZ.count]
            op.logZ = Pspc_V1_Tensor(float64: logZ, shape: shape, compression: compression)
            self.op = .cropComposite(op)
        case .moments(let rows):
            var op = Pspc_V1_MomentsOp()
            if let rows {
                // row_count 0 means every row, so an empty block has no encoding (and no use).
                guard !rows.isEmpty, let start = UInt32(exactly: rows.lowerBound),
                    let count = UInt32(exactly: rows.count)
                else { preconditionFailure("moments rows \(rows) do not fit the wire") }
                op.rowStart = start
                op.rowCount = count
            }
            self.op = .moments(op)
        case .windowPosterior(let queries, let t, let patchSize, let equivariant):
            var op = Pspc_V1_WindowPosteriorOp()
            op.queries = Pspc_V1_Tensor(queries, compression: compression)
            op.t = t
            guard let size = UInt32(exactly: patchSize) else {
                preconditionFailure("window size \(patchSize) does not fit the wire")
            }
            op.patchSize = size
            op.equivariant = equivariant
            self.op = .windowPosterior(op)
        }
    }
}

extension PartialRequest {
    /// The engine's request, after checking everything a shard relies on: queries `[B, C, H, W]` and finite,
    /// t positive and finite, crops well formed and fitting the query images, log Z `[B, crops]` finite or -inf.
    /// A request naming no operation (or one this build does not know) throws `unknownOperation`.
    public init(wire: Pspc_V1_PartialRequest, limits: WireLimits = .default) throws {
        switch wire.op {
        case .none:
            throw WireError.unknownOperation(
                wire.unknownFields.data.isEmpty
                    ? "the partial request names no operation"
                    : "the partial request's operation is of a kind this build does not know")
        case .empirical(let op):
            let queries = try Self.queries(op.hasQueries, op.queries, field: "empirical.queries", limits: limits)
            try WireValues.requireNoiseLevel(op.t, field: "empirical.t")
            self = .empirical(queries: queries, t: op.t)
        case .cropNormalizers(let op):
            let queries = try Self.queries(op.hasQueries, op.queries, field: "crop_normalizers.queries", limits: limits)
            try WireValues.requireNoiseLevel(op.t, field: "crop_normalizers.t")
            let crops = try Self.crops(op.hasCrops, op.crops, field: "crop_normalizers.crops", shape: queries.shape)
            self = .cropNormalizers(queries: queries, t: op.t, crops: crops)
        case .cropComposite(let op):
            let queries = try Self.queries(op.hasQueries, op.queries, field: "crop_composite.queries", limits: limits)
            try WireValues.requireNoiseLevel(op.t, field: "crop_composite.t")
            let crops = try Self.crops(op.hasCrops, op.crops, field: "crop_composite.crops", shape: queries.shape)
            guard op.hasLogZ else { throw WireValues.missing("crop_composite.log_z") }
            let logZ = try op.logZ.doubleValues(field: "crop_composite.log_z", limits: limits)
            try WireValues.requireShape(
                op.logZ, [queries.count, crops.cropCount(for: queries.shape)], field: "crop_composite.log_z",
                limits: limits)
            try WireValues.requireLogDomain(logZ, field: "crop_composite.log_z")
            self = .cropComposite(queries: queries, t: op.t, crops: crops, logZ: logZ)
        case .moments(let op):
            if op.rowCount == 0 {
                guard op.rowStart == 0 else {
                    throw WireError.invalidArgument("moments.row_start is \(op.rowStart) with row_count 0 (every row)")
                }
                self = .moments(rows: nil)
            } else {
                let start = Int(op.rowStart)
                self = .moments(rows: start..<(start + Int(op.rowCount)))
            }
        case .windowPosterior(let op):
            let queries = try Self.queries(op.hasQueries, op.queries, field: "window_posterior.queries", limits: limits)
            try WireValues.requireNoiseLevel(op.t, field: "window_posterior.t")
            let size = Int(op.patchSize)
            guard size >= 1, size % 2 == 1 else {
                throw WireError.invalidArgument(
                    "window_posterior.patch_size must be odd and at least 1, got \(op.patchSize)")
            }
            self = .windowPosterior(queries: queries, t: op.t, patchSize: size, equivariant: op.equivariant)
        }
    }

    /// As `init(wire:limits:)`, and the queries must be images of `shape` (the training set's), which the crops
    /// are then checked against; moments rows must be rows of the `[D, D]` outer sum of such images.
    public init(wire: Pspc_V1_PartialRequest, shape: ImageShape, limits: WireLimits = .default) throws {
        try self.init(wire: wire, limits: limits)
        switch self {
        case .empirical(let queries, _), .cropNormalizers(let queries, _, _), .cropComposite(let queries, _, _, _),
            .windowPosterior(let queries, _, _, _):
            guard queries.shape == shape else {
                throw WireError.invalidArgument(
                    "the queries are \(queries.shape) images, the training set's are \(shape)")
            }
        case .moments(let rows):
            if let rows, rows.upperBound > shape.dimension {
                throw WireError.invalidArgument(
                    "moments rows \(rows) are outside the \(shape.dimension) rows of \(shape) images")
            }
        }
    }

    private static func queries(
        _ present: Bool, _ tensor: Pspc_V1_Tensor, field: String, limits: WireLimits
    ) throws -> QueryBatch {
        guard present else { throw WireValues.missing(field) }
        return try QueryBatch(wire: tensor, field: field, limits: limits)
    }

    private static func crops(_ present: Bool, _ spec: Pspc_V1_CropSpec, field: String, shape: ImageShape) throws
        -> CropSet
    {
        guard present else { throw WireValues.missing(field) }
        let crops = try CropSet(wire: spec, field: field)
        do {
            try crops.validate(for: shape)
        } catch {
            throw WireError.invalidArgument("\(field): \(error)")
        }
        return crops
    }
}
