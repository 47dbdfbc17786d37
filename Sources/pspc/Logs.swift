import ArgumentParser
import Foundation
import Logging

/// Structured logs on standard error (swift-log's stream handler: timestamp, level, label, metadata such as
/// the worker's address or a request id). Commands that talk to workers take `--log-level`; the level is set
/// before their first logger is made.
enum Logs {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var chosen: Logger.Level = .notice

    static var level: Logger.Level {
        get { lock.withLock { chosen } }
        set { lock.withLock { chosen = newValue } }
    }

    /// Called once, first thing in `main`.
    static func bootstrap() {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = Logs.level
            return handler
        }
    }

    static func logger(_ label: String, level: Logger.Level) -> Logger {
        Logs.level = level
        return Logger(label: label)
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
