import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PSPCCore
import PSPCData
import PSPCWire

/// A trained network D_theta served by the Python endpoint (`python -m pspc_net.serve`), reached over the same
/// framed protocol and handshake as the workers.
///
/// The endpoint closes a connection that sends nothing for its idle timeout (300 s by default), and a sweep may
/// spend longer than that on the other methods between two network calls. A call that finds its connection
/// closed, or loses it before any answer, is sent again once on a fresh connection (handshake, token and role
/// checked again): denoise and heatmap requests are pure functions of their fields, so the retry gives the same
/// answer. A second failure is the caller's error.
public final class NetworkDenoiser: Sendable {
    private let current: NIOLockedValueBox<WorkerConnection>
    public let address: HostPort
    public let deadline: Double
    /// The largest frame either side accepts; heatmap responses are sized to fit it.
    public let maxFrameSize: Int
    private let token: [UInt8]
    private let group: EventLoopGroup
    /// Fresh connections made after the first (each after a closed one).
    private let reconnectCount = NIOLockedValueBox(0)

    /// Room in a heatmap response frame for everything but the maps' and sides' payloads.
    static let heatmapFrameOverhead = 64 << 10

    private init(
        connection: WorkerConnection, address: HostPort, deadline: Double, maxFrameSize: Int, token: [UInt8],
        group: EventLoopGroup
    ) {
        self.current = NIOLockedValueBox(connection)
        self.address = address
        self.deadline = deadline
        self.maxFrameSize = maxFrameSize
        self.token = token
        self.group = group
    }

    public static func connect(
        to address: HostPort, token: [UInt8], group: EventLoopGroup, deadline: Double = 600,
        maxFrameSize: Int = FrameCodec.defaultMaxFrameSize
    ) async throws -> NetworkDenoiser {
        let connection = try await open(address, token: token, group: group, maxFrameSize: maxFrameSize)
        return NetworkDenoiser(
            connection: connection, address: address, deadline: deadline, maxFrameSize: maxFrameSize, token: token,
            group: group)
    }

    private static func open(_ address: HostPort, token: [UInt8], group: EventLoopGroup, maxFrameSize: Int)
        async throws -> WorkerConnection
    {
        let connection = try await WorkerConnection.connect(
            to: address, token: token, group: group, timeout: .seconds(30), maxFrameSize: maxFrameSize)
        guard connection.peer.role == .network else {
            connection.close()
            throw ClusterError.invalidConfiguration("\(address) is a \(connection.peer.role), not a network endpoint")
        }
        return connection
    }

    private var connection: WorkerConnection { current.withLockedValue { $0 } }

    /// Whether the current connection is open (the next call reconnects when it is not).
    public var isConnected: Bool { connection.isActive }

    /// How many times a closed connection was replaced by a fresh one.
    public var reconnects: Int { reconnectCount.withLockedValue { $0 } }

    /// Sends `body` and waits for its answer, once more on a fresh connection if the current one is (or gets)
    /// closed before answering; an error frame, a deadline or a failed reconnection is thrown as is.
    func call(_ body: Pspc_V1_Frame.OneOf_Body) async throws -> Pspc_V1_Frame.OneOf_Body {
        let first = connection
        if first.isActive {
            do {
                return try await first.call(body, deadline: deadline)
            } catch let error as ClusterError where error.isConnectionClosed && !first.isActive {
                // Closed under the request (the endpoint's idle timeout racing it): retried below.
            }
        }
        let fresh = try await Self.open(address, token: token, group: group, maxFrameSize: maxFrameSize)
        current.withLockedValue { $0 = fresh }
        reconnectCount.withLockedValue { $0 += 1 }
        first.close()
        return try await fresh.call(body, deadline: deadline)
    }

    /// The image shape the endpoint said its network takes (in its Welcome), if it said.
    public var imageShape: ImageShape? {
        connection.peer.info.flatMap { $0.hasShape ? try? ImageShape(wire: $0.shape) : nil }
    }

    /// Output pixels per heatmap request that fit a response frame for `shape` (at least 1).
    public func heatmapPixelsPerFrame(_ shape: ImageShape) -> Int {
        let pixels = shape.height * shape.width
        return max(1, (maxFrameSize - Self.heatmapFrameOverhead) / ((pixels + 3) * 8))
    }

    /// D_theta(z, t) for `[B, C, H, W]` queries, in batches of `batchSize`.
    public func denoise(
        _ z: [Double], shape: ImageShape, t: Double, batchSize: Int = 256, progress: @Sendable (Int) -> Void = { _ in }
    ) async throws -> [Double] {
        let dim = shape.dimension, count = z.count / dim
        var out: [Double] = []
        out.reserveCapacity(z.count)
        var start = 0
        while start < count {
            let n = min(batchSize, count - start)
            let batch = QueryBatch(values: Array(z[(start * dim)..<((start + n) * dim)]), shape: shape)
            let request = Pspc_V1_DenoiseRequest(queries: batch, t: Array(repeating: t, count: n), compression: .none)
            let answer = try await call(.denoiseRequest(request))
            guard case .denoiseResponse(let response) = answer else {
                throw ClusterError.workerFailed(
                    worker: address.description, reason: "answered a denoise request with \(answer)")
            }
            let denoised = try response.decoded()
            guard denoised.shape == shape, denoised.count == n else {
                throw ClusterError.workerFailed(
                    worker: address.description,
                    reason: "returned \(denoised.count) images of \(denoised.shape) for \(n) of \(shape)")
            }
            out += denoised.values
            start += n
            progress(start)
        }
        return out
    }

    /// Gradient-sensitivity maps G(y, x, t) of docs/science.md section 4, averaged over `samples` forward-process
    /// draws (seeded) from `images` (the endpoint's own training set when nil; with `imagesInOrder`, image i is
    /// sample i's x0 and `images.count` must be `samples`): `maps` is `[H, W, H, W]` (output pixel first),
    /// `locality` the mean side of the centred square holding 50 / 75 / 95 % of a map's mass.
    ///
    /// A map that fits one frame (`maxFrameSize`) is asked for in one request; a larger one, or any map when
    /// `pixelsPerRequest` is below H W, in requests of consecutive output pixels p = y W + x
    /// (`output_start`, `output_count`), whose rows are assembled in order and whose per-pixel sides are
    /// averaged: the result is bit for bit the one-request result.
    public func heatmap(
        t: Double, samples: Int, seed: UInt64, images: ImageArray? = nil, imagesInOrder: Bool = false,
        pixelsPerRequest: Int? = nil
    ) async throws -> (maps: [Double], shape: [Int], locality: [Double]) {
        var request = Pspc_V1_HeatmapRequest()
        request.t = t
        request.samples = UInt32(samples)
        request.seed = seed
        request.imagesInOrder = imagesInOrder
        if let images {
            request.images = Pspc_V1_Tensor(
                uint8: images.pixels,
                shape: [images.count, images.shape.channels, images.shape.height, images.shape.width])
        }
        guard let shape = imageShape ?? images?.shape else {
            return try await heatmapPart(request, expected: nil)
        }
        let pixels = shape.height * shape.width
        // By default as few requests as fit, of near-equal sizes.
        let fit = heatmapPixelsPerFrame(shape), requests = (pixels + fit - 1) / fit
        let chunk = max(1, min(pixelsPerRequest ?? (pixels + requests - 1) / requests, pixels))
        if chunk >= pixels { return try await heatmapPart(request, expected: nil) }
        var maps: [Double] = []
        maps.reserveCapacity(pixels * pixels)
        var sideSums = [0.0, 0.0, 0.0]
        for start in stride(from: 0, to: pixels, by: chunk) {
            let count = min(chunk, pixels - start)
            request.outputStart = UInt32(start)
            request.outputCount = UInt32(count)
            let part = try await heatmapPart(request, expected: (start, count, shape))
            maps += part.maps
            // The sides are odd integers: these sums, and so the mean, are exact.
            for (i, side) in part.locality.enumerated() { sideSums[i % 3] += side }
        }
        return (maps, [shape.height, shape.width, shape.height, shape.width], sideSums.map { $0 / Double(pixels) })
    }

    /// One heatmap request: the whole map (`expected` nil; `locality` the 3 figures) or a range of output pixels
    /// (`maps` `[count, H, W]`, `locality` the per-pixel sides `[count, 3]`).
    private func heatmapPart(_ request: Pspc_V1_HeatmapRequest, expected: (start: Int, count: Int, shape: ImageShape)?)
        async throws -> (maps: [Double], shape: [Int], locality: [Double])
    {
        let answer = try await call(.heatmapRequest(request))
        guard case .heatmapResponse(let response) = answer else {
            throw ClusterError.workerFailed(
                worker: address.description, reason: "answered a heatmap request with \(answer)")
        }
        let shape = try response.maps.checkedShape(field: "heatmap_response.maps")
        let figures: [Double]
        if let expected {
            let (h, w) = (expected.shape.height, expected.shape.width)
            guard shape == [expected.count, h, w] else {
                throw ClusterError.workerFailed(
                    worker: address.description,
                    reason: "heatmaps of shape \(shape) for output pixels \(expected.start) + \(expected.count),"
                        + " expected [\(expected.count), \(h), \(w)]")
            }
            figures = try response.sides.doubleValues(field: "heatmap_response.sides")
            guard try response.sides.checkedShape(field: "heatmap_response.sides") == [expected.count, 3] else {
                throw ClusterError.workerFailed(
                    worker: address.description, reason: "per-pixel sides of a heatmap range are not [count, 3]")
            }
        } else {
            guard shape.count == 4, shape[0] == shape[2], shape[1] == shape[3] else {
                throw ClusterError.workerFailed(
                    worker: address.description, reason: "heatmaps of shape \(shape), expected [H, W, H, W]")
            }
            figures = try response.locality.doubleValues(field: "heatmap_response.locality")
            guard figures.count == 3 else {
                throw ClusterError.workerFailed(worker: address.description, reason: "locality figures are not [3]")
            }
        }
        let maps = try response.maps.doubleValues(field: "heatmap_response.maps")
        guard maps.allSatisfy({ $0.isFinite && $0 >= 0 }), figures.allSatisfy({ $0.isFinite && $0 >= 1 }) else {
            throw ClusterError.workerFailed(
                worker: address.description, reason: "heatmaps or locality figures out of range")
        }
        return (maps, shape, figures)
    }

    public func close() { connection.close() }
}

/// The Python network endpoint started by pspc itself (`--local-network CHECKPOINT`), on loopback with a fresh
/// token; stopped by `stop()`.
public final class LocalNetwork: @unchecked Sendable {
    public let address: HostPort
    public let token: [UInt8]
    let process: Process
    /// Held open for the endpoint's lifetime (`--exit-with-parent`).
    let lifeline: Pipe
    let directory: String

    /// `python` and `scripts` default to the project's `.venv/bin/python` and `scripts/` folder found above the
    /// running binary (env PSPC_PYTHON and PSPC_SCRIPTS override them).
    /// `arguments` are passed on to `pspc_net.serve` after the ones pspc sets (`--adapter vp-eps`, `--shape C,H,W`...).
    public static func start(
        checkpoint: String, device: String = "cpu", arguments: [String] = [], log: (String) -> Void = { _ in }
    ) throws -> LocalNetwork {
        let environment = ProcessInfo.processInfo.environment
        guard
            let root = Self.projectRoot()
                ?? environment["PSPC_SCRIPTS"].map({ URL(fileURLWithPath: $0).deletingLastPathComponent().path })
        else { throw ClusterError.invalidConfiguration("cannot find the project's scripts/pspc_net: set PSPC_SCRIPTS") }
        let python = environment["PSPC_PYTHON"] ?? root + "/.venv/bin/python"
        let scripts = environment["PSPC_SCRIPTS"] ?? root + "/scripts"
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw ClusterError.invalidConfiguration(
                "\(python) not found: run scripts/setup-python.sh (or set PSPC_PYTHON)")
        }
        let directory = NSTemporaryDirectory() + "pspc-network-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        var rng = SystemRandomNumberGenerator()
        let token = Array(
            (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }.map { String(format: "%02x", $0) }.joined()
                .utf8)
        let tokenFile = directory + "/token"
        guard
            FileManager.default.createFile(
                atPath: tokenFile, contents: Data(token), attributes: [.posixPermissions: 0o600])
        else {
            throw ClusterError.invalidConfiguration("cannot write \(tokenFile)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [
            "-m", "pspc_net.serve", "--checkpoint", checkpoint, "--listen", "127.0.0.1:0", "--token-file", tokenFile,
            "--device", device, "--exit-with-parent",
        ] + arguments
        var env = environment
        env["PYTHONPATH"] = scripts + (env["PYTHONPATH"].map { ":" + $0 } ?? "")
        env["PYTHONUNBUFFERED"] = "1"
        process.environment = env
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.standardError
        // The endpoint exits when this pipe closes, which the kernel does when this process dies.
        let lifeline = Pipe()
        process.standardInput = lifeline
        try process.run()
        do {
            let address = try LocalCluster.readAnnouncement(
                out.fileHandleForReading, worker: 0, prefix: "pspc network listening on ")
            log("network endpoint (pid \(process.processIdentifier)) listening on \(address)")
            return LocalNetwork(
                address: address, token: token, process: process, lifeline: lifeline, directory: directory)
        } catch {
            LocalCluster.terminate([process])
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    private init(address: HostPort, token: [UInt8], process: Process, lifeline: Pipe, directory: String) {
        self.address = address
        self.token = token
        self.process = process
        self.lifeline = lifeline
        self.directory = directory
    }

    deinit { stop() }

    public func stop() {
        LocalCluster.terminate([process])
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The first folder above the running binary that holds scripts/pspc_net.
    static func projectRoot() -> String? {
        var url = URL(fileURLWithPath: LocalCluster.currentExecutable()).deletingLastPathComponent()
        for _ in 0..<6 {
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("scripts/pspc_net").path) {
                return url.path
            }
            url = url.deletingLastPathComponent()
        }
        return nil
    }
}
