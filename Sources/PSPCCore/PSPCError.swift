/// Errors of the engine, each naming what was wrong in one line.
public enum PSPCError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidArgument(String)
    case shapeMismatch(String)
    case nonFiniteInput(String)
    case numerical(String)

    public var description: String {
        switch self {
        case .invalidArgument(let message), .shapeMismatch(let message), .nonFiniteInput(let message),
            .numerical(let message):
            return message
        }
    }
}
