import Foundation

/// An embedded cluster on this machine: N `pspc worker` processes on loopback sharing a fresh token, with
/// shards placed by `Placement`. Stopped (SIGTERM, then SIGKILL after a grace period) by `stop()` or when the
/// object goes away.
public final class LocalCluster: @unchecked Sendable {
    public let addresses: [HostPort]
    public let tokenFile: String
    public let processes: [Process]
    /// Held open for the workers' lifetime: they exit when it closes (`pspc worker --exit-with-parent`).
    private let lifelines: [Pipe]
    private let directory: String

    /// Starts `workers` processes of `binary` (default: this executable) over the dataset `data`.
    public static func start(
        workers: Int, data: String, replication: Int = 1, threadsPerWorker: Int? = nil, xflip: Bool = true,
        binary: String? = nil, log: (String) -> Void = { _ in }
    ) throws -> LocalCluster {
        guard workers >= 1 else { throw ClusterError.invalidConfiguration("--local-workers must be at least 1") }
        let executable = binary ?? Self.currentExecutable()
        let directory = NSTemporaryDirectory() + "pspc-local-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700])
        let tokenFile = directory + "/token"
        var token = [UInt8](repeating: 0, count: 32)
        var rng = SystemRandomNumberGenerator()
        for i in token.indices { token[i] = UInt8.random(in: 0...255, using: &rng) }
        let hex = token.map { String(format: "%02x", $0) }.joined()
        guard
            FileManager.default.createFile(
                atPath: tokenFile, contents: Data(hex.utf8), attributes: [.posixPermissions: 0o600])
        else {
            throw ClusterError.invalidConfiguration("cannot write the local cluster token to \(tokenFile)")
        }
        let threads = threadsPerWorker ?? max(1, ProcessInfo.processInfo.activeProcessorCount / workers)
        var processes: [Process] = []
        var addresses: [HostPort] = []
        var lifelines: [Pipe] = []
        do {
            for i in 0..<workers {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: executable)
                process.arguments = [
                    "worker", "--listen", "127.0.0.1:0", "--data", data, "--placement",
                    "\(i)/\(workers)/\(replication)",
                    "--token-file", tokenFile, "--threads", "\(threads)", "--xflip", xflip ? "on" : "off",
                    "--exit-with-parent",
                ]
                // The worker exits when this pipe closes, which the kernel does when this process dies.
                let lifeline = Pipe()
                process.standardInput = lifeline
                lifelines.append(lifeline)
                let out = Pipe()
                process.standardOutput = out
                process.standardError = FileHandle.standardError
                try process.run()
                processes.append(process)
                addresses.append(try Self.readAnnouncement(out.fileHandleForReading, worker: i))
                log("local worker \(i) (pid \(process.processIdentifier)) listening on \(addresses.last!)")
            }
        } catch {
            Self.terminate(processes)
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        return LocalCluster(
            addresses: addresses, tokenFile: tokenFile, processes: processes, lifelines: lifelines, directory: directory)
    }

    private init(addresses: [HostPort], tokenFile: String, processes: [Process], lifelines: [Pipe], directory: String) {
        self.addresses = addresses
        self.tokenFile = tokenFile
        self.processes = processes
        self.lifelines = lifelines
        self.directory = directory
    }

    deinit { stop() }

    public func stop() {
        Self.terminate(processes)
        try? FileManager.default.removeItem(atPath: directory)
    }

    static func terminate(_ processes: [Process]) {
        for process in processes where process.isRunning { process.terminate() }
        let deadline = Date().addingTimeInterval(5)
        for process in processes {
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
    }

    /// A worker prints `pspc worker listening on HOST:PORT` once it serves; anything else is a failed start.
    static func readAnnouncement(_ handle: FileHandle, worker: Int, prefix: String = "pspc worker listening on ") throws
        -> HostPort
    {
        var line = [UInt8]()
        while true {
            let byte = handle.readData(ofLength: 1)
            guard let b = byte.first else {
                throw ClusterError.workerFailed(
                    worker: "local \(worker)", reason: "exited before it listened (see its error above)")
            }
            if b == 10 { break }
            line.append(b)
        }
        let text = String(decoding: line, as: UTF8.self)
        guard text.hasPrefix(prefix) else {
            throw ClusterError.workerFailed(worker: "local \(worker)", reason: "unexpected start line '\(text)'")
        }
        return try HostPort(String(text.dropFirst(prefix.count)))
    }

    static func currentExecutable() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}
