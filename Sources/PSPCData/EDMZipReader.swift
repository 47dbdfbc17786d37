import PSPCCore

/// Reads the zips written by EDM's `dataset_tool.py` (CIFAR-10, FFHQ-64, AFHQ-64 as the paper used):
/// PNG entries such as `00000/img00000000.png` plus a `dataset.json` of labels, which pspc ignores
/// because its denoisers are unconditional.
public enum EDMZipReader {
    /// All `.png` entries sorted by name (dataset_tool's order), as uint8 `[count, C, H, W]` with
    /// C = 1 for gray and 3 for colour: alpha is dropped and palettes are expanded. Every image must
    /// have the first one's shape. `limit` keeps the first N; `progress(done, total)` is called
    /// after each decoded image.
    public static func read(path: String, limit: Int? = nil, progress: ((Int, Int) -> Void)? = nil) throws
        -> ImageArray
    {
        try open(path: path, limit: limit).readAll(progress: progress)
    }

    /// The same images as `read`, decoded one at a time from the file as the stream is read: only the
    /// central directory and the current entry are in memory, whatever the zip's size.
    public static func open(path: String, limit: Int? = nil) throws -> ImageStream {
        if let limit, limit < 1 {
            throw DataError.invalid("\(path): image limit \(limit) must be at least 1")
        }
        let archive = try ZipArchive(path: path)
        var images = archive.entries
            .filter { $0.name.lowercased().hasSuffix(".png") && !$0.name.hasSuffix("/") }
            .sorted { $0.name < $1.name }
        guard !images.isEmpty else {
            throw DataError.invalid("\(path): the zip holds no .png images (is it an EDM dataset zip?)")
        }
        if let limit, images.count > limit { images.removeLast(images.count - limit) }

        // The first image fixes the shape; it is decoded now and handed out first.
        var first: [UInt8]? = []
        let shape = try decode(images[0], of: archive, path: path, into: &first!)
        return ImageStream(shape: shape, count: images.count) { [images] index, buffer in
            if index == 0, let decoded = first {
                buffer += decoded
                first = nil
                return
            }
            let entryShape = try decode(images[index], of: archive, path: path, into: &buffer, expecting: shape)
            guard entryShape == shape else {
                throw DataError.unsupported(
                    path: path,
                    reason: "entry '\(images[index].name)' is \(entryShape) but '\(images[0].name)' is \(shape); "
                        + "all images must share one shape")
            }
        }
    }

    /// Decodes `entry` and appends its planes (planar CHW) to `buffer`, unless its shape is not `expecting`;
    /// returns its shape.
    private static func decode(
        _ entry: ZipArchive.Entry, of archive: ZipArchive, path: String, into buffer: inout [UInt8],
        expecting: ImageShape? = nil
    ) throws -> ImageShape {
        let decoded = try PNG.decode(try archive.read(entry), name: "\(path):\(entry.name)")
        // Gray(+alpha) keeps one plane, RGB(A) three; the alpha plane is not part of the data.
        let planes = decoded.channels <= 2 ? 1 : 3
        let entryShape = ImageShape(channels: planes, height: decoded.height, width: decoded.width)
        if let expecting, expecting != entryShape { return entryShape }
        // Interleaved HWC -> planar CHW.
        let pixelCount = entryShape.pixelCount
        let base = buffer.count
        buffer += repeatElement(0, count: entryShape.dimension)
        for plane in 0..<planes {
            for position in 0..<pixelCount {
                buffer[base + plane * pixelCount + position] = decoded.pixels[position * decoded.channels + plane]
            }
        }
        return entryShape
    }
}
