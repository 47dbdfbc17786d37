import PSPCCore

extension Pspc_V1_MomentsMsg {
    /// sum as `[D]`, outer as `[R, D]` for its R rows, which start at `row_start`.
    public init(_ moments: Moments, compression: TensorCompression = .automatic) {
        self.init()
        count = Int64(moments.count)
        guard let start = UInt32(exactly: moments.rows.lowerBound) else {
            preconditionFailure("moments rows \(moments.rows) do not fit the wire")
        }
        rowStart = start
        sum = Pspc_V1_Tensor(float64: moments.sum, shape: [moments.sum.count], compression: compression)
        let d = moments.sum.count, r = moments.rows.count
        // Counts that disagree travel flat, for the receiver to refuse with a clear message.
        let outerShape = moments.outer.count == r * d ? [r, d] : [moments.outer.count]
        outer = Pspc_V1_Tensor(float64: moments.outer, shape: outerShape, compression: compression)
    }
}

extension Moments {
    /// Checks count >= 0, sum `[D]`, outer `[R, D]` with rows `row_start ..< row_start + R` inside `0..<D`,
    /// every value finite. A message without `row_start` and with a `[D, D]` outer is the whole matrix.
    public init(wire: Pspc_V1_MomentsMsg, field: String = "moments", limits: WireLimits = .default) throws {
        guard wire.count >= 0 else { throw WireError.invalidArgument("\(field).count is negative (\(wire.count))") }
        guard wire.hasSum else { throw WireValues.missing("\(field).sum") }
        guard wire.hasOuter else { throw WireValues.missing("\(field).outer") }
        let sum = try wire.sum.doubleValues(field: "\(field).sum", limits: limits)
        try WireValues.requireShape(wire.sum, [sum.count], field: "\(field).sum", limits: limits)
        let outer = try wire.outer.doubleValues(field: "\(field).outer", limits: limits)
        let rowCount = sum.isEmpty ? 0 : outer.count / sum.count
        try WireValues.requireShape(wire.outer, [rowCount, sum.count], field: "\(field).outer", limits: limits)
        let rows = Int(wire.rowStart)..<(Int(wire.rowStart) + rowCount)
        guard rows.upperBound <= sum.count else {
            throw WireError.invalidArgument(
                "\(field) rows \(rows) are outside the \(sum.count) rows of the outer sum")
        }
        try WireValues.requireFinite(sum, field: "\(field).sum")
        try WireValues.requireFinite(outer, field: "\(field).outer")
        self.init(count: Int(wire.count), sum: sum, outer: outer, rows: rows)
    }
}
