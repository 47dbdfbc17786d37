import Foundation
import PSPCData

extension Report {
    /// A results csv read whole and checked: the header must be the documented one (docs/runs.md) and every
    /// line must have as many fields, so a truncated or foreign file is reported by name instead of misread.
    public struct CSV {
        let path: String
        let header: [String]
        /// Data rows (the header excluded), each as long as the header.
        let rows: [[String]]

        public static func read(_ path: String, header expected: [String]) throws -> CSV {
            try read(path, oneOf: [expected])
        }

        /// Reads a csv whose header is one of `headers` (a file format that gained columns, older runs included).
        public static func read(_ path: String, oneOf headers: [[String]]) throws -> CSV {
            guard FileManager.default.fileExists(atPath: path) else {
                throw DataError.io(path: path, reason: "missing (the run has not written it)")
            }
            let text = String(decoding: try FileIO.read(path), as: UTF8.self)
            let records: [[String]]
            do { records = try CSVText.records(text) } catch { throw DataError.corrupt(path: path, reason: "\(error)") }
            guard let header = records.first else { throw DataError.corrupt(path: path, reason: "empty file") }
            guard headers.contains(header) else {
                let expected = headers.map { "\"" + $0.joined(separator: ",") + "\"" }.joined(separator: " or ")
                throw DataError.corrupt(
                    path: path, reason: "header is \"\(header.joined(separator: ","))\", expected \(expected)")
            }
            var rows: [[String]] = []
            for (n, row) in records.dropFirst().enumerated() {
                guard row.count == header.count else {
                    throw DataError.corrupt(
                        path: path,
                        reason: "record \(n + 2) has \(row.count) fields, the header \(header.count) (truncated?)")
                }
                rows.append(row)
            }
            return CSV(path: path, header: header, rows: rows)
        }

        /// The index of column `name`; a name the header lacks is an error naming the column and the file.
        public func column(_ name: String) throws -> Int {
            guard let index = header.firstIndex(of: name) else {
                throw DataError.corrupt(
                    path: path, reason: "no column \"\(name)\" (the header is \(header.joined(separator: ",")))")
            }
            return index
        }

        public func string(_ row: Int, _ name: String) throws -> String { rows[row][try column(name)] }

        /// The number in `row` (0-based data row) and column `name`; `nan`/`inf` as `RunNumber.text` writes them.
        func double(_ row: Int, _ name: String) throws -> Double {
            let text = try string(row, name)
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
            let text = try string(row, name)
            guard let value = Int(text) else {
                throw DataError.corrupt(
                    path: path, reason: "line \(row + 2), column \(name): \"\(text)\" is not an integer")
            }
            return value
        }
    }
}
