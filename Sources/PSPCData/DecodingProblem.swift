import Foundation

/// Says which key of a JSON file has which wrong type ("key 'count' must be an integer, got 1.5") where
/// Foundation's decoder calls valid JSON with a non-integer number "not valid JSON".
public enum DecodingProblem {
    /// A one-line reason for `error` from decoding `json`. `integerKeys` are the keys the type reads as
    /// integers: Foundation reports a fractional number there as invalid JSON without saying where, so they
    /// are looked for in the parsed file.
    public static func describe(_ error: Error, json: [UInt8], integerKeys: Set<String> = []) -> String {
        guard let error = error as? DecodingError else { return "\(error)" }
        let parsed = try? JSONSerialization.jsonObject(with: Data(json), options: [.fragmentsAllowed])
        switch error {
        case .keyNotFound(let key, let context):
            return "missing key '\(keyPath(context.codingPath + [key]))'"
        case .valueNotFound(let type, let context):
            return "key '\(keyPath(context.codingPath))' must be \(typeName(type)), got null"
        case .typeMismatch(let type, let context):
            return "key '\(keyPath(context.codingPath))' must be \(typeName(type)), got \(shown(value(at: context.codingPath, in: parsed)))"
        case .dataCorrupted(let context):
            guard parsed != nil else { return "not valid JSON" }
            if context.codingPath.isEmpty, let (path, number) = fractional(in: parsed, keys: integerKeys) {
                return "key '\(path)' must be an integer, got \(shown(number))"
            }
            let found = value(at: context.codingPath, in: parsed)
            // Foundation reports a number that does not fit the integer it wants as corrupted data.
            if !context.codingPath.isEmpty, let number = found as? NSNumber, !(number is Bool) {
                return "key '\(keyPath(context.codingPath))' must be an integer, got \(shown(number))"
            }
            return "key '\(keyPath(context.codingPath))': \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }

    /// The first value under one of `keys` that is a number but not an integer, depth first.
    static func fractional(in value: Any?, keys: Set<String>, path: String = "") -> (String, NSNumber)? {
        if let object = value as? [String: Any] {
            for key in object.keys.sorted() {
                let inner = path.isEmpty ? key : "\(path).\(key)"
                if keys.contains(key), let number = object[key] as? NSNumber, !(number is Bool),
                    number.doubleValue.rounded() != number.doubleValue || !number.doubleValue.isFinite
                {
                    return (inner, number)
                }
                if let found = fractional(in: object[key], keys: keys, path: inner) { return found }
            }
        } else if let array = value as? [Any] {
            for (index, element) in array.enumerated() {
                if let found = fractional(in: element, keys: keys, path: "\(path)[\(index)]") { return found }
            }
        }
        return nil
    }

    static func keyPath(_ path: [CodingKey]) -> String {
        path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            .replacingOccurrences(of: ".[", with: "[")
    }

    static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type, is Int64.Type, is Int32.Type, is UInt64.Type, is UInt32.Type: return "an integer"
        case is Double.Type, is Float.Type: return "a number"
        case is String.Type: return "a string"
        case is Bool.Type: return "true or false"
        default:
            let name = "\(type)"
            if name.hasPrefix("Array") { return "a list" }
            if name.hasPrefix("Dictionary") { return "an object" }
            return name
        }
    }

    static func value(at path: [CodingKey], in root: Any?) -> Any? {
        var current = root
        for key in path {
            if let index = key.intValue, let array = current as? [Any] {
                current = index < array.count ? array[index] : nil
            } else if let object = current as? [String: Any] {
                current = object[key.stringValue]
            } else {
                return nil
            }
        }
        return current
    }

    static func shown(_ value: Any?) -> String {
        guard let value else { return "nothing" }
        if let string = value as? String { return "\"\(string)\"" }
        if value is NSNull { return "null" }
        if let data = try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed]) {
            return String(decoding: data, as: UTF8.self)
        }
        return "\(value)"
    }
}
