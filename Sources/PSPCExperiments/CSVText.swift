import Foundation

/// RFC 4180 CSV as the run directories hold it: a field holding a comma, a quote, CR or LF is written in double
/// quotes (a quote doubled); reading undoes exactly that and rejects anything else (a stray quote, text after a
/// closing quote, an unterminated quoted field, a lone CR), naming the line.
///
/// Why not a package: the mirror holds yaslab/CSV.swift 2.5.2 and swiftcsv/SwiftCSV 0.10.0. CSV.swift's streaming
/// CSVWriter quotes as `field` does, but its reader lets text after a closing quote and an unterminated quoted
/// field through, and its one format error names no line. SwiftCSV reads by Character (a lone CR ends a record),
/// drops blanks at the start of a field, throws without a line number, and its serializer quotes only fields
/// holding the delimiter, without doubling quotes. pspc writes these files itself, so a malformed one must be an
/// error naming its line: the strict reader below (one state machine over Unicode scalars) is smaller than either.
public enum CSVText {
    public struct Failure: Error, CustomStringConvertible {
        /// 1-based physical line of the text where reading stopped.
        public var line: Int
        public var reason: String
        public var description: String { "line \(line): \(reason)" }
    }

    /// `value` as one field, quoted only when it must be.
    public static func field(_ value: String) -> String {
        guard value.unicodeScalars.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else {
            return value
        }
        return "\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// One record, LF-terminated.
    public static func line(_ fields: [String]) -> String { fields.map(field).joined(separator: ",") + "\n" }

    /// The records of `text` (LF or CRLF between records; a final line break optional).
    public static func records(_ text: String) throws -> [[String]] {
        let scalars = Array(text.unicodeScalars)
        var records: [[String]] = []
        var record: [String] = []
        var field = String.UnicodeScalarView()
        var line = 1
        var inQuotes = false, wasQuoted = false
        var i = 0
        func fail(_ reason: String) -> Failure { Failure(line: line, reason: reason) }
        while i < scalars.count {
            let c = scalars[i]
            i += 1
            if inQuotes {
                if c == "\"" {
                    if i < scalars.count && scalars[i] == "\"" {
                        field.append("\"")
                        i += 1
                    } else {
                        inQuotes = false
                    }
                } else {
                    if c == "\n" { line += 1 }
                    field.append(c)
                }
                continue
            }
            switch c {
            case ",":
                record.append(String(field))
                field = String.UnicodeScalarView()
                wasQuoted = false
            case "\"":
                guard field.isEmpty && !wasQuoted else { throw fail("a quote inside an unquoted field") }
                inQuotes = true
                wasQuoted = true
            case "\r", "\n":
                if c == "\r" {
                    guard i < scalars.count && scalars[i] == "\n" else { throw fail("a carriage return outside quotes") }
                    i += 1
                }
                record.append(String(field))
                records.append(record)
                record = []
                field = String.UnicodeScalarView()
                wasQuoted = false
                line += 1
            default:
                guard !wasQuoted else { throw fail("text after a closing quote") }
                field.append(c)
            }
        }
        if inQuotes { throw fail("an unterminated quoted field") }
        if !field.isEmpty || wasQuoted || !record.isEmpty {
            record.append(String(field))
            records.append(record)
        }
        return records
    }
}
