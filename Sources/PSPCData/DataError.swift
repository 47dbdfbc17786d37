/// Errors reading or writing data files, each naming the file and the problem in one line.
public enum DataError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file could not be opened, read or written.
    case io(path: String, reason: String)
    /// The bytes are not what the format says (bad magic, truncated, checksum mismatch, ...).
    case corrupt(path: String, reason: String)
    /// A valid file of a kind pspc does not read (a dtype, a PNG colour type, ...).
    case unsupported(path: String, reason: String)
    /// A request that does not fit the data (unknown source, bad option).
    case invalid(String)

    public var description: String {
        switch self {
        case .io(let path, let reason): return "\(path): \(reason)"
        case .corrupt(let path, let reason): return "\(path): corrupt: \(reason)"
        case .unsupported(let path, let reason): return "\(path): unsupported: \(reason)"
        case .invalid(let message): return message
        }
    }
}
