import PSPCCore

extension Pspc_V1_MomentsMsg {
    /// sum as `[D]`, outer as `[D, D]`.
    public init(_ moments: Moments, compression: TensorCompression = .automatic) {
        self.init()
        count = Int64(moments.count)
        sum = Pspc_V1_Tensor(float64: moments.sum, shape: [moments.sum.count], compression: compression)
        let d = moments.sum.count
        let outerShape = moments.outer.count == d * d ? [d, d] : [moments.outer.count]
        outer = Pspc_V1_Tensor(float64: moments.outer, shape: outerShape, compression: compression)
    }
}

extension Moments {
    /// Checks count >= 0, sum `[D]`, outer `[D, D]`, every value finite.
    public init(wire: Pspc_V1_MomentsMsg, field: String = "moments", limits: WireLimits = .default) throws {
        guard wire.count >= 0 else { throw WireError.invalidArgument("\(field).count is negative (\(wire.count))") }
        guard wire.hasSum else { throw WireValues.missing("\(field).sum") }
        guard wire.hasOuter else { throw WireValues.missing("\(field).outer") }
        let sum = try wire.sum.doubleValues(field: "\(field).sum", limits: limits)
        try WireValues.requireShape(wire.sum, [sum.count], field: "\(field).sum", limits: limits)
        let outer = try wire.outer.doubleValues(field: "\(field).outer", limits: limits)
        try WireValues.requireShape(wire.outer, [sum.count, sum.count], field: "\(field).outer", limits: limits)
        try WireValues.requireFinite(sum, field: "\(field).sum")
        try WireValues.requireFinite(outer, field: "\(field).outer")
        self = .zero(dimension: 0)
        self.count = Int(wire.count)
        self.sum = sum
        self.outer = outer
    }
}
