import Foundation
import PSPCCore
import XCTest

final class SoftmaxPartialsTests: XCTestCase {
    /// The partial of a list of (logit, value) pairs, computed directly.
    func partial(_ items: [(Double, [Double])], length: Int) -> SoftmaxPartials {
        var p = SoftmaxPartials.empty(slots: 1, valueLength: length)
        guard let m = items.map({ $0.0 }).max() else { return p }
        p.m[0] = m
        for (l, x) in items {
            p.s[0] += exp(l - m)
            for j in 0..<length { p.v[j] += exp(l - m) * x[j] }
        }
        return p
    }

    func testMergeIsExactAssociativeAndHasAnIdentity() throws {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            let items = (0..<20).map { _ in
                (Double.random(in: -1e6...0, using: &rng), [Double.random(in: -1...1), Double.random(in: -1...1)])
            }
            let whole = partial(items, length: 2)
            let cut1 = Int.random(in: 0...20), cut2 = Int.random(in: cut1...20)
            let a = partial(Array(items[0..<cut1]), length: 2)
            let b = partial(Array(items[cut1..<cut2]), length: 2)
            let c = partial(Array(items[cut2...]), length: 2)
            var left = a
            left.merge(b)
            left.merge(c)
            var right = c
            right.merge(b)
            right.merge(a)
            var withEmpty = SoftmaxPartials.empty(slots: 1, valueLength: 2)
            withEmpty.merge(whole)
            withEmpty.merge(.empty(slots: 1, valueLength: 2))
            for merged in [left, right, withEmpty] {
                let means = try merged.means(), expected = try whole.means()
                XCTAssertLessThanOrEqual(maxAbsDifference(means, expected), 1e-12)
                XCTAssertEqual(
                    merged.logNormalizers[0], whole.logNormalizers[0],
                    accuracy: 1e-9 * max(1, abs(whole.logNormalizers[0])))
            }
        }
    }

    func testEmptyPartialHasNoMean() {
        XCTAssertThrowsError(try SoftmaxPartials.empty(slots: 1, valueLength: 1).means())
        XCTAssertEqual(SoftmaxPartials.empty(slots: 2).logNormalizers, [-.infinity, -.infinity])
    }
}
