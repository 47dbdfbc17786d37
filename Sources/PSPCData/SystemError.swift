import Foundation

/// Readable causes of operating-system failures: `strerror` text with the errno name ("No space left on device
/// (ENOSPC)"), and Foundation's file errors (CocoaError / NSError) turned into "cannot write PATH: reason", so a
/// user is told why a read or write failed instead of a raw `NSCocoaErrorDomain` dump.
public enum SystemError {
    /// `strerror(code)` followed by the symbolic name, e.g. "Read-only file system (EROFS)".
    public static func describe(errno code: Int32) -> String {
        let text = String(cString: strerror(code))
        guard let name = names[code] else { return "\(text) (errno \(code))" }
        return "\(text) (\(name))"
    }

    /// The errno names pspc's users are most likely to meet; others are printed by number.
    static let names: [Int32: String] = [
        EPERM: "EPERM", ENOENT: "ENOENT", EINTR: "EINTR", EIO: "EIO", ENXIO: "ENXIO", E2BIG: "E2BIG",
        EBADF: "EBADF", EAGAIN: "EAGAIN", ENOMEM: "ENOMEM", EACCES: "EACCES", EFAULT: "EFAULT", EBUSY: "EBUSY",
        EEXIST: "EEXIST", EXDEV: "EXDEV", ENODEV: "ENODEV", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR",
        EINVAL: "EINVAL", ENFILE: "ENFILE", EMFILE: "EMFILE", ETXTBSY: "ETXTBSY", EFBIG: "EFBIG",
        ENOSPC: "ENOSPC", ESPIPE: "ESPIPE", EROFS: "EROFS", EMLINK: "EMLINK", EPIPE: "EPIPE",
        ENAMETOOLONG: "ENAMETOOLONG", ENOTEMPTY: "ENOTEMPTY", ELOOP: "ELOOP", EDQUOT: "EDQUOT",
        EADDRINUSE: "EADDRINUSE", EADDRNOTAVAIL: "EADDRNOTAVAIL", ECONNREFUSED: "ECONNREFUSED",
        ECONNRESET: "ECONNRESET", ETIMEDOUT: "ETIMEDOUT", EHOSTUNREACH: "EHOSTUNREACH",
        ENETUNREACH: "ENETUNREACH", EAFNOSUPPORT: "EAFNOSUPPORT", ENOTSOCK: "ENOTSOCK",
    ]

    /// A one-line message for a Foundation file error (`CocoaError`, or an `NSError` of the Cocoa or POSIX
    /// domain): "cannot write PATH: No space left on device (ENOSPC)". Nil for any other error, which the
    /// caller reports its own way.
    public static func describe(_ error: Error) -> String? {
        let ns = error as NSError
        guard ns.domain == NSCocoaErrorDomain || ns.domain == NSPOSIXErrorDomain else { return nil }
        let path =
            (ns.userInfo[NSFilePathErrorKey] as? String) ?? (ns.userInfo[NSURLErrorKey] as? URL)?.path
        var cause: String
        if ns.domain == NSPOSIXErrorDomain {
            cause = describe(errno: Int32(ns.code))
        } else if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError,
            underlying.domain == NSPOSIXErrorDomain
        {
            cause = describe(errno: Int32(underlying.code))
        } else if let code = posixCode(cocoa: ns.code) {
            cause = describe(errno: code)
        } else {
            cause = ns.localizedFailureReason ?? ns.localizedDescription
        }
        if cause.isEmpty { cause = "error \(ns.code)" }
        let verb = isWrite(cocoa: ns.code) ? "cannot write" : isRead(cocoa: ns.code) ? "cannot read" : "cannot access"
        guard let path else { return "\(verb): \(cause)" }
        return "\(verb) \(path): \(cause)"
    }

    /// The errno a Cocoa file error code stands for, when it names one.
    static func posixCode(cocoa code: Int) -> Int32? {
        switch CocoaError.Code(rawValue: code) {
        case .fileNoSuchFile, .fileReadNoSuchFile: return ENOENT
        case .fileReadNoPermission, .fileWriteNoPermission: return EACCES
        case .fileWriteVolumeReadOnly: return EROFS
        case .fileWriteOutOfSpace: return ENOSPC
        case .fileWriteFileExists: return EEXIST
        case .fileReadTooLarge: return EFBIG
        default: return nil
        }
    }

    /// Cocoa's write codes are 512...642, its read codes 256...264; 4 (no such file) is either, "cannot access".
    static func isWrite(cocoa code: Int) -> Bool {
        (CocoaError.fileWriteUnknown.rawValue...CocoaError.fileWriteVolumeReadOnly.rawValue).contains(code)
    }

    static func isRead(cocoa code: Int) -> Bool {
        (CocoaError.fileReadUnknown.rawValue...CocoaError.fileReadUnknownStringEncoding.rawValue).contains(code)
    }
}
