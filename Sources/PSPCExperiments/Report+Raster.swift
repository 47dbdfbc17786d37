import Foundation
import PSPCData

extension Report {
    /// An 8-bit RGB picture assembled from image tiles (rows of samples, heatmap grids) and written as PNG.
    /// Tiles are enlarged by whole factors with nearest-neighbour sampling, so pixels stay sharp.
    struct Raster {
        let width: Int
        let height: Int
        /// `[height, width, 3]` row-major.
        var pixels: [UInt8]

        init(width: Int, height: Int, gray: UInt8 = 255) {
            self.width = max(width, 1)
            self.height = max(height, 1)
            self.pixels = [UInt8](repeating: gray, count: self.width * self.height * 3)
        }

        func png() throws -> [UInt8] { try PNG.encode(pixels: pixels, width: width, height: height, channels: 3) }

        /// Copies `tile` with its top left corner at (x, y); parts outside are cut off.
        mutating func draw(_ tile: Raster, x: Int, y: Int) {
            for row in 0..<tile.height where y + row >= 0 && y + row < height {
                for column in 0..<tile.width where x + column >= 0 && x + column < width {
                    let to = ((y + row) * width + x + column) * 3
                    let from = (row * tile.width + column) * 3
                    pixels[to] = tile.pixels[from]
                    pixels[to + 1] = tile.pixels[from + 1]
                    pixels[to + 2] = tile.pixels[from + 2]
                }
            }
        }

        mutating func set(x: Int, y: Int, _ rgb: (UInt8, UInt8, UInt8)) {
            guard x >= 0, x < width, y >= 0, y < height else { return }
            let at = (y * width + x) * 3
            pixels[at] = rgb.0
            pixels[at + 1] = rgb.1
            pixels[at + 2] = rgb.2
        }

        /// Tiles left to right with `gap` white pixels between and around them.
        static func row(_ tiles: [Raster], gap: Int = 2) -> Raster {
            let height = (tiles.map(\.height).max() ?? 0) + 2 * gap
            let width = tiles.reduce(gap) { $0 + $1.width + gap }
            var out = Raster(width: width, height: height)
            var x = gap
            for tile in tiles {
                out.draw(tile, x: x, y: gap)
                x += tile.width + gap
            }
            return out
        }

        /// Tiles in rows (`grid[row][column]`), `gap` pixels apart.
        static func grid(_ grid: [[Raster]], gap: Int = 4) -> Raster {
            let width = grid.map { $0.reduce(gap) { $0 + $1.width + gap } }.max() ?? 2 * gap
            let height = grid.reduce(gap) { $0 + ($1.map(\.height).max() ?? 0) + gap }
            var out = Raster(width: width, height: height)
            var y = gap
            for tiles in grid {
                var x = gap
                for tile in tiles {
                    out.draw(tile, x: x, y: y)
                    x += tile.width + gap
                }
                y += (tiles.map(\.height).max() ?? 0) + gap
            }
            return out
        }

        /// Image `index` of `[N, C, H, W]` data-unit values ([-1, 1], clipped), enlarged `scale` times.
        static func image(_ values: [Double], shape: [Int], index: Int, scale: Int) -> Raster {
            let (channels, h, w) = (shape[1], shape[2], shape[3])
            let plane = h * w
            let base = index * channels * plane
            var out = Raster(width: w * scale, height: h * scale)
            for y in 0..<h {
                for x in 0..<w {
                    let rgb = (0..<3).map { c in
                        PNG.quantize([values[base + min(c, channels - 1) * plane + y * w + x]])[0]
                    }
                    out.fill(x: x * scale, y: y * scale, size: scale, (rgb[0], rgb[1], rgb[2]))
                }
            }
            return out
        }

        /// An `h x w` map (row-major) divided by its own maximum and coloured with viridis, enlarged `scale`
        /// times; the pixel `mark` (y, x) gets a red outline so the map's output pixel is visible.
        static func heatmap(_ map: ArraySlice<Double>, h: Int, w: Int, scale: Int, mark: (Int, Int)?) -> Raster {
            let peak = map.filter(\.isFinite).max() ?? 0
            var out = Raster(width: w * scale, height: h * scale)
            for (offset, value) in map.enumerated() {
                let fraction = peak > 0 && value.isFinite ? max(0, value) / peak : 0
                out.fill(x: (offset % w) * scale, y: (offset / w) * scale, size: scale, viridis(fraction))
            }
            if let (my, mx) = mark, scale >= 3 {
                let red: (UInt8, UInt8, UInt8) = (255, 40, 40)
                for i in 0..<scale {
                    out.set(x: mx * scale + i, y: my * scale, red)
                    out.set(x: mx * scale + i, y: my * scale + scale - 1, red)
                    out.set(x: mx * scale, y: my * scale + i, red)
                    out.set(x: mx * scale + scale - 1, y: my * scale + i, red)
                }
            }
            return out
        }

        private mutating func fill(x: Int, y: Int, size: Int, _ rgb: (UInt8, UInt8, UInt8)) {
            for dy in 0..<size {
                for dx in 0..<size { set(x: x + dx, y: y + dy, rgb) }
            }
        }

        /// The viridis colour map at `fraction` in [0, 1] (9 stops, linear between them).
        static func viridis(_ fraction: Double) -> (UInt8, UInt8, UInt8) {
            let stops: [(Double, Double, Double)] = [
                (68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141), (39, 173, 129),
                (92, 200, 99), (170, 220, 50), (253, 231, 37),
            ]
            let f = min(max(fraction, 0), 1) * Double(stops.count - 1)
            let i = min(Int(f), stops.count - 2)
            let u = f - Double(i)
            let a = stops[i], b = stops[i + 1]
            func channel(_ p: Double, _ q: Double) -> UInt8 { UInt8((p + (q - p) * u).rounded()) }
            return (channel(a.0, b.0), channel(a.1, b.1), channel(a.2, b.2))
        }
    }
}
