import Foundation
import NIOPosix
import PSPCCluster
import PSPCCore
import PSPCData
import PSPCTestSupport
import XCTest

/// Heatmaps through a real endpoint process: asked in ranges of output pixels they are bit for bit the
/// one-request maps, and a 64x64 map of a small convolutional network (134 MB of float64, more than a 64 MiB frame) arrives in ranges.
final class NetworkHeatmapTests: XCTestCase {
    override func setUp() {
        // LocalNetwork finds the Python environment and scripts of this checkout.
        for (key, value) in NetworkFixture.environment { setenv(key, value, 1) }
    }

    /// Runs `body` connected to `local`, then closes the connection and stops the endpoint.
    private func withNetwork(_ local: LocalNetwork, _ body: (NetworkDenoiser) async throws -> Void) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let network = try await NetworkDenoiser.connect(to: local.address, token: local.token, group: group)
            do {
                try await body(network)
            } catch {
                network.close()
                throw error
            }
            network.close()
        } catch {
            local.stop()
            try? await group.shutdownGracefully()
            throw error
        }
        local.stop()
        try? await group.shutdownGracefully()
    }

    func testHeatmapInRangesEqualsOneRequestBitForBit() async throws {
        let work = try CommandRunner.temporaryDirectory("heatmap-ranges")
        defer { try? FileManager.default.removeItem(atPath: work) }
        try NetworkFixture.makeConvNetwork(at: "\(work)/eps.ts")
        let local = try LocalNetwork.start(
            checkpoint: "\(work)/eps.ts", arguments: ["--adapter", "vp-eps", "--shape", "1,28,28", "--batch", "64"])
        try await withNetwork(local) { network in
            XCTAssertEqual(network.imageShape, ImageShape(channels: 1, height: 28, width: 28))
            let shape = ImageShape(channels: 1, height: 28, width: 28)
            var pixels = [UInt8](repeating: 0, count: 3 * 784)
            for i in pixels.indices { pixels[i] = UInt8((i * 37 + i / 5) % 256) }
            let images = ImageArray(pixels: pixels, count: 3, shape: shape)
            // Drawn by the endpoint, in ranges of 300 + 300 + 184 output pixels; image i for sample i, in ranges of 97.
            for (inOrder, chunk) in [(false, 300), (true, 97)] {
                let one = try await network.heatmap(t: 0.8, samples: 3, seed: 4, images: images, imagesInOrder: inOrder)
                XCTAssertEqual(one.shape, [28, 28, 28, 28])
                do {
                    let parts = try await network.heatmap(
                        t: 0.8, samples: 3, seed: 4, images: images, imagesInOrder: inOrder, pixelsPerRequest: chunk)
                    XCTAssertEqual(parts.shape, one.shape)
                    XCTAssertEqual(parts.maps.count, one.maps.count)
                    XCTAssertTrue(
                        zip(parts.maps, one.maps).allSatisfy { $0.bitPattern == $1.bitPattern }, "chunk \(chunk)")
                    XCTAssertEqual(parts.locality.map(\.bitPattern), one.locality.map(\.bitPattern), "chunk \(chunk)")
                }
            }
        }
    }

    func testA64x64HeatmapLargerThanAFrameArrivesInRanges() async throws {
        let work = try CommandRunner.temporaryDirectory("heatmap-64")
        defer { try? FileManager.default.removeItem(atPath: work) }
        try NetworkFixture.makeConvNetwork(at: "\(work)/eps.ts")
        let local = try LocalNetwork.start(
            checkpoint: "\(work)/eps.ts", arguments: ["--adapter", "vp-eps", "--shape", "1,64,64"])
        try await withNetwork(local) { network in
            let shape = ImageShape(channels: 1, height: 64, width: 64)
            XCTAssertEqual(network.imageShape, shape)
            XCTAssertLessThan(network.heatmapPixelsPerFrame(shape), 4096)  // the whole map does not fit a frame
            let images = ImageArray(
                pixels: (0..<4096).map { UInt8(($0 * 13) % 256) }, count: 1, shape: shape)
            let result = try await network.heatmap(t: 0.5, samples: 1, seed: 1, images: images)
            XCTAssertEqual(result.shape, [64, 64, 64, 64])
            XCTAssertEqual(result.maps.count, 4096 * 4096)  // 134 MB of float64
            // D(z, t) = z - t eps(...): each output pixel depends on its 5x5 neighbourhood only.
            for p in [0, 63, 1365, 1366, 2731, 2732, 4095] {
                let (y, x) = (p / 64, p % 64)
                let row = result.maps[(p * 4096)..<((p + 1) * 4096)]
                for (q, value) in zip(0..<4096, row) where abs(q / 64 - y) > 2 || abs(q % 64 - x) > 2 {
                    XCTAssertEqual(value, 0, "output pixel \(p), input pixel \(q)")
                }
                XCTAssertGreaterThan(row[row.startIndex + p], 0)
            }
            XCTAssertTrue(result.locality.allSatisfy { $0 >= 1 && $0 <= 5 }, "\(result.locality)")
        }
    }
}
