import PSPCCore

extension Pspc_V1_SoftmaxPartialsMsg {
    /// m and s as `[slots]`, v as `[slots, valueLength]`.
    public init(_ partials: SoftmaxPartials, compression: TensorCompression = .automatic) {
        self.init()
        m = Pspc_V1_Tensor(float64: partials.m, shape: [partials.slots], compression: compression)
        s = Pspc_V1_Tensor(float64: partials.s, shape: [partials.slots], compression: compression)
        v = Pspc_V1_Tensor(
            float64: partials.v, shape: [partials.slots, partials.valueLength], compression: compression)
        valueLength = UInt32(clamping: partials.valueLength)
    }
}

extension SoftmaxPartials {
    /// Checks the sizes agree, m is finite or -inf (the empty partial), s finite and non-negative, v finite.
    public init(wire: Pspc_V1_SoftmaxPartialsMsg, field: String = "softmax", limits: WireLimits = .default) throws {
        guard wire.hasM else { throw WireValues.missing("\(field).m") }
        guard wire.hasS else { throw WireValues.missing("\(field).s") }
        let m = try wire.m.doubleValues(field: "\(field).m", limits: limits)
        let slots = m.count
        try WireValues.requireShape(wire.m, [slots], field: "\(field).m", limits: limits)
        let s = try wire.s.doubleValues(field: "\(field).s", limits: limits)
        try WireValues.requireShape(wire.s, [slots], field: "\(field).s", limits: limits)
        let valueLength = Int(wire.valueLength)
        var v: [Double] = []
        if wire.hasV {
            v = try wire.v.doubleValues(field: "\(field).v", limits: limits)
            try WireValues.requireShape(wire.v, [slots, valueLength], field: "\(field).v", limits: limits)
        } else if valueLength > 0 && slots > 0 {
            throw WireValues.missing("\(field).v")
        }
        try WireValues.requireLogDomain(m, field: "\(field).m")
        if let i = s.firstIndex(where: { !$0.isFinite || $0 < 0 }) {
            throw WireError.invalidTensor("\(field).s[\(i)] is \(s[i]); sums of weights must be finite and >= 0")
        }
        try WireValues.requireFinite(v, field: "\(field).v")
        self.init(m: m, s: s, v: v, valueLength: valueLength)
    }
}
