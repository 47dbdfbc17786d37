import Foundation
import PSPCData

/// How a tensor's payload is sent.
public enum TensorCompression: Sendable, Equatable {
    /// zstd when the payload is at least `Pspc_V1_Tensor.compressionThreshold` bytes and compressing
    /// saves at least `Pspc_V1_Tensor.minimumSaving` of it; otherwise as it is.
    case automatic
    /// Always as it is.
    case none
    /// Always zstd, whatever it saves.
    case zstd
}

/// Limits on what a received message may make this side allocate.
public struct WireLimits: Sendable, Equatable {
    /// The largest uncompressed tensor accepted, in bytes. A zstd payload can expand far beyond the frame
    /// that carried it, so this bounds the allocation a peer can cause.
    public var maxTensorBytes: Int

    public init(maxTensorBytes: Int = 1 << 30) {
        self.maxTensorBytes = maxTensorBytes
    }

    public static let `default` = WireLimits()
}

/// Tensors as they travel: `data` holds the elements little-endian, row-major, raw or as one zstd frame
/// whose header states the content size (`raw_size`). Float64 values round-trip bit for bit.
extension Pspc_V1_Tensor {
    /// Payloads below this many bytes are never compressed.
    public static let compressionThreshold = 4096
    /// The fraction of the payload zstd must save to be used.
    public static let minimumSaving = 0.10

    /// A float64 tensor of `shape` (row-major); `values.count` must be the product of `shape`.
    public init(float64 values: [Double], shape: [Int], compression: TensorCompression = .automatic) {
        self.init(
            dtype: .float64, shape: shape, count: values.count, raw: Self.littleEndianBytes(values),
            compression: compression)
    }

    /// A float32 tensor of `shape` (row-major); `values.count` must be the product of `shape`.
    public init(float32 values: [Float], shape: [Int], compression: TensorCompression = .automatic) {
        self.init(
            dtype: .float32, shape: shape, count: values.count, raw: Self.littleEndianBytes(values),
            compression: compression)
    }

    /// A uint8 tensor of `shape` (row-major); `values.count` must be the product of `shape`.
    public init(uint8 values: [UInt8], shape: [Int], compression: TensorCompression = .automatic) {
        self.init(dtype: .uint8, shape: shape, count: values.count, raw: values, compression: compression)
    }

    private init(dtype: Pspc_V1_DType, shape: [Int], count: Int, raw: [UInt8], compression: TensorCompression) {
        precondition(
            shape.allSatisfy { $0 >= 0 } && shape.reduce(1, *) == count,
            "tensor shape \(shape) does not hold \(count) values")
        self.init()
        self.dtype = dtype
        self.shape = shape.map { Int64($0) }
        self.rawSize = Int64(raw.count)
        var payload = raw
        var kind = Pspc_V1_Compression.none
        let worthTrying: Bool
        switch compression {
        case .none: worthTrying = false
        case .zstd: worthTrying = true
        case .automatic: worthTrying = raw.count >= Self.compressionThreshold
        }
        // Compression cannot fail on valid input; were it to, the raw payload is as good an answer.
        if worthTrying, let compressed = try? Zstd.compress(raw[...]),
            compression == .zstd || Double(compressed.count) <= Double(raw.count) * (1 - Self.minimumSaving)
        {
            payload = compressed
            kind = .zstd
        }
        self.data = Data(payload)
        self.compression = kind
    }

    /// The shape as `Int`s after checking dtype, shape, sizes and compression; see `doubleValues`.
    public func checkedShape(field: String, limits: WireLimits = .default) throws -> [Int] {
        try checkedLayout(field: field, limits: limits).shape
    }

    /// The values of a float64 tensor (bit-exact) or a float32 one (widened), after checking that the dtype
    /// and compression are known, no dimension is negative, the size is within `limits`, `raw_size` and
    /// the payload agree with the shape, and a zstd payload expands to exactly `raw_size` bytes.
    public func doubleValues(field: String, limits: WireLimits = .default) throws -> [Double] {
        let layout = try checkedLayout(field: field, limits: limits)
        switch dtype {
        case .float64: return try withPayload(layout, field: field) { Self.loadLittleEndian($0, as: Double.self) }
        case .float32:
            return try withPayload(layout, field: field) { Self.loadLittleEndian($0, as: Float.self).map(Double.init) }
        default:
            throw WireError.invalidTensor("\(field) is \(dtype), expected float64 or float32")
        }
    }

    /// The values of a float32 tensor, with the checks of `doubleValues`.
    public func floatValues(field: String, limits: WireLimits = .default) throws -> [Float] {
        let layout = try checkedLayout(field: field, limits: limits)
        guard dtype == .float32 else { throw WireError.invalidTensor("\(field) is \(dtype), expected float32") }
        return try withPayload(layout, field: field) { Self.loadLittleEndian($0, as: Float.self) }
    }

    /// The values of a uint8 tensor, with the checks of `doubleValues`.
    public func uint8Values(field: String, limits: WireLimits = .default) throws -> [UInt8] {
        let layout = try checkedLayout(field: field, limits: limits)
        guard dtype == .uint8 else { throw WireError.invalidTensor("\(field) is \(dtype), expected uint8") }
        return try withPayload(layout, field: field) { Array($0) }
    }

    // MARK: - Implementation details

    private struct Layout {
        var shape: [Int]
        var byteCount: Int
    }

    private func checkedLayout(field: String, limits: WireLimits) throws -> Layout {
        let elementSize: Int
        switch dtype {
        case .float64: elementSize = 8
        case .float32: elementSize = 4
        case .uint8: elementSize = 1
        case .unspecified, .UNRECOGNIZED:
            throw WireError.unknownEnumValue(field: "\(field).dtype", value: dtype.rawValue)
        }
        switch compression {
        case .none, .zstd: break
        case .unspecified, .UNRECOGNIZED:
            throw WireError.unknownEnumValue(field: "\(field).compression", value: compression.rawValue)
        }
        // Every dimension, and the product of the non-zero ones, must fit the limit: an empty tensor
        // of absurd trailing dimensions would otherwise overflow whoever multiplies them later.
        var nonZeroBytes = elementSize
        var isEmpty = false
        for (axis, dimension) in shape.enumerated() {
            guard dimension >= 0 else {
                throw WireError.invalidTensor(
                    "\(field) has a negative dimension \(dimension) (axis \(axis) of \(shape))")
            }
            if dimension == 0 {
                isEmpty = true
                continue
            }
            let (product, overflow) = nonZeroBytes.multipliedReportingOverflow(by: Int(dimension))
            guard !overflow, product <= limits.maxTensorBytes else {
                throw WireError.invalidTensor(
                    "\(field) of shape \(shape) exceeds the limit of \(limits.maxTensorBytes) bytes")
            }
            nonZeroBytes = product
        }
        let byteCount = isEmpty ? 0 : nonZeroBytes
        guard rawSize == Int64(byteCount) else {
            throw WireError.invalidTensor(
                "\(field) states raw_size \(rawSize), but shape \(shape) of \(dtype) takes \(byteCount) bytes")
        }
        return Layout(shape: shape.map { Int($0) }, byteCount: byteCount)
    }

    /// Runs `body` over the uncompressed payload.
    private func withPayload<T>(_ layout: Layout, field: String, _ body: (UnsafeRawBufferPointer) -> T) throws -> T {
        switch compression {
        case .zstd:
            let stated = data.withUnsafeBytes { Self.zstdContentSize($0) }
            guard let stated, stated == UInt64(layout.byteCount) else {
                throw WireError.invalidTensor(
                    "\(field) is not one zstd frame stating its content size of \(layout.byteCount) bytes")
            }
            let raw: [UInt8]
            do {
                raw = try Zstd.decompress([UInt8](data)[...], rawSize: layout.byteCount, name: field, what: "tensor")
            } catch {
                throw WireError.invalidTensor("\(field) does not decompress to \(layout.byteCount) bytes")
            }
            return raw.withUnsafeBytes(body)
        default:
            guard data.count == layout.byteCount else {
                throw WireError.invalidTensor(
                    "\(field) carries \(data.count) bytes, its shape needs \(layout.byteCount)")
            }
            return data.withUnsafeBytes(body)
        }
    }

    /// The Frame_Content_Size of a zstd frame header (RFC 8878 section 3.1.1.1), nil when the bytes do not
    /// start a zstd frame or its header leaves the size out.
    static func zstdContentSize(_ bytes: UnsafeRawBufferPointer) -> UInt64? {
        guard bytes.count >= 6, bytes[0] == 0x28, bytes[1] == 0xB5, bytes[2] == 0x2F, bytes[3] == 0xFD else {
            return nil
        }
        let descriptor = bytes[4]
        guard descriptor & 0x08 == 0 else { return nil }  // reserved bit
        let singleSegment = descriptor & 0x20 != 0
        let dictionaryIDSize = [0, 1, 2, 4][Int(descriptor & 0x03)]
        let contentSizeSize = [singleSegment ? 1 : 0, 2, 4, 8][Int(descriptor >> 6)]
        let start = 5 + (singleSegment ? 0 : 1) + dictionaryIDSize
        guard contentSizeSize > 0, bytes.count >= start + contentSizeSize else { return nil }
        var value: UInt64 = 0
        for i in 0..<contentSizeSize { value |= UInt64(bytes[start + i]) << (8 * i) }
        return contentSizeSize == 2 ? value + 256 : value
    }

    static func littleEndianBytes<T: BinaryFloatingPoint>(_ values: [T]) -> [UInt8] {
        #if _endian(little)
            return values.withUnsafeBytes { Array($0) }
        #else
            var out: [UInt8] = []
            out.reserveCapacity(values.count * MemoryLayout<T>.size)
            for value in values {
                switch value {
                case let d as Double: withUnsafeBytes(of: d.bitPattern.littleEndian) { out.append(contentsOf: $0) }
                case let f as Float: withUnsafeBytes(of: f.bitPattern.littleEndian) { out.append(contentsOf: $0) }
                default: preconditionFailure("unsupported element type")
                }
            }
            return out
        #endif
    }

    static func loadLittleEndian<T: BinaryFloatingPoint>(_ bytes: UnsafeRawBufferPointer, as: T.Type) -> [T] {
        let count = bytes.count / MemoryLayout<T>.size
        #if _endian(little)
            return [T](unsafeUninitializedCapacity: count) { buffer, initialized in
                if count > 0 {
                    UnsafeMutableRawBufferPointer(buffer).copyMemory(
                        from: UnsafeRawBufferPointer(rebasing: bytes[0..<(count * MemoryLayout<T>.size)]))
                }
                initialized = count
            }
        #else
            return (0..<count).map { i -> T in
                if T.self == Double.self {
                    let bits = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))
                    return Double(bitPattern: bits) as! T
                }
                let bits = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))
                return Float(bitPattern: bits) as! T
            }
        #endif
    }
}
