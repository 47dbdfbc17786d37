import CBLAS
import Dispatch

/// Runs `body(i)` for i in 0..<count on up to `threads` threads, statically interleaved (work items are
/// of similar size). Results written by `body` go to disjoint memory the caller owns.
func parallelFor(count: Int, threads: Int, _ body: @Sendable (Int) -> Void) {
    let workers = max(1, min(threads, count))
    if workers == 1 {
        for i in 0..<count { body(i) }
        return
    }
    DispatchQueue.concurrentPerform(iterations: workers) { worker in
        var i = worker
        while i < count {
            body(i)
            i += workers
        }
    }
}

/// A raw buffer handed to parallel workers that write disjoint parts of it; the owner deallocates it.
struct SharedBuffer<Element>: @unchecked Sendable {
    let base: UnsafeMutablePointer<Element>

    static func allocate(_ count: Int, value: Element) -> SharedBuffer {
        let base = UnsafeMutablePointer<Element>.allocate(capacity: max(count, 1))
        base.initialize(repeating: value, count: max(count, 1))
        return SharedBuffer(base: base)
    }
}

/// OpenBLAS's own thread pool, which the empirical denoiser and the Gaussian baseline's linear algebra use.
public enum BLASThreads {
    /// Sets how many threads OpenBLAS uses; a worker sharing a machine with others sets its share, since
    /// OpenBLAS threads spin while waiting and oversubscribed cores make them crawl.
    public static func set(_ count: Int) { openblas_set_num_threads(Int32(max(1, count))) }
}
