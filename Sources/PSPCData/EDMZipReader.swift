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

        var shape: ImageShape?
        var pixels: [UInt8] = []
        for (index, entry) in images.enumerated() {
            let decoded = try PNG.decode(try archive.read(entry), name: "\(path):\(entry.name)")
            // Gray(+alpha) keeps one plane, RGB(A) three; the alpha plane is not part of the data.
            let planes = decoded.channels <= 2 ? 1 : 3
            let entryShape = ImageShape(channels: planes, height: decoded.height, width: decoded.width)
            if let shape {
                guard shape == entryShape else {
                    throw DataError.unsupported(
                        path: path,
                        reason: "entry '\(entry.name)' is \(entryShape) but '\(images[0].name)' is \(shape); "
                            + "all images must share one shape")
                }
            } else {
                shape = entryShape
                pixels.reserveCapacity(images.count * entryShape.dimension)
            }
            // Interleaved HWC -> planar CHW.
            let pixelCount = entryShape.pixelCount
            let base = pixels.count
            pixels += [UInt8](repeating: 0, count: entryShape.dimension)
            for plane in 0..<planes {
                for position in 0..<pixelCount {
                    pixels[base + plane * pixelCount + position] = decoded.pixels[position * decoded.channels + plane]
                }
            }
            progress?(index + 1, images.count)
        }
        return ImageArray(pixels: pixels, count: images.count, shape: shape!)
    }
}
