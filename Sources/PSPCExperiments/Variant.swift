import Foundation
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
        /// A named network of a study with several.
        case name(String)

        /// The csv text: the number, `schedule`, the network's name or empty.
        public var text: String {
            switch self {
            case .none: return ""
            case .patchSize(let s): return String(s)
            case .lambda(let l): return RunNumber.text(l)
            case .schedule: return "schedule"
            case .name(let name): return name
            }
        }

        public var json: JSONValue {
            switch self {
            case .none: return .null
            case .patchSize(let s): return .int(s)
            case .lambda(let l): return .number(l)
            case .schedule: return .string("schedule")
            case .name(let name): return .string(name)
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

    /// The network of a study with one network, unnamed: label `network`.
    public static let network = Variant(method: "network", engineMethod: nil)

    /// A network of a study with several: label `network NAME` (slug `network-NAME`); nil gives `network`.
    public static func network(named name: String?) -> Variant {
        name.map { Variant(method: "network", param: .name($0), engineMethod: nil) } ?? .network
    }

    /// Whether `name` can name a network: letters, digits, `_`, `-` and `.`, starting with a letter or digit
    /// (it becomes part of a label and of file names).
    public static func isValidNetworkName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.count <= 64 else { return false }
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "_-."))
        return CharacterSet.alphanumerics.contains(first) && name.unicodeScalars.allSatisfy { $0.isASCII && allowed.contains($0) }
    }

    public var isNetwork: Bool { engineMethod == nil }

    /// `pspc-square s=7`, `pspc-flex lambda=0.5`, `pspc-square schedule`, `empirical`.
    public var label: String {
        switch param {
        case .none: return method
        case .patchSize(let s): return "\(method) s=\(s)"
        case .lambda(let l): return "\(method) lambda=\(RunNumber.text(l))"
        case .schedule: return "\(method) schedule"
        case .name(let name): return "\(method) \(name)"
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
