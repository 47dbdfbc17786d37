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

    /// Why a document did not parse (JSONSerialization's own words where it rejected it).
    public struct ParseFailure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Reads UTF-8 JSON. Foundation's JSONSerialization decides validity and decodes every string (escapes,
    /// surrogate pairs); a scan of the validated bytes then recovers what it drops: the order of object keys
    /// and each number's text, read with `Int(_:)` (no fraction or exponent) or `Double(_:)` so numbers come
    /// back exactly as written (JSONSerialization rounds some 17-digit doubles through Decimal on Linux).
    public static func parse(_ bytes: [UInt8]) throws -> JSONValue {
        var body = bytes[...]
        if body.starts(with: [0xEF, 0xBB, 0xBF]) { body = body.dropFirst(3) }
        // JSONSerialization also reads UTF-16 and UTF-32; files here are UTF-8, where JSON never holds a NUL byte.
        guard !body.contains(0) else { throw ParseFailure(description: "not UTF-8 JSON (holds a NUL byte)") }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed])
        } catch {
            let reason = (error as NSError).userInfo["NSDebugDescription"] as? String ?? "\(error)"
            throw ParseFailure(description: reason)
        }
        var scanner = Scanner(bytes: Array(body))
        let shape = try scanner.value(depth: 0)
        return try convert(object, shape)
    }

    /// What the scan records of a value: its number text, or its array items and object keys in order.
    private indirect enum Shape {
        case other
        case number(String)
        case array([Shape])
        case object([(key: String, shape: Shape)])
    }

    private static func convert(_ object: Any, _ shape: Shape) throws -> JSONValue {
        func mismatch() -> ParseFailure { ParseFailure(description: "the scan disagrees with JSONSerialization") }
        switch shape {
        case .number(let text):
            guard object is NSNumber else { throw mismatch() }
            if !text.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }), let i = Int(text) { return .int(i) }
            guard let d = Double(text), d.isFinite else {
                throw ParseFailure(description: "number \(text) is not a finite double")
            }
            return .number(d)
        case .other:
            if object is NSNull { return .null }
            if let s = object as? String { return .string(s) }
            if let b = object as? Bool { return .bool(b) }
            throw mismatch()
        case .array(let shapes):
            guard let items = object as? [Any], items.count == shapes.count else { throw mismatch() }
            return .array(try zip(items, shapes).map { try convert($0, $1) })
        case .object(let pairs):
            guard let dictionary = object as? [String: Any] else { throw mismatch() }
            // A repeated key keeps its first place and (as in JSONSerialization) its last value.
            var keys: [String] = []
            var shapes: [String: Shape] = [:]
            for pair in pairs {
                if shapes[pair.key] == nil { keys.append(pair.key) }
                shapes[pair.key] = pair.shape
            }
            guard keys.count == dictionary.count else { throw mismatch() }
            return .object(
                try keys.map { key in
                    guard let value = dictionary[key], let shape = shapes[key] else { throw mismatch() }
                    return (key, try convert(value, shape))
                })
        }
    }

    /// Walks bytes JSONSerialization has already accepted; it never decides validity and only throws (never
    /// traps) if the two ever disagree.
    private struct Scanner {
        let bytes: [UInt8]
        var at = 0

        func failure() -> ParseFailure { ParseFailure(description: "unexpected byte at \(at)") }

        func peek() -> UInt8? { at < bytes.count ? bytes[at] : nil }

        mutating func skipSpace() {
            while let c = peek(), c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { at += 1 }
        }

        mutating func value(depth: Int) throws -> Shape {
            guard depth < 1024 else { throw ParseFailure(description: "nesting too deep") }
            skipSpace()
            guard let c = peek() else { throw failure() }
            switch c {
            case UInt8(ascii: "["):
                at += 1
                var items: [Shape] = []
                while true {
                    skipSpace()
                    guard let c = peek() else { throw failure() }
                    if c == UInt8(ascii: "]") { at += 1; return .array(items) }
                    if c == UInt8(ascii: ",") { at += 1; continue }
                    items.append(try value(depth: depth + 1))
                }
            case UInt8(ascii: "{"):
                at += 1
                var pairs: [(key: String, shape: Shape)] = []
                while true {
                    skipSpace()
                    guard let c = peek() else { throw failure() }
                    if c == UInt8(ascii: "}") { at += 1; return .object(pairs) }
                    if c == UInt8(ascii: ",") { at += 1; continue }
                    guard c == UInt8(ascii: "\"") else { throw failure() }
                    let key = try string()
                    skipSpace()
                    guard peek() == UInt8(ascii: ":") else { throw failure() }
                    at += 1
                    pairs.append((key, try value(depth: depth + 1)))
                }
            case UInt8(ascii: "\""):
                _ = try rawString()
                return .other
            case UInt8(ascii: "a")...UInt8(ascii: "z"):
                while let c = peek(), c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z") { at += 1 }
                return .other
            default:
                let start = at
                while let c = peek(),
                    (c >= 0x30 && c <= 0x39) || c == UInt8(ascii: "-") || c == UInt8(ascii: "+")
                        || c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E")
                {
                    at += 1
                }
                guard at > start else { throw failure() }
                return .number(String(decoding: bytes[start..<at], as: UTF8.self))
            }
        }

        /// The bytes of the string at `at`, its quotes included; `at` moves past it.
        mutating func rawString() throws -> ArraySlice<UInt8> {
            let start = at
            at += 1
            while let c = peek() {
                at += 1
                if c == UInt8(ascii: "\\") {
                    at += 1
                } else if c == UInt8(ascii: "\"") {
                    return bytes[start..<min(at, bytes.count)]
                }
            }
            throw failure()
        }

        /// A key, decoded by JSONSerialization when it holds escapes.
        mutating func string() throws -> String {
            let raw = try rawString()
            guard raw.contains(UInt8(ascii: "\\")) else {
                return String(decoding: raw.dropFirst().dropLast(), as: UTF8.self)
            }
            guard let key = try? JSONSerialization.jsonObject(with: Data(raw), options: [.fragmentsAllowed]) as? String
            else { throw failure() }
            return key
        }
    }
}
