import Foundation
import PSPCData
import XCTest

import PSPCExperiments

/// Outside input (run-directory JSON and CSV) only ever parses or throws; specific cases that once trapped or
/// misread stay fixed.
final class ParserFuzzTests: XCTestCase {
    /// A high surrogate followed by another escape trapped the old hand-written parser (arithmetic overflow).
    func testHighSurrogateBeforeAnotherEscapeThrows() {
        for text in ["\"\\uD800\\u0041\"", "{\"kind\":\"\\uD800\\u0041\"}", "\"\\uDBFF\\uDBFF\"", "\"\\uDC00\""] {
            XCTAssertThrowsError(try JSONValue.parse(Array(text.utf8)), text)
        }
        XCTAssertEqual(try JSONValue.parse(Array("\"\\uD83D\\uDE00\"".utf8)), .string("😀"))
    }

    func testNastyStringsRoundTrip() throws {
        let nasty = [
            "", "\u{0}", "\u{1}\u{1F}\u{7F}", "\"\\/", "\n\r\t\u{08}\u{0C}", "\u{2028}\u{2029}", "é😀\u{FFFF}",
            "\u{10FFFF}", "\r\n", "a\u{0}b",
        ]
        let doc = JSONValue.object(nasty.enumerated().map { ("k\($0.offset)" + $0.element, .string($0.element)) })
        for pretty in [false, true] {
            let back = try JSONValue.parse(Array(doc.serialized(pretty: pretty).utf8))
            XCTAssertEqual(back, doc)
            guard case .object(let pairs) = back else { return XCTFail("not an object") }
            XCTAssertEqual(pairs.map(\.0), nasty.enumerated().map { "k\($0.offset)" + $0.element }, "key order")
        }
    }

    func testRandomDoublesRoundTripExactly() throws {
        var rng = SplitMix(seed: 3)
        for _ in 0..<5000 {
            let d = Double(bitPattern: rng.next())
            guard d.isFinite else { continue }
            let back = try JSONValue.parse(Array(JSONValue.doubles([d, 0.30000000000000004]).serialized().utf8))
            XCTAssertEqual(back.array?[0].double?.bitPattern, d.bitPattern)
            XCTAssertEqual(back.array?[1].double, 0.30000000000000004)
        }
        XCTAssertEqual(try JSONValue.parse(Array("[3, 3.0]".utf8)).serialized(), "[3,3.0]")
    }

    /// Thousands of mutated documents: parse must return or throw, never trap.
    func testFuzzJSONNeverTraps() {
        let seeds = [
            "{\"kind\":\"sweep-forward\",\"grid\":[80,0.002],\"dataset\":{\"a\":1e-300,\"b\":[true,false,null]}}",
            "\"\\uD800\\u0041\\n\\\"\"", "[[[[{\"\":-0.0}]]]]", "{\"a\":\"\\u00e9\\uD83D\\uDE00\"}",
        ].map { Array($0.utf8) }
        let alphabet = Array("{}[],:\"\\u0123456789abcdefDEnulltrue-+.eE \n\t".utf8) + [0, 0x80, 0xC3, 0xFF, 0xED, 0xA0]
        var rng = SplitMix(seed: 1)
        let deadline = Date().addingTimeInterval(4)
        var runs = 0
        while runs < 20_000 && Date() < deadline {
            var bytes = seeds[Int(rng.next() % UInt64(seeds.count))]
            for _ in 0...(rng.next() % 6) {
                let at = Int(rng.next() % UInt64(bytes.count + 1))
                let b = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                switch rng.next() % 3 {
                case 0: bytes.insert(b, at: at)
                case 1: if at < bytes.count { bytes[at] = b }
                default: if at < bytes.count { bytes.remove(at: at) }
                }
            }
            _ = try? JSONValue.parse(bytes)
            runs += 1
        }
        XCTAssertGreaterThan(runs, 1000)
    }

    func testCSVRoundTripsNastyFieldsAndNeverTraps() throws {
        let nasty = ["plain", "a,b", "q\"uote", "\"", "", "line\nbreak", "crlf\r\nx", "\r", "é😀", ",,", "\"\""]
        XCTAssertEqual(try CSVText.records(CSVText.line(nasty) + CSVText.line(["1", "2"])), [nasty, ["1", "2"]])
        for bad in ["a\"b", "\"a\"b", "\"abc", "a\rb"] { XCTAssertThrowsError(try CSVText.records(bad), bad) }
        let alphabet = Array(",\"\r\na1é".unicodeScalars)
        var rng = SplitMix(seed: 2)
        let deadline = Date().addingTimeInterval(3)
        var runs = 0
        while runs < 20_000 && Date() < deadline {
            var text = String.UnicodeScalarView()
            for _ in 0..<(rng.next() % 40) { text.append(alphabet[Int(rng.next() % UInt64(alphabet.count))]) }
            let fields = String(text).split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            _ = try? CSVText.records(String(text))
            XCTAssertEqual(try CSVText.records(CSVText.line(fields + [String(text)])), [fields + [String(text)]])
            runs += 1
        }
    }

    /// An unknown column read as column 0; now it is an error naming the column and the file.
    func testUnknownColumnIsAnError() throws {
        let dir = (NSTemporaryDirectory() as NSString).appendingPathComponent("pspc-csv-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = (dir as NSString).appendingPathComponent("similarity.csv")
        try Array("method_a,method_b\n\"x,y\",z\n".utf8).write(to: path)
        let csv = try Report.CSV.read(path, header: ["method_a", "method_b"])
        XCTAssertEqual(try csv.string(0, "method_a"), "x,y")
        XCTAssertThrowsError(try csv.string(0, "pearson")) { error in
            XCTAssertTrue("\(error)".contains("pearson") && "\(error)".contains(path), "\(error)")
        }
    }
}

/// A seeded 64-bit generator (SplitMix64), so every fuzz run feeds the same inputs.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49EB_311D_3A3B
        return z ^ (z >> 31)
    }
}

extension Array where Element == UInt8 {
    func write(to path: String) throws { try Data(self).write(to: URL(fileURLWithPath: path)) }
}
