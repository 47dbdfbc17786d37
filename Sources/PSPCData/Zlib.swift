import CZlib
import Foundation

/// zlib's inflate and deflate over byte arrays: gzip (IDX files), raw deflate (zip entries) and zlib
/// streams (PNG). `name` labels errors.
public enum Zlib {
    public enum Container: Sendable {
        /// RFC 1952 gzip (window bits 16 + 15).
        case gzip
        /// RFC 1950 zlib stream, as in PNG IDAT.
        case zlib
        /// RFC 1951 raw deflate, as in zip entries.
        case raw

        var windowBits: Int32 {
            switch self {
            case .gzip: return 16 + MAX_WBITS
            case .zlib: return MAX_WBITS
            case .raw: return -MAX_WBITS
            }
        }
    }

    /// Inflates `input` completely. `expectedSize`, when known, sizes the output and is checked.
    public static func inflate(_ input: [UInt8], container: Container, expectedSize: Int? = nil, name: String) throws
        -> [UInt8]
    {
        var stream = z_stream()
        guard inflateInit2_(&stream, container.windowBits, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK
        else { throw DataError.io(path: name, reason: "zlib inflateInit failed") }
        defer { inflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: max(expectedSize ?? input.count * 4, 1024))
        var produced = 0
        var status: Int32 = Z_OK
        try input.withUnsafeBufferPointer { inBuffer in
            stream.next_in = UnsafeMutablePointer(mutating: inBuffer.baseAddress)
            stream.avail_in = UInt32(inBuffer.count)
            while true {
                if produced == output.count { output += [UInt8](repeating: 0, count: output.count) }
                status = output.withUnsafeMutableBufferPointer { outBuffer in
                    stream.next_out = outBuffer.baseAddress! + produced
                    let room = min(outBuffer.count - produced, Int(UInt32.max))
                    stream.avail_out = UInt32(room)
                    let result = CZlib.inflate(&stream, Z_NO_FLUSH)
                    produced += room - Int(stream.avail_out)
                    return result
                }
                if status == Z_STREAM_END { break }
                if status == Z_BUF_ERROR && stream.avail_in == 0 {
                    throw DataError.corrupt(path: name, reason: "compressed stream is truncated")
                }
                if status != Z_OK && status != Z_BUF_ERROR {
                    let message = stream.msg.map { String(cString: $0) } ?? "error \(status)"
                    throw DataError.corrupt(path: name, reason: "inflate failed: \(message)")
                }
            }
        }
        if let expectedSize, produced != expectedSize {
            throw DataError.corrupt(path: name, reason: "inflated to \(produced) bytes, expected \(expectedSize)")
        }
        return Array(output[0..<produced])
    }

    /// Deflates `input` into a zlib stream (PNG IDAT) or gzip member.
    public static func deflate(_ input: [UInt8], container: Container = .zlib, level: Int32 = 6) throws -> [UInt8] {
        var stream = z_stream()
        guard
            deflateInit2_(
                &stream, level, Z_DEFLATED, container.windowBits, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION,
                Int32(MemoryLayout<z_stream>.size)) == Z_OK
        else { throw DataError.invalid("zlib deflateInit failed") }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(input.count))) + 64)
        let written: Int = input.withUnsafeBufferPointer { inBuffer in
            output.withUnsafeMutableBufferPointer { outBuffer in
                stream.next_in = UnsafeMutablePointer(mutating: inBuffer.baseAddress)
                stream.avail_in = UInt32(inBuffer.count)
                stream.next_out = outBuffer.baseAddress
                stream.avail_out = UInt32(outBuffer.count)
                _ = CZlib.deflate(&stream, Z_FINISH)
                return outBuffer.count - Int(stream.avail_out)
            }
        }
        return Array(output[0..<written])
    }

    /// CRC-32 (the zip and PNG checksum).
    public static func crc32(_ bytes: [UInt8], initial: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBufferPointer { UInt32(CZlib.crc32(UInt(initial), $0.baseAddress, UInt32($0.count))) }
    }

    /// CRC-32 of a slice without copying it.
    public static func crc32(_ bytes: ArraySlice<UInt8>, initial: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBufferPointer { UInt32(CZlib.crc32(UInt(initial), $0.baseAddress, UInt32($0.count))) }
    }
}
