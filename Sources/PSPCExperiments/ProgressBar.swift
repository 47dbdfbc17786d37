import Foundation

/// Progress on standard error: a redrawn bar with rate and ETA on a terminal, plain lines (at most one
/// every few seconds, and the last) otherwise, so logs stay readable.
public final class ProgressBar: @unchecked Sendable {
    private let label: String
    private var total: Int
    private let unit: String
    private let start = Date()
    private var lastPrint = Date.distantPast
    private let interactive = isatty(STDERR_FILENO) != 0
    private let lock = NSLock()

    public init(_ label: String, total: Int, unit: String = "") {
        self.label = label
        self.total = max(total, 1)
        self.unit = unit
    }

    /// Reports `done` units finished; `total` replaces the expected total when the caller learns it late.
    public func update(_ done: Int, total newTotal: Int? = nil) {
        lock.lock()
        defer { lock.unlock() }
        if let newTotal { total = max(newTotal, 1) }
        let now = Date()
        let finished = done >= total
        guard finished || now.timeIntervalSince(lastPrint) >= (interactive ? 0.1 : 5) else { return }
        lastPrint = now
        let elapsed = now.timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let fraction = Double(done) / Double(total)
        let stats = String(
            format: "%d/%d%@ %.1f%@/s elapsed %@ ETA %@", done, total, unit, rate, unit,
            Self.clock(elapsed), Self.clock(eta))
        if interactive {
            let width = 30
            let filled = Int(fraction * Double(width))
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            FileHandle.standardError.write(Data("\r\(label) [\(bar)] \(stats)\u{1B}[K\(finished ? "\n" : "")".utf8))
        } else {
            FileHandle.standardError.write(
                Data("\(label): \(String(format: "%3.0f%%", fraction * 100)) \(stats)\n".utf8))
        }
    }

    public static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600
            ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}
