import PSPCCore

extension Pspc_V1_Tensor {
    /// A batch of images as a float64 tensor `[count, C, H, W]`.
    public init(_ batch: QueryBatch, compression: TensorCompression = .automatic) {
        let shape = batch.shape
        self.init(
            float64: batch.values, shape: [batch.count, shape.channels, shape.height, shape.width],
            compression: compression)
    }
}

extension QueryBatch {
    /// A batch from a float64 (bit-exact) or float32 tensor `[B, C, H, W]` with C, H, W >= 1 (B may be 0)
    /// and every value finite.
    public init(wire: Pspc_V1_Tensor, field: String = "queries", limits: WireLimits = .default) throws {
        let values = try wire.doubleValues(field: field, limits: limits)
        let dims = try wire.checkedShape(field: field, limits: limits)
        guard dims.count == 4, dims[1] > 0, dims[2] > 0, dims[3] > 0 else {
            throw WireError.invalidTensor("\(field) has shape \(dims), expected [B, C, H, W] with C, H, W >= 1")
        }
        try WireValues.requireFinite(values, field: field)
        self.init(values: values, shape: ImageShape(channels: dims[1], height: dims[2], width: dims[3]))
    }
}

/// Checks on decoded values shared by the conversions.
enum WireValues {
    static func requireFinite(_ values: [Double], field: String) throws {
        if let i = values.firstIndex(where: { !$0.isFinite }) {
            throw WireError.invalidTensor("\(field)[\(i)] is \(values[i]); values must be finite")
        }
    }

    /// Log-domain values: -inf stands for "nothing contributed", NaN and +inf are errors.
    static func requireLogDomain(_ values: [Double], field: String) throws {
        if let i = values.firstIndex(where: { $0.isNaN || $0 == .infinity }) {
            throw WireError.invalidTensor("\(field)[\(i)] is \(values[i]); log values must be finite or -inf")
        }
    }

    static func requireNoiseLevel(_ t: Double, field: String) throws {
        guard t.isFinite && t > 0 else {
            throw WireError.invalidArgument("\(field) must be positive and finite, got \(t)")
        }
    }

    static func requireShape(_ tensor: Pspc_V1_Tensor, _ expected: [Int], field: String, limits: WireLimits) throws {
        let shape = try tensor.checkedShape(field: field, limits: limits)
        guard shape == expected else {
            throw WireError.invalidTensor("\(field) has shape \(shape), expected \(expected)")
        }
    }

    static func missing(_ field: String) -> WireError {
        WireError.invalidArgument("\(field) is missing")
    }
}
