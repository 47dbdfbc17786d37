/// 8-bit PNG encoding and decoding over zlib: reads the images in EDM dataset zips and writes
/// sample grids, without a dependency on libpng.
///
/// ```
///  signature  89 50 4E 47 0D 0A 1A 0A
///  chunk      +-------------+-----------+----------------+---------------------------+
///             | length u32BE| type (4)  | data (length)  | CRC-32 u32BE of type+data |
///             +-------------+-----------+----------------+---------------------------+
///  IHDR first (width, height u32BE, depth, colour type, compression, filter, interlace),
///  PLTE/tRNS for palettes, IDAT(s) = one zlib stream of rows `filter byte + row bytes`, IEND last.
/// ```
/// Decoding supports bit depth 8 with colour types 0 (gray), 2 (RGB), 3 (palette), 4 (gray+alpha)
/// and 6 (RGBA), all five row filters, no interlace; everything else is reported as unsupported.
public enum PNG {
    private static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
    /// Largest decoded image (filtered rows) accepted; checked before anything is allocated.
    private static let maximumRawBytes = 1 << 30

    /// PNG bytes of an 8-bit image. `pixels` is interleaved `[height, width, channels]` row-major;
    /// `channels` is 1 (gray), 3 (RGB) or 4 (RGBA). Each row gets the filter that minimises the sum of
    /// absolute filtered values (libpng's heuristic), which compresses images well.
    public static func encode(pixels: [UInt8], width: Int, height: Int, channels: Int) throws -> [UInt8] {
        let colourType: UInt8
        switch channels {
        case 1: colourType = 0
        case 3: colourType = 2
        case 4: colourType = 6
        default: throw DataError.invalid("PNG encode: \(channels) channels (expected 1, 3 or 4)")
        }
        guard width > 0, height > 0, width <= 0x7FFF_FFFF, height <= 0x7FFF_FFFF else {
            throw DataError.invalid("PNG encode: image size \(width)x\(height) is not positive")
        }
        let rowBytes = width * channels
        guard pixels.count == height * rowBytes else {
            throw DataError.invalid(
                "PNG encode: \(pixels.count) bytes do not hold \(height)x\(width)x\(channels) pixels")
        }
        var raw = [UInt8](repeating: 0, count: height * (rowBytes + 1))
        var candidate = [UInt8](repeating: 0, count: rowBytes)
        for y in 0..<height {
            let line = pixels[(y * rowBytes)..<((y + 1) * rowBytes)]
            let previous = y > 0 ? pixels[((y - 1) * rowBytes)..<(y * rowBytes)] : nil
            var bestFilter: UInt8 = 0
            var bestScore = Int.max
            for filter: UInt8 in 0...4 {
                applyFilter(filter, line: line, previous: previous, bpp: channels, into: &candidate)
                let score = candidate.reduce(0) { $0 + abs(Int(Int8(bitPattern: $1))) }
                if score < bestScore {
                    bestScore = score
                    bestFilter = filter
                }
            }
            applyFilter(bestFilter, line: line, previous: previous, bpp: channels, into: &candidate)
            let start = y * (rowBytes + 1)
            raw[start] = bestFilter
            raw.replaceSubrange((start + 1)..<(start + 1 + rowBytes), with: candidate)
        }
        var header: [UInt8] = []
        appendBigEndian(UInt32(width), to: &header)
        appendBigEndian(UInt32(height), to: &header)
        header += [8, colourType, 0, 0, 0]
        var out = signature
        appendChunk("IHDR", header, to: &out)
        appendChunk("IDAT", try Zlib.deflate(raw, container: .zlib, level: 6), to: &out)
        appendChunk("IEND", [], to: &out)
        return out
    }

    /// Decodes a PNG into interleaved `[height, width, channels]` 8-bit pixels. Channels: 1 gray,
    /// 2 gray+alpha, 3 RGB (also palette images), 4 RGBA (also palette images with a tRNS chunk).
    /// A tRNS colour key on gray or RGB images is ignored. `name` labels errors.
    public static func decode(_ bytes: [UInt8], name: String) throws -> (
        pixels: [UInt8], width: Int, height: Int, channels: Int
    ) {
        guard bytes.count >= 8, Array(bytes[0..<8]) == signature else {
            throw DataError.corrupt(path: name, reason: "not a PNG file (bad signature)")
        }
        var header: Header?
        var palette: [UInt8] = []
        var transparency: [UInt8]?
        var idat: [UInt8] = []
        var sawIDAT = false
        var sawEnd = false
        var position = 8
        while position < bytes.count {
            guard bytes.count - position >= 12 else {
                throw DataError.corrupt(path: name, reason: "truncated chunk header at offset \(position)")
            }
            let length = Int(readBigEndian(bytes, at: position))
            let typeBytes = bytes[(position + 4)..<(position + 8)]
            guard typeBytes.allSatisfy({ (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) }) else {
                throw DataError.corrupt(path: name, reason: "invalid chunk type at offset \(position)")
            }
            let type = String(decoding: typeBytes, as: UTF8.self)
            guard length <= 0x7FFF_FFFF, bytes.count - position - 12 >= length else {
                throw DataError.corrupt(
                    path: name,
                    reason: "chunk \(type) at offset \(position) needs \(length) bytes, "
                        + "\(max(0, bytes.count - position - 12)) left (truncated)")
            }
            let dataStart = position + 8
            let data = bytes[dataStart..<(dataStart + length)]
            let storedCRC = readBigEndian(bytes, at: dataStart + length)
            let computedCRC = Zlib.crc32(bytes[(position + 4)..<(dataStart + length)])
            guard storedCRC == computedCRC else {
                throw DataError.corrupt(path: name, reason: "CRC mismatch in chunk \(type) at offset \(position)")
            }
            position = dataStart + length + 4
            if header == nil && type != "IHDR" {
                throw DataError.corrupt(path: name, reason: "missing IHDR (first chunk is \(type))")
            }
            switch type {
            case "IHDR":
                guard header == nil else { throw DataError.corrupt(path: name, reason: "second IHDR chunk") }
                header = try Header(data, name: name)
            case "PLTE":
                guard length % 3 == 0, length > 0, length <= 768 else {
                    throw DataError.corrupt(path: name, reason: "PLTE length \(length) is not 3 x 1...256")
                }
                palette = Array(data)
            case "tRNS":
                transparency = Array(data)
            case "IDAT":
                sawIDAT = true
                idat += data
            case "IEND":
                sawEnd = true
            default:
                // Bit 5 of the first letter clear (uppercase) marks a chunk a decoder must understand.
                if typeBytes.first! & 0x20 == 0 {
                    throw DataError.unsupported(path: name, reason: "critical chunk \(type)")
                }
            }
            if sawEnd { break }
        }
        guard let header else { throw DataError.corrupt(path: name, reason: "missing IHDR (no chunks)") }
        guard sawIDAT else { throw DataError.corrupt(path: name, reason: "missing IDAT (no image data)") }
        guard sawEnd else { throw DataError.corrupt(path: name, reason: "missing IEND (file truncated)") }

        let samples = header.samplesPerPixel
        let rowBytes = header.width * samples  // cannot overflow: width < 2^31, samples <= 4
        let (rawBytes, overflow) = header.height.multipliedReportingOverflow(by: rowBytes + 1)
        guard !overflow, rawBytes <= maximumRawBytes else {
            throw DataError.unsupported(
                path: name, reason: "image \(header.width)x\(header.height) is larger than \(maximumRawBytes) bytes")
        }
        let raw = try Zlib.inflate(idat, container: .zlib, expectedSize: rawBytes, name: name)
        let filtered = try unfilter(raw, rowBytes: rowBytes, height: header.height, bpp: samples, name: name)

        guard header.colourType == 3 else {
            return (filtered, header.width, header.height, samples)
        }
        guard !palette.isEmpty else {
            throw DataError.corrupt(path: name, reason: "palette image without a PLTE chunk")
        }
        let entries = palette.count / 3
        let outChannels = transparency == nil ? 3 : 4
        var alpha = [UInt8](repeating: 255, count: 256)
        for (index, value) in (transparency ?? []).prefix(256).enumerated() { alpha[index] = value }
        var pixels = [UInt8](repeating: 0, count: filtered.count * outChannels)
        for (index, entry) in filtered.enumerated() {
            let slot = Int(entry)
            guard slot < entries else {
                throw DataError.corrupt(path: name, reason: "palette index \(slot) outside a \(entries)-entry PLTE")
            }
            let out = index * outChannels
            pixels[out] = palette[3 * slot]
            pixels[out + 1] = palette[3 * slot + 1]
            pixels[out + 2] = palette[3 * slot + 2]
            if outChannels == 4 { pixels[out + 3] = alpha[slot] }
        }
        return (pixels, header.width, header.height, outChannels)
    }

    /// PNG bytes of `count` images laid out in a grid of `columns` columns with `padding` white (255)
    /// pixels around and between them (as torchvision's `make_grid`). `images` is uint8
    /// `[count, channels, height, width]` row-major; channels 1, 3 or 4.
    public static func grid(
        images: [UInt8], count: Int, channels: Int, height: Int, width: Int, columns: Int, padding: Int = 2
    ) throws -> [UInt8] {
        guard count > 0, height > 0, width > 0, columns > 0, padding >= 0 else {
            throw DataError.invalid(
                "PNG grid: count \(count), size \(height)x\(width), columns \(columns) and padding \(padding) "
                    + "must be positive (padding may be 0)")
        }
        guard [1, 3, 4].contains(channels) else {
            throw DataError.invalid("PNG grid: \(channels) channels (expected 1, 3 or 4)")
        }
        let plane = height * width
        guard images.count == count * channels * plane else {
            throw DataError.invalid(
                "PNG grid: \(images.count) bytes do not hold \(count) images of \(channels)x\(height)x\(width)")
        }
        let usedColumns = min(columns, count)
        let rows = (count + columns - 1) / columns
        let gridWidth = usedColumns * (width + padding) + padding
        let gridHeight = rows * (height + padding) + padding
        var pixels = [UInt8](repeating: 255, count: gridWidth * gridHeight * channels)
        for image in 0..<count {
            let top = padding + (image / columns) * (height + padding)
            let left = padding + (image % columns) * (width + padding)
            let base = image * channels * plane
            for y in 0..<height {
                let outRow = ((top + y) * gridWidth + left) * channels
                for x in 0..<width {
                    for c in 0..<channels {
                        pixels[outRow + x * channels + c] = images[base + c * plane + y * width + x]
                    }
                }
            }
        }
        return try encode(pixels: pixels, width: gridWidth, height: gridHeight, channels: channels)
    }

    /// Model-space values in [-1, 1] to uint8: `round((x + 1) * 127.5)` clamped to 0...255 (NaN -> 0).
    public static func quantize(_ values: [Double]) -> [UInt8] {
        values.map { value in
            let scaled = ((value + 1) * 127.5).rounded()
            guard !scaled.isNaN else { return 0 }
            return UInt8(min(max(scaled, 0), 255))
        }
    }

    // MARK: - Implementation details

    private struct Header {
        var width: Int
        var height: Int
        var colourType: UInt8
        var samplesPerPixel: Int

        init(_ data: ArraySlice<UInt8>, name: String) throws {
            guard data.count == 13 else {
                throw DataError.corrupt(path: name, reason: "IHDR has \(data.count) bytes, expected 13")
            }
            let bytes = Array(data)
            width = Int(PNG.readBigEndian(bytes, at: 0))
            height = Int(PNG.readBigEndian(bytes, at: 4))
            let depth = bytes[8]
            colourType = bytes[9]
            guard width > 0, height > 0, width <= 0x7FFF_FFFF, height <= 0x7FFF_FFFF else {
                throw DataError.corrupt(path: name, reason: "image size \(width)x\(height) is invalid")
            }
            let allowedDepths: [UInt8]
            switch colourType {
            case 0: (samplesPerPixel, allowedDepths) = (1, [1, 2, 4, 8, 16])
            case 2: (samplesPerPixel, allowedDepths) = (3, [8, 16])
            case 3: (samplesPerPixel, allowedDepths) = (1, [1, 2, 4, 8])
            case 4: (samplesPerPixel, allowedDepths) = (2, [8, 16])
            case 6: (samplesPerPixel, allowedDepths) = (4, [8, 16])
            default: throw DataError.corrupt(path: name, reason: "invalid colour type \(colourType)")
            }
            guard allowedDepths.contains(depth) else {
                throw DataError.corrupt(
                    path: name, reason: "bit depth \(depth) is invalid for colour type \(colourType)")
            }
            guard bytes[10] == 0, bytes[11] == 0, bytes[12] <= 1 else {
                throw DataError.corrupt(
                    path: name,
                    reason: "invalid compression/filter/interlace method \(bytes[10])/\(bytes[11])/\(bytes[12])")
            }
            guard depth == 8 else {
                throw DataError.unsupported(path: name, reason: "bit depth \(depth) (pspc reads 8-bit PNGs)")
            }
            guard bytes[12] == 0 else {
                throw DataError.unsupported(path: name, reason: "Adam7 interlaced PNG")
            }
        }
    }

    /// Undoes the per-row filters of `raw` (`height` rows of `filter byte + rowBytes`).
    private static func unfilter(_ raw: [UInt8], rowBytes: Int, height: Int, bpp: Int, name: String) throws
        -> [UInt8]
    {
        var out = [UInt8](repeating: 0, count: height * rowBytes)
        try raw.withUnsafeBufferPointer { source in
            try out.withUnsafeMutableBufferPointer { target in
                for y in 0..<height {
                    let filter = source[y * (rowBytes + 1)]
                    let line = source.baseAddress! + y * (rowBytes + 1) + 1
                    let current = target.baseAddress! + y * rowBytes
                    let previous: UnsafeMutablePointer<UInt8>? = y > 0 ? current - rowBytes : nil
                    switch filter {
                    case 0:
                        current.update(from: line, count: rowBytes)
                    case 1:
                        for i in 0..<rowBytes {
                            current[i] = line[i] &+ (i >= bpp ? current[i - bpp] : 0)
                        }
                    case 2:
                        for i in 0..<rowBytes { current[i] = line[i] &+ (previous?[i] ?? 0) }
                    case 3:
                        for i in 0..<rowBytes {
                            let left = i >= bpp ? Int(current[i - bpp]) : 0
                            let up = Int(previous?[i] ?? 0)
                            current[i] = line[i] &+ UInt8((left + up) / 2)
                        }
                    case 4:
                        for i in 0..<rowBytes {
                            let left = i >= bpp ? current[i - bpp] : 0
                            let up = previous?[i] ?? 0
                            let upLeft = i >= bpp ? (previous?[i - bpp] ?? 0) : 0
                            current[i] = line[i] &+ paeth(left, up, upLeft)
                        }
                    default:
                        throw DataError.corrupt(path: name, reason: "row \(y) has invalid filter type \(filter)")
                    }
                }
            }
        }
        return out
    }

    /// Filters one row (`line`, with the row above as `previous`) with `filter` into `out`.
    private static func applyFilter(
        _ filter: UInt8, line: ArraySlice<UInt8>, previous: ArraySlice<UInt8>?, bpp: Int, into out: inout [UInt8]
    ) {
        let lineStart = line.startIndex
        let previousStart = previous?.startIndex ?? 0
        for i in 0..<line.count {
            let x = line[lineStart + i]
            let left = i >= bpp ? line[lineStart + i - bpp] : 0
            let up = previous.map { $0[previousStart + i] } ?? 0
            let upLeft = i >= bpp ? (previous.map { $0[previousStart + i - bpp] } ?? 0) : 0
            switch filter {
            case 0: out[i] = x
            case 1: out[i] = x &- left
            case 2: out[i] = x &- up
            case 3: out[i] = x &- UInt8((Int(left) + Int(up)) / 2)
            default: out[i] = x &- paeth(left, up, upLeft)
            }
        }
    }

    /// The Paeth predictor (PNG spec 9.4): whichever of left, up, up-left is nearest `left + up - upLeft`.
    private static func paeth(_ left: UInt8, _ up: UInt8, _ upLeft: UInt8) -> UInt8 {
        let estimate = Int(left) + Int(up) - Int(upLeft)
        let distanceLeft = abs(estimate - Int(left))
        let distanceUp = abs(estimate - Int(up))
        let distanceUpLeft = abs(estimate - Int(upLeft))
        if distanceLeft <= distanceUp && distanceLeft <= distanceUpLeft { return left }
        return distanceUp <= distanceUpLeft ? up : upLeft
    }

    private static func appendChunk(_ type: String, _ data: [UInt8], to out: inout [UInt8]) {
        let typeAndData = Array(type.utf8) + data
        appendBigEndian(UInt32(data.count), to: &out)
        out += typeAndData
        appendBigEndian(Zlib.crc32(typeAndData), to: &out)
    }

    private static func appendBigEndian(_ value: UInt32, to out: inout [UInt8]) {
        out += [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
    }

    /// Big-endian u32 at `offset`; callers have checked that four bytes are there.
    private static func readBigEndian(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 << 8 | UInt32(bytes[offset + $1]) }
    }
}
