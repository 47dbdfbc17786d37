import Foundation

/// The values of an `.npy` array, in C order, in one of the element types pspc reads and writes.
public enum NPYData: Sendable, Equatable {
    case uint8([UInt8])
    case float32([Float])
    case float64([Double])

    /// Number of values stored.
    public var count: Int {
        switch self {
        case .uint8(let values): return values.count
        case .float32(let values): return values.count
        case .float64(let values): return values.count
        }
    }

    /// The numpy `descr` this element type is written with (little-endian).
    var descr: String {
        switch self {
        case .uint8: return "|u1"
        case .float32: return "<f4"
        case .float64: return "<f8"
        }
    }
}

/// A numpy array as stored in an `.npy` file: its shape and its values in C (row-major) order.
public struct NPYArray: Sendable, Equatable {
    public var shape: [Int]
    public var data: NPYData

    public init(shape: [Int], data: NPYData) {
        self.shape = shape
        self.data = data
    }

    /// Number of values stored (the product of `shape` for a well-formed array; 1 for a scalar).
    public var elementCount: Int { data.count }

    /// Every value as a Double, whatever the stored element type (uint8 images come out as 0...255).
    public func asDoubles() -> [Double] {
        switch data {
        case .uint8(let values): return values.map(Double.init)
        case .float32(let values): return values.map(Double.init)
        case .float64(let values): return values
        }
    }
}

/// Reads and writes numpy's `.npy` format, so arrays move between pspc and Python without pickles.
///
/// ```
///  0      6     7     8          8+L (v1: L is u16 at 8; v2/v3: u32 at 8, data at 12+L)
///  +------+-----+-----+----------+-----------------------------------------+------------
///  |\x93NUMPY|major|minor| len (LE) | {'descr': '<f4', 'fortran_order': False, |  data ...
///  |      |     |     |          |  'shape': (2, 3), }  <spaces> \n        |
///  +------+-----+-----+----------+-----------------------------------------+------------
/// ```
/// Reads versions 1.0, 2.0 and 3.0 with dtypes `|u1`/`<u1`, `<f4`/`>f4`, `<f8`/`>f8` in C order
/// (big-endian values are converted). Writes version 1.0, little-endian, with the header padded so
/// the data starts at a multiple of 64 bytes (what numpy itself writes).
public enum NPY {
    private static let magic: [UInt8] = [0x93] + Array("NUMPY".utf8)
    /// numpy refuses headers above this length too; it bounds the header parser's work.
    private static let maximumHeaderLength = 1 << 20

    public static func read(path: String) throws -> NPYArray {
        try decode(try FileIO.read(path), name: path)
    }

    /// Writes `array` to `path` atomically; a shape that does not match the value count is refused.
    public static func write(_ array: NPYArray, to path: String) throws {
        guard let expected = product(array.shape), expected == array.data.count else {
            throw DataError.invalid(
                "\(path): shape \(array.shape) does not hold \(array.data.count) values; nothing written")
        }
        try FileIO.writeAtomically(encode(array), to: path)
    }

    /// Parses a whole `.npy` file; `name` labels errors.
    public static func decode(_ bytes: [UInt8], name: String) throws -> NPYArray {
        let layout = try Self.layout(bytes, fileSize: bytes.count, name: name)
        let header = layout.header, count = layout.count, dataStart = layout.dataOffset
        let payload = bytes[dataStart...]
        let data: NPYData
        switch header.itemSize {
        case 1:
            data = .uint8(Array(payload))
        case 4:
            data = .float32(
                loadValues(payload, count: count, bigEndian: header.bigEndian) { (bits: UInt32) in
                    Float(bitPattern: bits)
                })
        default:
            data = .float64(
                loadValues(payload, count: count, bigEndian: header.bigEndian) { (bits: UInt64) in
                    Double(bitPattern: bits)
                })
        }
        return NPYArray(shape: header.shape, data: data)
    }

    /// Where an `.npy` file's values are: its header, value count and data offset. `prefix` holds the
    /// file's first bytes (at least its header); `fileSize` is checked against the shape.
    private struct Layout {
        var header: Header
        var count: Int
        var dataOffset: Int
    }

    private static func layout(_ bytes: [UInt8], fileSize: Int, name: String) throws -> Layout {
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else {
            throw DataError.corrupt(path: name, reason: "not an .npy file (missing \\x93NUMPY magic)")
        }
        let major = bytes[6]
        let minor = bytes[7]
        let headerStart: Int
        let headerLength: Int
        switch major {
        case 1:
            headerStart = 10
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
        case 2, 3:
            guard bytes.count >= 12 else {
                throw DataError.corrupt(path: name, reason: "truncated in the header length")
            }
            headerStart = 12
            headerLength = (8..<12).reduce(0) { $0 | Int(bytes[$1]) << (8 * ($1 - 8)) }
        default:
            throw DataError.unsupported(path: name, reason: "npy format version \(major).\(minor)")
        }
        guard headerLength <= maximumHeaderLength else {
            throw DataError.corrupt(path: name, reason: "header length \(headerLength) is implausibly large")
        }
        guard bytes.count >= headerStart + headerLength else {
            throw DataError.corrupt(
                path: name,
                reason: "truncated header: needs \(headerLength) bytes, file has \(fileSize - headerStart)")
        }
        let headerBytes = bytes[headerStart..<(headerStart + headerLength)]
        // Versions 1 and 2 are latin-1, 3 is UTF-8; the keys and values we read are ASCII either way.
        let headerText =
            major == 3
            ? String(decoding: headerBytes, as: UTF8.self)
            : String(headerBytes.map { Character(Unicode.Scalar($0)) })
        let header = try parseHeader(headerText, name: name)

        guard let count = product(header.shape) else {
            throw DataError.corrupt(path: name, reason: "shape \(header.shape) is invalid or too large")
        }
        let dataStart = headerStart + headerLength
        let (byteCount, overflow) = count.multipliedReportingOverflow(by: header.itemSize)
        let available = fileSize - dataStart
        guard !overflow, byteCount == available else {
            let expected = overflow ? "more than \(Int.max)" : "\(byteCount)"
            throw DataError.corrupt(
                path: name,
                reason: "shape \(header.shape) of \(header.descr) needs \(expected) data bytes, file has \(available)"
                    + (available < byteCount || overflow ? " (truncated)" : ""))
        }
        return Layout(header: header, count: count, dataOffset: dataStart)
    }

    /// A uint8 `.npy` file opened for reading rows at offsets: its shape and where its values start,
    /// with the same checks as `read`, but no value read yet.
    public static func openUInt8(path: String) throws -> (shape: [Int], file: ReadableFile, dataOffset: Int) {
        let file = try ReadableFile(path: path)
        let prefix = try file.read(at: 0, count: min(file.size, 12 + maximumHeaderLength))
        let layout = try Self.layout(prefix, fileSize: file.size, name: path)
        guard layout.header.itemSize == 1 else {
            throw DataError.unsupported(path: path, reason: "images must be uint8 arrays (dtype u1)")
        }
        return (layout.header.shape, file, layout.dataOffset)
    }

    /// The header bytes of a version 1.0 (2.0 past 64 KiB) `.npy` file of `shape` and `descr`
    /// ("|u1", "<f4", "<f8"), padded so that the values, written right after, start 64-byte aligned.
    public static func header(shape: [Int], descr: String) -> [UInt8] {
        let shapeText: String
        switch shape.count {
        case 0: shapeText = "()"
        case 1: shapeText = "(\(shape[0]),)"
        default: shapeText = "(" + shape.map(String.init).joined(separator: ", ") + ")"
        }
        var header = Array("{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }".utf8)
        let version: UInt8 = header.count + 65 > 0xFFFF ? 2 : 1
        let preamble = version == 1 ? 10 : 12
        // Pad with spaces and end with a newline so the data starts 64-byte aligned.
        let total = (preamble + header.count + 1 + 63) / 64 * 64
        header += [UInt8](repeating: 0x20, count: total - preamble - header.count - 1) + [0x0A]

        var out = magic + [version, 0]
        let length = header.count
        out +=
            version == 1
            ? [UInt8(length & 0xFF), UInt8(length >> 8)]
            : (0..<4).map { UInt8((length >> (8 * $0)) & 0xFF) }
        return out + header
    }

    /// The `.npy` bytes of `array` (version 1.0, or 2.0 only when the header outgrows 64 KiB).
    /// The caller keeps `shape` consistent with the values; `write` checks it.
    public static func encode(_ array: NPYArray) -> [UInt8] {
        var out = header(shape: array.shape, descr: array.data.descr)
        switch array.data {
        case .uint8(let values):
            out += values
        case .float32(let values):
            out.reserveCapacity(out.count + values.count * 4)
            for value in values { appendLittleEndian(value.bitPattern, to: &out) }
        case .float64(let values):
            out.reserveCapacity(out.count + values.count * 8)
            for value in values { appendLittleEndian(value.bitPattern, to: &out) }
        }
        return out
    }

    // MARK: - Implementation details

    private struct Header {
        var descr: String
        var itemSize: Int
        var bigEndian: Bool
        var shape: [Int]
    }

    private static func parseHeader(_ text: String, name: String) throws -> Header {
        var parser = LiteralParser(scalars: Array(text.unicodeScalars))
        guard let literal = parser.parseTop(), case .dict(let entries) = literal else {
            throw DataError.corrupt(path: name, reason: "header is not a Python dict literal: \(text.prefix(120))")
        }
        let fields = Dictionary(entries, uniquingKeysWith: { _, last in last })
        guard case .string(let descr)? = fields["descr"] else {
            throw DataError.corrupt(path: name, reason: "header has no 'descr' string")
        }
        guard case .bool(let fortranOrder)? = fields["fortran_order"] else {
            throw DataError.corrupt(path: name, reason: "header has no 'fortran_order' boolean")
        }
        guard case .tuple(let dimensions)? = fields["shape"] else {
            throw DataError.corrupt(path: name, reason: "header has no 'shape' tuple")
        }
        var shape: [Int] = []
        for dimension in dimensions {
            guard case .int(let value) = dimension, value >= 0 else {
                throw DataError.corrupt(path: name, reason: "shape entries must be non-negative integers")
            }
            shape.append(value)
        }
        let itemSize: Int
        let bigEndian: Bool
        switch descr {
        case "|u1", "<u1", ">u1", "=u1": (itemSize, bigEndian) = (1, false)
        case "<f4": (itemSize, bigEndian) = (4, false)
        case ">f4": (itemSize, bigEndian) = (4, true)
        case "<f8": (itemSize, bigEndian) = (8, false)
        case ">f8": (itemSize, bigEndian) = (8, true)
        default:
            throw DataError.unsupported(
                path: name, reason: "dtype '\(descr)' (pspc reads |u1, <f4, >f4, <f8 and >f8)")
        }
        if fortranOrder {
            throw DataError.unsupported(
                path: name, reason: "fortran_order arrays (save with np.ascontiguousarray first)")
        }
        return Header(descr: descr, itemSize: itemSize, bigEndian: bigEndian, shape: shape)
    }

    /// Product of the dimensions, nil on overflow. An empty shape is a scalar: one value.
    private static func product(_ shape: [Int]) -> Int? {
        var result = 1
        for dimension in shape {
            guard dimension >= 0 else { return nil }
            let (next, overflow) = result.multipliedReportingOverflow(by: dimension)
            if overflow { return nil }
            result = next
        }
        return result
    }

    private static func loadValues<Bits: FixedWidthInteger, Value>(
        _ payload: ArraySlice<UInt8>, count: Int, bigEndian: Bool, _ make: (Bits) -> Value
    ) -> [Value] {
        let size = MemoryLayout<Bits>.size
        return payload.withUnsafeBytes { raw in
            (0..<count).map { index in
                let bits = raw.loadUnaligned(fromByteOffset: index * size, as: Bits.self)
                return make(bigEndian ? Bits(bigEndian: bits) : Bits(littleEndian: bits))
            }
        }
    }

    public static func appendLittleEndian<Bits: FixedWidthInteger>(_ value: Bits, to out: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) }
    }
}

/// The few Python literals an `.npy` header uses: a dict of strings, booleans, ints and tuples.
private enum PythonLiteral {
    case string(String)
    case int(Int)
    case bool(Bool)
    case tuple([PythonLiteral])
    case dict([(String, PythonLiteral)])
}

/// A recursive-descent parser over the header text; every read is bounds-checked and nesting is
/// limited, so a hostile header yields nil rather than a crash.
private struct LiteralParser {
    let scalars: [Unicode.Scalar]
    var index = 0
    var depth = 0

    init(scalars: [Unicode.Scalar]) { self.scalars = scalars }

    mutating func parseTop() -> PythonLiteral? {
        guard let value = parseValue() else { return nil }
        skipSpace()
        return index == scalars.count ? value : nil
    }

    private mutating func skipSpace() {
        while index < scalars.count, scalars[index].properties.isWhitespace { index += 1 }
    }

    private mutating func parseValue() -> PythonLiteral? {
        skipSpace()
        guard index < scalars.count, depth < 16 else { return nil }
        switch scalars[index] {
        case "{": return parseCollection(close: "}", isDict: true)
        case "(", "[": return parseCollection(close: scalars[index] == "(" ? ")" : "]", isDict: false)
        case "'", "\"": return parseString().map(PythonLiteral.string)
        default: return parseWord()
        }
    }

    private mutating func parseCollection(close: Unicode.Scalar, isDict: Bool) -> PythonLiteral? {
        index += 1
        depth += 1
        defer { depth -= 1 }
        var items: [PythonLiteral] = []
        var pairs: [(String, PythonLiteral)] = []
        while true {
            skipSpace()
            guard index < scalars.count else { return nil }
            if scalars[index] == close {
                index += 1
                return isDict ? .dict(pairs) : .tuple(items)
            }
            if isDict {
                guard case .string(let key)? = parseValue() else { return nil }
                skipSpace()
                guard index < scalars.count, scalars[index] == ":" else { return nil }
                index += 1
                guard let value = parseValue() else { return nil }
                pairs.append((key, value))
            } else {
                guard let value = parseValue() else { return nil }
                items.append(value)
            }
            skipSpace()
            guard index < scalars.count else { return nil }
            if scalars[index] == "," {
                index += 1
            } else if scalars[index] != close {
                return nil
            }
        }
    }

    private mutating func parseString() -> String? {
        let quote = scalars[index]
        index += 1
        var result = String.UnicodeScalarView()
        while index < scalars.count {
            let scalar = scalars[index]
            index += 1
            if scalar == quote { return String(result) }
            if scalar == "\\" {
                guard index < scalars.count else { return nil }
                result.append(scalars[index])
                index += 1
            } else {
                result.append(scalar)
            }
        }
        return nil
    }

    /// `True`, `False` or an integer (Python 2 headers may write `3L`).
    private mutating func parseWord() -> PythonLiteral? {
        let start = index
        while index < scalars.count,
            scalars[index].properties.isAlphabetic || ("0"..."9").contains(scalars[index]) || scalars[index] == "-"
        {
            index += 1
        }
        var word = String(String.UnicodeScalarView(scalars[start..<index]))
        switch word {
        case "True": return .bool(true)
        case "False": return .bool(false)
        default:
            if word.hasSuffix("L") { word.removeLast() }
            return Int(word).map(PythonLiteral.int)
        }
    }
}
