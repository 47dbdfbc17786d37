import Dispatch
import Foundation
import NIOCore

/// The life of a listening server process (`pspc worker`, `pspc serve`): it announces its address, then serves
/// until SIGTERM or SIGINT (or, with `exitWithParent`, until standard input closes) closes its channel.
enum ServerLifetime {
    /// Writes `line` to standard output (unbuffered: launchers and tests wait for it), then returns once the
    /// channel is closed by a signal, by standard input's end, or otherwise.
    static func announceAndServe(_ line: String, channel: Channel, exitWithParent: Bool) async throws {
        try await announceAndServe([line], channel: channel, exitWithParent: exitWithParent)
    }

    /// Writes `lines` (the first one the address launchers wait for), then serves as above; `stopping` runs
    /// when a signal or standard input's end stops the server, before its channel is closed.
    static func announceAndServe(
        _ lines: [String], channel: Channel, exitWithParent: Bool, stopping: @escaping @Sendable () -> Void = {}
    ) async throws {
        FileHandle.standardOutput.write(Data(lines.map { $0 + "\n" }.joined().utf8))
        let stop = DispatchQueue(label: "pspc.server.signals")
        var sources: [DispatchSourceSignal] = []
        for signalNumber in [SIGTERM, SIGINT] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: stop)
            source.setEventHandler {
                stopping()
                channel.close(promise: nil)
            }
            source.resume()
            sources.append(source)
        }
        if exitWithParent {
            // EOF on stdin means the parent is gone (even after SIGKILL): stop as on SIGTERM.
            Thread.detachNewThread {
                while !FileHandle.standardInput.availableData.isEmpty {}
                stopping()
                channel.close(promise: nil)
            }
        }
        try await channel.closeFuture.get()
        withExtendedLifetime(sources) {}
    }

    /// Waits (polling, at most `seconds`) until `inFlight()` is 0: requests already taken finish before exit.
    static func drain(seconds: Double, inFlight: () -> Int) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while inFlight() > 0 && Date() < deadline { try await Task.sleep(nanoseconds: 10_000_000) }
    }
}
