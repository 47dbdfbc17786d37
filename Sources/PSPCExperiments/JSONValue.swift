import Foundation

/// A JSON document with object keys kept in the order they were written, so files written from the same
/// values are the same bytes. Doubles are written in their shortest round-trip form; non-finite ones as null.
public indirect enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case (.bool(let x), .bool(let y)): return x == y
        case (.string(let x), .string(let y)): return x == y
        case (.array(let x), .array(let y)): return x == y
        case (.object(let x), .object(let y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default:
            // 3 and 3.0 are the same JSON number.
            if let x = a.double, let y = b.double { return x == y }
            return false
        }
    }

    public subscript(key: String) -> JSONValue? {
        guard case .object(let pairs) = self else { return nil }
        return pairs.first { $0.0 == key }?.1
    }

    public var double: Double? {
        switch self {
        case .int(let v): return Double(v)
        case .number(let v): return v
        default: return nil
        }
    }

    public var int: Int? {
        switch self {
        case .int(let v): return v
        case .number(let v): return v == v.rounded() && abs(v) < 9e15 ? Int(v) : nil
        default: return nil
        }
    }

    public var string: String? {
        if case .string(let v) = self { return v }
        return nil
    }

    public var array: [JSONValue]? {
        if case .array(let v) = self { return v }
        return nil
    }

    public static func doubles(_ values: [Double]) -> JSONValue { .array(values.map { .number($0) }) }
    public static func ints(_ values: [Int]) -> JSONValue { .array(values.map { .int($0) }) }
    public static func strings(_ values: [String]) -> JSONValue { .array(values.map { .string($0) }) }

    /// The first key path at which `self` and `other` differ (as "key: a != b"), skipping top-level `ignoring`.
    public func firstDifference(from other: JSONValue, ignoring: Set<String> = []) -> String? {
        guard case .object(let mine) = self, case .object(let theirs) = other else {
            return self == other ? nil : "\(serialized()) != \(other.serialized())"
        }
        let keys = (mine.map(\.0) + theirs.map(\.0).filter { key in !mine.contains { $0.0 == key } })
            .filter { !ignoring.contains($0) }
        for key in keys where self[key] != other[key] {
            return "\(key): \(self[key]?.serialized() ?? "absent") != \(other[key]?.serialized() ?? "absent")"
        }
        return nil
    }

    // MARK: Writing

    public func serialized(pretty: Bool = false) -> String {
        var out = ""
        write(to: &out, indent: pretty ? 0 : nil)
        return out
    }

    private func write(to out: inout String, indent: Int?) {
        switch self {
        case .null: out += "null"
        case .bool(let v): out += v ? "true" : "false"
        case .int(let v): out += String(v)
        case .number(let v): out += v.isFinite ? v.description : "null"
        case .string(let v): Self.writeString(v, to: &out)
        case .array(let items):
            // Arrays of numbers stay on one line, even pretty-printed.
            let flat = items.allSatisfy { $0.double != nil || $0 == .null }
            writeList(
                items.map { item in { (o: inout String, i: Int?) in item.write(to: &o, indent: i) } },
                open: "[", close: "]", to: &out, indent: flat ? nil : indent)
        case .object(let pairs):
            writeList(
                pairs.map { pair in
                    { (o: inout String, i: Int?) in
                        Self.writeString(pair.0, to: &o)
                        o += i == nil ? ":" : ": "
                        pair.1.write(to: &o, indent: i)
                    }
                }, open: "{", close: "}", to: &out, indent: indent)
        }
    }

    private func writeList(
        _ items: [(inout String, Int?) -> Void], open: String, close: String, to out: inout String, indent: Int?
    ) {
        out += open
        guard !items.isEmpty else { return out += close }
        for (n, item) in items.enumerated() {
            if n > 0 { out += indent == nil ? "," : ",\n" } else if indent != nil { out += "\n" }
            if let indent { out += String(repeating: " ", count: indent + 2) }
            item(&out, indent.map { $0 + 2 })
        }
        if let indent { out += "\n" + String(repeating: " ", count: indent) }
        out += close
    }

    private static func writeString(_ s: String, to out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }

    // MARK: Reading

    public static func parse(_ bytes: [UInt8]) throws -> JSONValue {
        var parser = Parser(bytes: bytes)
        let value = try parser.value()
        parser.skipSpace()
        guard parser.at == bytes.count else { throw parser.error("trailing characters") }
        return value
    }

    /// A recursive-descent reader of RFC 8259 JSON.
    private struct Parser {
        let bytes: [UInt8]
        var at = 0

        struct Failure: Error, CustomStringConvertible {
            var description: String
        }

        func error(_ what: String) -> Failure { Failure(description: "\(what) at byte \(at)") }

        mutating func skipSpace() {
            while at < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[at]) { at += 1 }
        }

        mutating func expect(_ word: String) throws {
            let w = Array(word.utf8)
            guard at + w.count <= bytes.count, Array(bytes[at..<(at + w.count)]) == w else {
                throw error("expected \(word)")
            }
            at += w.count
        }

        mutating func value(depth: Int = 0) throws -> JSONValue {
            guard depth < 512 else { throw error("nesting too deep") }
            skipSpace()
            guard at < bytes.count else { throw error("unexpected end") }
            switch bytes[at] {
            case UInt8(ascii: "n"): try expect("null"); return .null
            case UInt8(ascii: "t"): try expect("true"); return .bool(true)
            case UInt8(ascii: "f"): try expect("false"); return .bool(false)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "["):
                at += 1
                var items: [JSONValue] = []
                skipSpace()
                if at < bytes.count, bytes[at] == UInt8(ascii: "]") { at += 1; return .array(items) }
                while true {
                    items.append(try value(depth: depth + 1))
                    skipSpace()
                    guard at < bytes.count else { throw error("unterminated array") }
                    if bytes[at] == UInt8(ascii: "]") { at += 1; return .array(items) }
                    guard bytes[at] == UInt8(ascii: ",") else { throw error("expected , or ]") }
                    at += 1
                }
            case UInt8(ascii: "{"):
                at += 1
                var pairs: [(String, JSONValue)] = []
                skipSpace()
                if at < bytes.count, bytes[at] == UInt8(ascii: "}") { at += 1; return .object(pairs) }
                while true {
                    skipSpace()
                    guard at < bytes.count, bytes[at] == UInt8(ascii: "\"") else { throw error("expected a key") }
                    let key = try string()
                    skipSpace()
                    guard at < bytes.count, bytes[at] == UInt8(ascii: ":") else { throw error("expected :") }
                    at += 1
                    pairs.append((key, try value(depth: depth + 1)))
                    skipSpace()
                    guard at < bytes.count else { throw error("unterminated object") }
                    if bytes[at] == UInt8(ascii: "}") { at += 1; return .object(pairs) }
                    guard bytes[at] == UInt8(ascii: ",") else { throw error("expected , or }") }
                    at += 1
                }
            default: return try number()
            }
        }

        mutating func number() throws -> JSONValue {
            let start = at
            var integral = true
            while at < bytes.count, let c = Optional(bytes[at]),
                (c >= 0x30 && c <= 0x39) || c == UInt8(ascii: "-") || c == UInt8(ascii: "+") || c == UInt8(ascii: ".")
                    || c == UInt8(ascii: "e") || c == UInt8(ascii: "E")
            {
                if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") { integral = false }
                at += 1
            }
            let text = String(decoding: bytes[start..<at], as: UTF8.self)
            if integral, let i = Int(text) { return .int(i) }
            guard !text.isEmpty, let d = Double(text) else { at = start; throw error("not a JSON value") }
            return .number(d)
        }

        mutating func string() throws -> String {
            at += 1
            var scalars = String.UnicodeScalarView()
            var raw: [UInt8] = []
            func flush() {
                scalars.append(contentsOf: String(decoding: raw, as: UTF8.self).unicodeScalars)
                raw.removeAll()
            }
            while at < bytes.count {
                let c = bytes[at]
                at += 1
                if c == UInt8(ascii: "\"") { flush(); return String(scalars) }
                if c != UInt8(ascii: "\\") { raw.append(c); continue }
                flush()
                guard at < bytes.count else { break }
                let e = bytes[at]
                at += 1
                switch e {
                case UInt8(ascii: "n"): scalars.append("\n")
                case UInt8(ascii: "t"): scalars.append("\t")
                case UInt8(ascii: "r"): scalars.append("\r")
                case UInt8(ascii: "b"): scalars.append("\u{08}")
                case UInt8(ascii: "f"): scalars.append("\u{0C}")
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800..<0xDC00).contains(code), at + 1 < bytes.count, bytes[at] == UInt8(ascii: "\\"),
                        bytes[at + 1] == UInt8(ascii: "u")
                    {
                        at += 2
                        let low = try hex4()
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw error("bad \\u escape") }
                    scalars.append(scalar)
                default: scalars.append(Unicode.Scalar(e))
                }
            }
            throw error("unterminated string")
        }

        mutating func hex4() throws -> UInt32 {
            guard at + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[at..<(at + 4)], as: UTF8.self), radix: 16)
            else { throw error("bad \\u escape") }
            at += 4
            return v
        }
    }
}
