import Foundation
import NIOCore
import NIOPosix
import PSPCCore
import PSPCData
import PSPCWire

/// A trained network D_theta served by the Python endpoint (`python -m pspc_net.serve`), reached over the same
/// framed protocol and handshake as the workers.
public final class NetworkDenoiser: Sendable {
    let connection: WorkerConnection
    public let address: HostPort
    public let deadline: Double

    private init(connection: WorkerConnection, address: HostPort, deadline: Double) {
        self.connection = connection
        self.address = address
        self.deadline = deadline
    }

    public static func connect(to address: HostPort, token: [UInt8], group: EventLoopGroup, deadline: Double = 600)
        async throws -> NetworkDenoiser
    {
        let connection = try await WorkerConnection.connect(
            to: address, token: token, group: group, timeout: .seconds(30))
        guard connection.peer.role == .network else {
            connection.close()
            throw ClusterError.invalidConfiguration("\(address) is a \(connection.peer.role), not a network endpoint")
        }
        return NetworkDenoiser(connection: connection, address: address, deadline: deadline)
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
            let answer = try await connection.call(.denoiseRequest(request), deadline: deadline)
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
    /// draws (seeded) from `images` (the endpoint's own training set when nil): `maps` is
    /// `[H, W, H, W]` (output pixel first), `locality` the mean side of the centred square holding 50 / 75 /
    /// 95 % of a map's mass.
    public func heatmap(t: Double, samples: Int, seed: UInt64, images: ImageArray? = nil) async throws
        -> (maps: [Double], shape: [Int], locality: [Double])
    {
        var request = Pspc_V1_HeatmapRequest()
        request.t = t
        request.samples = UInt32(samples)
        request.seed = seed
        if let images {
            request.images = Pspc_V1_Tensor(
                uint8: images.pixels,
                shape: [images.count, images.shape.channels, images.shape.height, images.shape.width])
        }
        let answer = try await connection.call(.heatmapRequest(request), deadline: deadline)
        guard case .heatmapResponse(let response) = answer else {
            throw ClusterError.workerFailed(
                worker: address.description, reason: "answered a heatmap request with \(answer)")
        }
        let shape = try response.maps.checkedShape(field: "heatmap_response.maps")
        guard shape.count == 4, shape[0] == shape[2], shape[1] == shape[3] else {
            throw ClusterError.workerFailed(
                worker: address.description, reason: "heatmaps of shape \(shape), expected [H, W, H, W]")
        }
        let maps = try response.maps.doubleValues(field: "heatmap_response.maps")
        let locality = try response.locality.doubleValues(field: "heatmap_response.locality")
        guard maps.allSatisfy({ $0.isFinite && $0 >= 0 }), locality.count == 3 else {
            throw ClusterError.workerFailed(
                worker: address.description, reason: "heatmaps or locality figures out of range")
        }
        return (maps, shape, locality)
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
    public static func start(checkpoint: String, device: String = "cpu", log: (String) -> Void = { _ in }) throws
        -> LocalNetwork
    {
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
        ]
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
