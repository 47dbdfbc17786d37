import CZstd

/// zstd over byte arrays: shard blocks and (in the wire protocol) tensor payloads.
public enum Zstd {
    public static func compress(_ raw: ArraySlice<UInt8>, level: Int32 = 3) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: ZSTD_compressBound(raw.count))
        let written = raw.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                ZSTD_compress(dst.baseAddress, dst.count, src.baseAddress, src.count, level)
            }
        }
        guard ZSTD_isError(written) == 0 else {
            throw DataError.invalid("zstd compression failed: \(String(cString: ZSTD_getErrorName(written)))")
        }
        return Array(out[0..<written])
    }

    /// Decompresses a frame that must expand to exactly `rawSize` bytes; `what` names it in errors.
    public static func decompress(_ compressed: ArraySlice<UInt8>, rawSize: Int, name: String, what: String) throws
        -> [UInt8]
    {
        var out = [UInt8](repeating: 0, count: rawSize)
        let written = compressed.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                ZSTD_decompress(dst.baseAddress, dst.count, src.baseAddress, src.count)
            }
        }
        guard ZSTD_isError(written) == 0, written == rawSize else {
            let why = ZSTD_isError(written) != 0 ? String(cString: ZSTD_getErrorName(written)) : "\(written) bytes"
            throw DataError.corrupt(path: name, reason: "\(what) does not decompress (\(why))")
        }
        return out
    }
}
