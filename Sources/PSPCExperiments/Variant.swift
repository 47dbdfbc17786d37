import PSPCCore

/// One column of an experiment: the network, or an engine method with one setting (a patch size, a lambda,
/// a schedule). Its label names it in results files and reports; its slug names its files.
public struct Variant: Sendable {
    /// What a variant's `param` column holds.
    public enum Param: Sendable, Equatable {
        case none
        case patchSize(Int)
        case lambda(Double)
        case schedule

        /// The csv text: the number, `schedule` or empty.
        public var text: String {
            switch self {
            case .none: return ""
            case .patchSize(let s): return String(s)
            case .lambda(let l): return RunNumber.text(l)
            case .schedule: return "schedule"
            }
        }

        public var json: JSONValue {
            switch self {
            case .none: return .null
            case .patchSize(let s): return .int(s)
            case .lambda(let l): return .number(l)
            case .schedule: return .string("schedule")
            }
        }
    }

    /// `network`, `empirical`, `gaussian`, `cfdm`, `pspc-square`, `pspc-flex`, `ls` or `els`.
    public let method: String
    public let param: Param
    /// nil for the network.
    public let engineMethod: DenoiseMethod?

    public init(method: String, param: Param = .none, engineMethod: DenoiseMethod?) {
        self.method = method
        self.param = param
        self.engineMethod = engineMethod
    }

    public static let network = Variant(method: "network", engineMethod: nil)

    public var isNetwork: Bool { engineMethod == nil }

    /// `pspc-square s=7`, `pspc-flex lambda=0.5`, `pspc-square schedule`, `empirical`.
    public var label: String {
        switch param {
        case .none: return method
        case .patchSize(let s): return "\(method) s=\(s)"
        case .lambda(let l): return "\(method) lambda=\(RunNumber.text(l))"
        case .schedule: return "\(method) schedule"
        }
    }

    /// The label as a file name: `pspc-square-s7`, `pspc-flex-lambda0.5`.
    public var slug: String { Self.slug(label) }

    public static func slug(_ label: String) -> String {
        label.replacingOccurrences(of: " ", with: "-").replacingOccurrences(of: "=", with: "")
    }

    /// Throws when two variants would write the same files.
    public static func checkDistinct(_ variants: [Variant], noun: String) throws {
        let slugs = variants.map(\.slug)
        guard Set(slugs).count == slugs.count else {
            throw PSPCError.invalidArgument("a \(noun) is listed twice (\(slugs.joined(separator: ", ")))")
        }
    }
}
