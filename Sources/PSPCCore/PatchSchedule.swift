/// A value per time of a grid, looked up at the grid time nearest to t (docs/science.md section 3): the patch size
/// of PSPC-Square or the mask threshold lambda of PSPC-Flex.
public struct Schedule<Value: Sendable & Equatable & Codable>: Sendable, Equatable, Codable {
    /// Grid times, any order.
    public var t: [Double]
    public var values: [Value]

    public init(t: [Double], values: [Value]) throws {
        guard !t.isEmpty, t.count == values.count else {
            throw PSPCError.invalidArgument(
                "a schedule needs as many values as grid times (\(values.count) vs \(t.count))")
        }
        guard t.allSatisfy({ $0 > 0 && $0.isFinite }) else {
            throw PSPCError.invalidArgument("schedule times must be positive and finite")
        }
        self.t = t
        self.values = values
    }

    /// One value at every t.
    public static func constant(_ value: Value) -> Schedule {
        try! Schedule(t: [1], values: [value])
    }

    public func value(at time: Double) -> Value { values[EDM.nearestIndex(of: time, in: t)] }
}

public typealias PatchSchedule = Schedule<Int>
public typealias LambdaSchedule = Schedule<Double>

extension Schedule where Value == Int {
    /// The paper's CIFAR-10 PSPC-Square sizes on the 18-step EDM grid (t descending), for 32x32 images.
    public static var cifar10: PatchSchedule {
        try! PatchSchedule(
            t: EDM.grid(steps: 18), values: [32, 32, 32, 32, 32, 32, 32, 23, 15, 11, 7, 5, 3, 3, 3, 3, 3, 3])
    }
}

extension Schedule where Value == Double {
    /// The paper's CIFAR-10 PSPC-Flex lambda schedule on the 18-step EDM grid.
    public static var cifar10: LambdaSchedule {
        try! LambdaSchedule(
            t: EDM.grid(steps: 18),
            values: [1, 1, 1, 1, 1, 1, 1, 0.7, 0.7, 0.5, 0.4, 0.4, 0.4, 0.4, 0.3, 0.3, 0.3, 0.3])
    }
}
