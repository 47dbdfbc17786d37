import PSPCCore

extension Pspc_V1_DenoiseRequest {
    /// D_theta(z, t) for a batch: `z` as `[B, C, H, W]`, `t` as `[B]` (one noise level per query).
    public init(queries: QueryBatch, t: [Double], compression: TensorCompression = .automatic) {
        self.init()
        z = Pspc_V1_Tensor(queries, compression: compression)
        self.t = Pspc_V1_Tensor(float64: t, shape: [t.count], compression: compression)
    }

    /// The batch and its noise levels: z finite `[B, C, H, W]`, t `[B]` positive and finite.
    public func decoded(limits: WireLimits = .default) throws -> (queries: QueryBatch, t: [Double]) {
        guard hasZ else { throw WireValues.missing("denoise_request.z") }
        guard hasT else { throw WireValues.missing("denoise_request.t") }
        let queries = try QueryBatch(wire: z, field: "denoise_request.z", limits: limits)
        let levels = try t.doubleValues(field: "denoise_request.t", limits: limits)
        try WireValues.requireShape(t, [queries.count], field: "denoise_request.t", limits: limits)
        for (i, level) in levels.enumerated() {
            try WireValues.requireNoiseLevel(level, field: "denoise_request.t[\(i)]")
        }
        return (queries, levels)
    }
}

extension Pspc_V1_DenoiseResponse {
    public init(denoised: QueryBatch, compression: TensorCompression = .automatic) {
        self.init()
        self.denoised = Pspc_V1_Tensor(denoised, compression: compression)
    }

    /// The denoised batch, finite `[B, C, H, W]`.
    public func decoded(limits: WireLimits = .default) throws -> QueryBatch {
        guard hasDenoised else { throw WireValues.missing("denoise_response.denoised") }
        return try QueryBatch(wire: denoised, field: "denoise_response.denoised", limits: limits)
    }
}
