import Foundation

/// A flag another thread sets to stop a computation early. The computation reads it at safe points only (once
/// per block of training images or per crop work item, never inside a kernel) and stops by throwing
/// `CancellationError`, so an uncancelled computation gives the same bits as one without a flag.
public final class CancellationFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var cancelled = false

    public init() {}

    /// Asks the computation to stop at its next safe point; setting it twice is harmless.
    public func cancel() { lock.withLock { cancelled = true } }

    public var isCancelled: Bool { lock.withLock { cancelled } }

    /// Throws `CancellationError` once the flag is set.
    public func check() throws {
        if isCancelled { throw CancellationError() }
    }
}
