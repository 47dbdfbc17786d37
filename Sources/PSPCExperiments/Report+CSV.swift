import Foundation
import PSPCData

extension Report {
    /// A results csv read whole and checked: the header must be the documented one (docs/runs.md) and every
    /// line must have as many fields, so a truncated or foreign file is reported by name instead of misread.
    struct CSV {
        let path: String
        let header: [String]
        /// Data rows (the header excluded), each as long as the header.
        let rows: [[String]]

        static func read(_ path: String, header expected: [String]) throws -> CSV {
            guard FileManager.default.fileExists(atPath: path) else {
                throw DataError.io(path: path, reason: "missing (the run has not written it)")
            }
            let text = String(decoding: try FileIO.read(path), as: UTF8.self)
            var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map {
                $0.hasSuffix("\r") ? String($0.dropLast()) : String($0)
            }
            if lines.last == "" { lines.removeLast() }
            guard let first = lines.first else { throw DataError.corrupt(path: path, reason: "empty file") }
            let header = fields(first)
            guard header == expected else {
                throw DataError.corrupt(
                    path: path,
                    reason: "header is \"\(first)\", expected \"\(expected.joined(separator: ","))\"")
            }
            var rows: [[String]] = []
            for (n, line) in lines.dropFirst().enumerated() {
                let row = fields(line)
                guard row.count == header.count else {
                    throw DataError.corrupt(
                        path: path,
                        reason: "line \(n + 2) has \(row.count) fields, the header \(header.count) (truncated?)")
                }
                rows.append(row)
            }
            return CSV(path: path, header: header, rows: rows)
        }

        /// Fields of one line; double quotes protect commas ("" is a quote), as RFC 4180 writes them.
        static func fields(_ line: String) -> [String] {
            var fields: [String] = []
            var current = ""
            var quoted = false
            var closedQuote = false
            for character in line {
                if quoted {
                    if character == "\"" {
                        quoted = false
                        closedQuote = true
                    } else {
                        current.append(character)
                    }
                    continue
                }
                switch character {
                case "\"":
                    // A quote right after a closing one is an escaped quote inside the field.
                    if closedQuote { current.append("\"") }
                    quoted = true
                case ",":
                    fields.append(current)
                    current = ""
                default:
                    current.append(character)
                }
                closedQuote = false
            }
            fields.append(current)
            return fields
        }

        func column(_ name: String) -> Int { header.firstIndex(of: name) ?? 0 }

        func string(_ row: Int, _ name: String) -> String { rows[row][column(name)] }

        /// The number in `row` (0-based data row) and column `name`; `nan`/`inf` as `RunNumber.text` writes them.
        func double(_ row: Int, _ name: String) throws -> Double {
            let text = string(row, name)
            switch text {
            case "nan": return .nan
            case "inf": return .infinity
            case "-inf": return -.infinity
            default:
                guard let value = Double(text) else {
                    throw DataError.corrupt(
                        path: path, reason: "line \(row + 2), column \(name): \"\(text)\" is not a number")
                }
                return value
            }
        }

        func int(_ row: Int, _ name: String) throws -> Int {
            let text = string(row, name)
            guard let value = Int(text) else {
                throw DataError.corrupt(
                    path: path, reason: "line \(row + 2), column \(name): \"\(text)\" is not an integer")
            }
            return value
        }
    }
}
