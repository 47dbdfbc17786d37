import PSPCExperiments
import XCTest

final class JSONValueTests: XCTestCase {
    func testRoundTripKeepsNumbersExactly() throws {
        let values: [Double] = [0.1, 1.0 / 3.0, 1e-300, 6.02214076e23, -0.0, 0.002, 80]
        let doc = JSONValue.object([("b", .doubles(values)), ("a", .string("x\"\n")), ("n", .null), ("i", .int(-3))])
        let text = doc.serialized(pretty: true)
        let back = try JSONValue.parse(Array(text.utf8))
        XCTAssertEqual(back["b"]?.array?.compactMap(\.double), values)
        XCTAssertEqual(back["a"]?.string, "x\"\n")
        XCTAssertEqual(back["i"]?.int, -3)
        XCTAssertEqual(back["n"], .null)
    }

    func testWritingIsDeterministicAndOrdered() {
        let doc = JSONValue.object([("z", .int(1)), ("a", .int(2))])
        XCTAssertEqual(doc.serialized(), "{\"z\":1,\"a\":2}")
        XCTAssertEqual(JSONValue.number(.nan).serialized(), "null")
    }

    func testFirstDifferenceNamesTheKey() {
        let a = JSONValue.object([("seed", .int(1)), ("command", .string("x")), ("grid", .doubles([1, 2]))])
        let b = JSONValue.object([("seed", .int(1)), ("command", .string("y")), ("grid", .doubles([1, 3]))])
        XCTAssertNil(a.firstDifference(from: a))
        XCTAssertEqual(a.firstDifference(from: b, ignoring: ["command"]), "grid: [1.0,2.0] != [1.0,3.0]")
        XCTAssertNil(JSONValue.int(3).firstDifference(from: .number(3)))
    }
}
