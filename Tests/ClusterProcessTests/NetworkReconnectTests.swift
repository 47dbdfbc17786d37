import Foundation
import NIOCore
import NIOPosix
import PSPCCluster
import PSPCCore
import PSPCTestSupport
import XCTest

/// The endpoint closes idle connections (its --idle-timeout), and a sweep can spend longer than that on other
/// methods between two network calls: the next call reconnects once and gets the answer it would have had; with
/// the endpoint gone, the call fails naming it.
final class NetworkReconnectTests: XCTestCase {
    override func setUp() {
        for (key, value) in NetworkFixture.environment { setenv(key, value, 1) }
    }

    func testACallAfterTheEndpointClosedAnIdleConnectionReconnectsAndGetsTheSameAnswer() async throws {
        let work = try CommandRunner.temporaryDirectory("network-reconnect")
        defer { try? FileManager.default.removeItem(atPath: work) }
        try NetworkFixture.makeConvNetwork(at: "\(work)/eps.ts")
        let local = try LocalNetwork.start(
            checkpoint: "\(work)/eps.ts",
            arguments: ["--adapter", "vp-eps", "--shape", "1,28,28", "--idle-timeout", "0.5"])
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            try await check(local, group: group)
        } catch {
            local.stop()
            try? await group.shutdownGracefully()
            throw error
        }
        try? await group.shutdownGracefully()
    }

    private func check(_ local: LocalNetwork, group: EventLoopGroup) async throws {
        let network = try await NetworkDenoiser.connect(to: local.address, token: local.token, group: group)
        let shape = ImageShape(channels: 1, height: 28, width: 28)
        let z: [Double] = (0..<(2 * 784)).map { (i: Int) -> Double in Double((i * 29) % 200) / 100 - 1 }
        do {
            let first = try await network.denoise(z, shape: shape, t: 0.7)
            XCTAssertEqual(network.reconnects, 0)
            // Wait for the endpoint's idle close (polled, bounded: no timing is asserted).
            var polls = 0
            while network.isConnected && polls < 600 {
                try await Task.sleep(nanoseconds: 50_000_000)
                polls += 1
            }
            XCTAssertFalse(network.isConnected, "the endpoint did not close the idle connection within 30 s")
            let again = try await network.denoise(z, shape: shape, t: 0.7)
            XCTAssertEqual(network.reconnects, 1)
            XCTAssertEqual(again.map { $0.bitPattern }, first.map { $0.bitPattern })
        } catch {
            network.close()
            throw error
        }
        // The endpoint gone: the retry's connection fails, and says where.
        local.stop()
        var polls = 0
        while network.isConnected && polls < 600 {
            try await Task.sleep(nanoseconds: 50_000_000)
            polls += 1
        }
        do {
            _ = try await network.denoise(z, shape: shape, t: 0.7)
            XCTFail("a call to a stopped endpoint succeeded")
        } catch {
            XCTAssertTrue("\(error)".contains(local.address.description), "\(error)")
        }
        network.close()
    }
}
