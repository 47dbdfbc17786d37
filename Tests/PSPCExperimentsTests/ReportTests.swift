import Foundation
import PSPCData
import PSPCExperiments
import XCTest

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// Reads a report page back, independently of `Report`'s own code, so that the checks can catch its mistakes.
enum ReportPage {
    struct NumberCell {
        var csv: String
        var row: Int
        var column: String
        var value: String
        var text: String
    }

    static func matches(_ pattern: String, in text: String) -> [[String]] {
        guard let regex = try? NSRegularExpression(pattern: pattern, options: [.dotMatchesLineSeparators]) else {
            return []
        }
        let range = NSRange(text.startIndex..., in: text)
        return regex.matches(in: text, range: range).map { match in
            (0..<match.numberOfRanges).map { i in
                Range(match.range(at: i), in: text).map { String(text[$0]) } ?? ""
            }
        }
    }

    static func unescape(_ text: String) -> String {
        text.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&#39;", with: "'")
            .replacingOccurrences(of: "&amp;", with: "&")
    }

    /// Every table cell that names a csv row and column.
    static func numberCells(_ html: String) -> [NumberCell] {
        var cells: [NumberCell] = []
        for table in matches(#"<table class="num" data-csv="([^"]*)">(.*?)</table>"#, in: html) {
            let csv = unescape(table[1])
            let pattern = #"<td[^>]*? data-row="(\d+)" data-column="([^"]*)" data-value="([^"]*)">([^<]*)</td>"#
            for cell in matches(pattern, in: table[2]) {
                cells.append(
                    NumberCell(
                        csv: csv, row: Int(cell[1]) ?? -1, column: cell[2], value: cell[3], text: unescape(cell[4])))
            }
        }
        return cells
    }

    /// A csv file as header and rows of fields (the files hold no quoted fields).
    static func readCSV(_ path: String) throws -> (header: [String], rows: [[String]]) {
        let lines = String(decoding: try FileIO.read(path), as: UTF8.self).split(separator: "\n").map(String.init)
        let header = lines.first.map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        return (
            header ?? [],
            lines.dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        )
    }

    /// Descriptions of the cells whose exact value is not the csv's number, or whose display is not that
    /// number rounded to 4 significant digits; empty when every number traces back.
    static func mismatches(_ html: String) throws -> [String] {
        var problems: [String] = []
        var files: [String: (header: [String], rows: [[String]])] = [:]
        for cell in numberCells(html) {
            if files[cell.csv] == nil { files[cell.csv] = try readCSV(cell.csv) }
            guard let file = files[cell.csv], let column = file.header.firstIndex(of: cell.column),
                cell.row >= 0, cell.row < file.rows.count, column < file.rows[cell.row].count
            else {
                problems.append("\(cell.csv): no row \(cell.row) column \(cell.column)")
                continue
            }
            let field = file.rows[cell.row][column]
            guard let number = Double(field) else {
                problems.append("\(cell.csv) row \(cell.row) \(cell.column): \"\(field)\" is not a number")
                continue
            }
            if RunNumber.text(number) != cell.value {
                problems.append("\(cell.csv) row \(cell.row) \(cell.column): file \(field), page \(cell.value)")
            }
            let shown = Double(cell.text) ?? .nan
            if !(abs(shown - number) <= 5.0001e-4 * abs(number)) {
                problems.append("\(cell.csv) row \(cell.row) \(cell.column): \(field) displayed as \(cell.text)")
            }
        }
        return problems
    }

    /// The outermost `<svg>...</svg>` elements of the page.
    static func svgs(_ html: String) -> [String] {
        matches(#"<svg\b.*?</svg>"#, in: html).map { $0[0] }
    }

    /// The bytes of every data:image/png URL; nil for one that is not base64.
    static func pngs(_ html: String) -> [[UInt8]?] {
        matches(#"data:image/png;base64,([A-Za-z0-9+/=]*)""#, in: html).map { match in
            Data(base64Encoded: match[1]).map { Array($0) }
        }
    }

    static func isWellFormedXML(_ text: String) -> Bool { XMLParser(data: Data(text.utf8)).parse() }

    static func count(_ needle: String, in text: String) -> Int { text.components(separatedBy: needle).count - 1 }
}

final class ReportTests: XCTestCase {
    private var root = ""

    override func setUpWithError() throws { root = try ReportFixtures.make() }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: root) }

    private func writeReport() throws -> String {
        let path = try Report.write(runs: try RunDirectory.discover([root]), to: root + "/report")
        XCTAssertEqual(path, root + "/report/index.html")
        return String(decoding: try FileIO.read(path), as: UTF8.self)
    }

    func testReportHasEverySectionAndOnlyInlineResources() throws {
        let html = try writeReport()
        for title in [
            "Forward process sweep: forward", "Reverse process sweep: reverse", "Calibration: calibration",
            "Gradient heatmaps: heatmap", "Sample comparison: samples",
        ] {
            XCTAssertTrue(html.contains("<h2>\(title)</h2>"), title)
        }
        // Sections come by kind, whatever the folder order.
        let forward = try XCTUnwrap(html.range(of: "Forward process sweep"))
        let calibration = try XCTUnwrap(html.range(of: "<h2>Calibration"))
        XCTAssertLessThan(forward.lowerBound, calibration.lowerBound)
        for external in ["<script", "<link", "src=\"http", "href=\"http", "url(", "@import"] {
            XCTAssertFalse(html.contains(external), external)
        }
        // The header says what each run is, escaped.
        XCTAssertTrue(html.contains("pspc sweep forward --out \(root)/forward --queries 10"))
        XCTAssertTrue(html.contains("fashion-mnist train"))
        XCTAssertTrue(html.contains("&lt;ema&gt; &amp; co"))
        XCTAssertTrue(html.contains("4 t, 10 … 0.02"))
        XCTAssertTrue(html.contains("Generated "))
    }

    func testEveryFigureIsWellFormedAndEveryImageIsPNG() throws {
        let html = try writeReport()
        XCTAssertEqual(ReportPage.count("<svg", in: html), ReportPage.count("</svg>", in: html))
        let svgs = ReportPage.svgs(html)
        // forward: 3 plots, reverse: 2 (no pspc-square sizes), calibration: 2, heatmap: 1, samples: 1.
        XCTAssertEqual(svgs.count, 9)
        for svg in svgs {
            XCTAssertTrue(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""))
            XCTAssertTrue(ReportPage.isWellFormedXML(svg), String(svg.prefix(200)))
        }
        let pngs = ReportPage.pngs(html)
        // Image rows: 3 distinct grid times x (x0, z, 8 variants) forward, x (x0, z, 4) reverse; 3 pixels x 4 t
        // of heatmaps; the samples grid.
        XCTAssertEqual(pngs.count, 3 * 10 + 3 * 6 + 12 + 1)
        for png in pngs {
            let bytes = try XCTUnwrap(png)
            XCTAssertEqual(Array(bytes.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
            XCTAssertNoThrow(try PNG.decode(bytes, name: "inline"))
        }
        XCTAssertEqual(ReportPage.count("<img ", in: html), pngs.count)
    }

    func testMSEFiguresShadeTheIntervalsOfResultsThatHaveThem() throws {
        // The fixture's results.csv predates the intervals: no bands.
        let plain = ReportPage.svgs(try writeReport())
        XCTAssertFalse(plain.contains { $0.contains("class=\"band\"") })
        // The same rows with intervals (each MSE x 0.8 and x 1.25), as sweeps write them now.
        let run = try XCTUnwrap(try RunDirectory.discover([root]).first { try $0.kind() == "sweep-forward" })
        let rows = try SweepResults.read(run).map { row -> SweepRow in
            var row = row
            row.mseToNetworkInterval = .init(low: row.mseToNetwork * 0.8, high: row.mseToNetwork * 1.25)
            row.mseToX0Interval = .init(low: row.mseToX0 * 0.8, high: row.mseToX0 * 1.25)
            return row
        }
        try run.writeText(SweepResults.csv(rows), to: "results.csv")
        let svgs = ReportPage.svgs(try writeReport())
        let network = try XCTUnwrap(svgs.first { $0.contains("MSE to the network") && $0.contains("forward process") })
        let variants = Set(rows.filter { $0.method != "network" }.map(\.label))
        // One band per variant (the fixture's t all lie on the plot), and the subtitle says what they are.
        XCTAssertEqual(ReportPage.count("class=\"band\"", in: network), variants.count)
        XCTAssertTrue(network.contains("bands: 95 % bootstrap intervals over queries"))
        let x0 = try XCTUnwrap(svgs.first { $0.contains("MSE to x0") && $0.contains("forward process") })
        XCTAssertEqual(ReportPage.count("class=\"band\"", in: x0), Set(rows.map(\.label)).count)
    }

    func testCalibrationShowsWinFractionsAndTheHeldOutCheckWhenWritten() throws {
        XCTAssertFalse(try writeReport().contains("How sure each choice is"))
        let run = try XCTUnwrap(try RunDirectory.discover([root]).first { try $0.kind() == "calibration" })
        let best = try ReportPage.readCSV(run.file("best.csv"))
        let col = { (name: String) in best.header.firstIndex(of: name)! }
        var wins = "t_index,t,method,param,mse_to_network,win_fraction\n"
        var heldOut =
            "t_index,t,method,chosen_param,mse_in_sample,mse_held_out,held_out_best_param,mse_held_out_best,ratio_to_held_out_best\n"
        for (n, row) in best.rows.enumerated() {
            let mse = Double(row[col("mse_to_network")])!
            wins += [row[col("t_index")], row[col("t")], row[col("method")], row[col("best_param")], row[col("mse_to_network")], "0.\(n + 1)"]
                .joined(separator: ",") + "\n"
            heldOut += [
                row[col("t_index")], row[col("t")], row[col("method")], row[col("best_param")], row[col("mse_to_network")],
                "\(mse * 1.5)", row[col("best_param")], "\(mse * 1.5)", "1",
            ].joined(separator: ",") + "\n"
        }
        try run.writeText(wins, to: "wins.csv")
        try run.writeText(heldOut, to: "held-out.csv")
        let html = try writeReport()
        XCTAssertTrue(html.contains("<h3>How sure each choice is</h3>"))
        XCTAssertTrue(html.contains("<h3>Held-out check</h3>"))
        // Every number in the new tables is its file's number, in the cell the file names.
        XCTAssertEqual(try ReportPage.mismatches(html), [])
        let shown = ReportPage.numberCells(html).filter { $0.csv.hasSuffix("wins.csv") && $0.column == "win_fraction" }
        XCTAssertEqual(shown.count, best.rows.count)
    }

    func testSweepsShowTheirPairedRatiosWhenWritten() throws {
        XCTAssertFalse(try writeReport().contains("<h3>Paired ratios</h3>"))
        let run = try XCTUnwrap(try RunDirectory.discover([root]).first { try $0.kind() == "sweep-forward" })
        let rows = try SweepResults.read(run)
        // Three queries per row, spread about the row's MSE.
        let perQuery = rows.map { row in
            (network: [0.5, 1, 1.5].map { $0 * row.mseToNetwork }, x0: [0.7, 1, 1.3].map { $0 * row.mseToX0 })
        }
        let ratios = PairedRatios.compute(rows: rows, perQuery: perQuery)
        try run.writeText(PairedRatios.csv(ratios), to: "ratios.csv")
        let html = try writeReport()
        XCTAssertTrue(html.contains("<h3>Paired ratios</h3>"))
        XCTAssertEqual(try ReportPage.mismatches(html), [])
        // The network against the optimal denoiser (to x0) at every t, with its interval.
        let cells = ReportPage.numberCells(html).filter { $0.csv == run.file("ratios.csv") }
        let networkRows = Set(ratios.indices.filter { ratios[$0].label == "network" && ratios[$0].baselineRole == "optimal" })
        XCTAssertEqual(networkRows.count, Set(rows.map(\.tIndex)).count)
        for column in ["ratio", "ci_low", "ci_high"] {
            XCTAssertTrue(networkRows.isSubset(of: Set(cells.filter { $0.column == column }.map(\.row))), column)
        }
        // The closest method of each t is named beside its ratio to the optimal denoiser.
        for r in ratios where r.target == "network" && r.baselineRole == "closest" && r.label == r.baseline {
            XCTAssertTrue(html.contains("<td class=\"text\">\(r.label)</td>"), r.label)
        }
    }

    func testEveryTableNumberIsTheResultsFilesNumber() throws {
        let html = try writeReport()
        XCTAssertEqual(try ReportPage.mismatches(html), [])
        let cells = ReportPage.numberCells(html)
        // Every number of the csv files shown appears in a table: each forward row's MSEs (to the network for the
        // variants, to x0 for all), every best-of, locality and similarity value.
        func shown(_ file: String, _ column: String) -> Set<Int> {
            Set(cells.filter { $0.csv == root + "/" + file && $0.column == column }.map(\.row))
        }
        let results = try ReportPage.readCSV(root + "/forward/results.csv")
        let variants = results.rows.indices.filter { results.rows[$0][2] != "network" }
        XCTAssertEqual(shown("forward/results.csv", "mse_to_network"), Set(variants))
        XCTAssertEqual(shown("forward/results.csv", "mse_to_x0"), Set(results.rows.indices))
        let best = try ReportPage.readCSV(root + "/calibration/best.csv")
        XCTAssertEqual(shown("calibration/best.csv", "mse_to_network"), Set(best.rows.indices))
        XCTAssertEqual(shown("calibration/best.csv", "best_param"), Set(best.rows.indices))
        for column in ["side50", "side75", "side95", "t"] {
            XCTAssertEqual(shown("heatmap/locality.csv", column), Set(0..<4), column)
        }
        XCTAssertEqual(shown("samples/similarity.csv", "pearson"), Set(0..<9))
        XCTAssertEqual(shown("samples/similarity.csv", "mean_l2"), Set(0..<9))
        // The median Pearson correlation and both intervals, once per unordered pair (rows a < b of 3 x 3).
        for column in ["pearson_median", "pearson_median_ci_low", "pearson_median_ci_high", "mean_l2_ci_low", "mean_l2_ci_high"] {
            XCTAssertEqual(shown("samples/similarity.csv", column), [1, 2, 5], column)
        }
    }

    func testAnAlteredResultsValueIsDetected() throws {
        let html = try writeReport()
        let path = root + "/forward/results.csv"
        var (header, rows) = try ReportPage.readCSV(path)
        let column = try XCTUnwrap(header.firstIndex(of: "mse_to_network"))
        // One unit in the last place: a report that rounded or recomputed anything would be caught like this.
        let original = try XCTUnwrap(Double(rows[3][column]))
        rows[3][column] = RunNumber.text(original.nextUp)
        let text = ([header] + rows).map { $0.joined(separator: ",") }.joined(separator: "\n") + "\n"
        try FileIO.writeAtomically(Array(text.utf8), to: path)
        let problems = try ReportPage.mismatches(html)
        XCTAssertEqual(problems.count, 1, "\(problems)")
        XCTAssertTrue(problems.first?.contains("results.csv row 3 mse_to_network") ?? false, "\(problems)")
        // And a display text that is not the value rounded is caught too.
        let wrongDisplay = html.replacingOccurrences(
            of: "data-value=\"\(RunNumber.text(original))\">\(Report.display(original))<",
            with: "data-value=\"\(RunNumber.text(original))\">\(Report.display(original * 1.01))<")
        rows[3][column] = RunNumber.text(original)
        let restored = ([header] + rows).map { $0.joined(separator: ",") }.joined(separator: "\n") + "\n"
        try FileIO.writeAtomically(Array(restored.utf8), to: path)
        XCTAssertEqual(try ReportPage.mismatches(html), [])
        let displayProblems = try ReportPage.mismatches(wrongDisplay)
        XCTAssertEqual(displayProblems.count, 1, "\(displayProblems)")
    }

    func testTheBestNonNetworkVariantOfEachTIsMarked() throws {
        let html = try writeReport()
        let table = try XCTUnwrap(
            ReportPage.matches(#"<h3>MSE to the network</h3>.*?<tbody>(.*?)</tbody>"#, in: html).first?[1])
        let rows = ReportPage.matches(#"<tr>(.*?)</tr>"#, in: table).map { $0[1] }
        XCTAssertEqual(rows.count, 4)
        for row in rows {
            let values = ReportPage.matches(#"<td([^>]*)data-column="mse_to_network" data-value="([^"]*)""#, in: row)
            let numbers = values.compactMap { Double($0[2]) }
            let marked = values.filter { $0[1].contains("class=\"best\"") }.compactMap { Double($0[2]) }
            XCTAssertEqual(numbers.count, 7)
            XCTAssertEqual(marked, [numbers.min() ?? .nan])
        }
    }

    func testImageGridsAreDrawnAtTheNearestGridTimes() throws {
        let html = try writeReport()
        // Grid 10, 3.26, 0.3, 0.02; requested 0.3, 1.09, 3.26, 10: 1.09 is nearer 3.26 in log t.
        for heading in ["t = 0.3 (grid index 2)", "t = 3.26 (grid index 1)", "t = 10 (grid index 0)"] {
            XCTAssertEqual(ReportPage.count("<h4>\(heading)</h4>", in: html), 2, heading)
        }
        XCTAssertFalse(html.contains("(grid index 3)"))
        let custom = try Report.write(
            runs: [RunDirectory(root + "/forward")], to: root + "/report-2", imageTimes: [0.01])
        let text = String(decoding: try FileIO.read(custom), as: UTF8.self)
        XCTAssertTrue(text.contains("<h4>t = 0.02 (grid index 3)</h4>"))
        XCTAssertFalse(text.contains("Calibration"))
        XCTAssertEqual(ReportPage.count("<h2", in: text), 2)
    }

    func testTruncatedResultsAreReportedByName() throws {
        let path = root + "/forward/results.csv"
        let bytes = try FileIO.read(path)
        try FileIO.writeAtomically(Array(bytes.prefix(bytes.count - 20)), to: path)
        assertDataError(try Report.write(runs: [RunDirectory(root + "/forward")], to: root + "/r"), naming: path)
        assertDataError(try RunFigures.write(for: RunDirectory(root + "/forward")), naming: path)
        // Cut at a line end: whole variants or times are missing, which the grid in config.json tells.
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n")
        try FileIO.writeAtomically(Array((lines.dropLast(8).joined(separator: "\n") + "\n").utf8), to: path)
        assertDataError(try RunFigures.write(for: RunDirectory(root + "/forward")), naming: path, saying: "truncated")
        try FileIO.writeAtomically(Array((lines.dropLast(3).joined(separator: "\n") + "\n").utf8), to: path)
        assertDataError(try RunFigures.write(for: RunDirectory(root + "/forward")), naming: path, saying: "truncated")
    }

    func testMissingFilesAreReportedByName() throws {
        let npy = root + "/forward/outputs/t01/empirical.npy"
        try FileManager.default.removeItem(atPath: npy)
        assertDataError(try Report.write(runs: [RunDirectory(root + "/forward")], to: root + "/r"), naming: npy)

        let heatmaps = root + "/heatmap/heatmaps.npy"
        try FileManager.default.removeItem(atPath: heatmaps)
        assertDataError(try RunFigures.write(for: RunDirectory(root + "/heatmap")), naming: heatmaps)

        let png = root + "/samples/samples.png"
        try FileManager.default.removeItem(atPath: png)
        assertDataError(try Report.write(runs: [RunDirectory(root + "/samples")], to: root + "/r"), naming: png)

        let best = root + "/calibration/best.csv"
        try FileIO.writeAtomically(Array("t_index,t,method\n".utf8), to: best)
        assertDataError(try RunFigures.write(for: RunDirectory(root + "/calibration")), naming: best, saying: "header")

        let z = root + "/reverse/z/t00.npy"
        try FileIO.writeAtomically(Array(try FileIO.read(z).prefix(100)), to: z)
        assertDataError(try Report.write(runs: [RunDirectory(root + "/reverse")], to: root + "/r"), naming: z)
    }

    func testRunsOfOtherKindsAreListedWithoutASection() throws {
        let other = RunDirectory(root + "/other")
        try other.prepare(config: .object([("kind", .string("benchmark")), ("version", .int(1))]))
        let path = try Report.write(runs: [other, RunDirectory(root + "/heatmap")], to: root + "/r")
        let html = String(decoding: try FileIO.read(path), as: UTF8.self)
        XCTAssertTrue(html.contains("<td>benchmark</td>"))
        XCTAssertTrue(html.contains("incomplete (no done file)"))
        XCTAssertEqual(ReportPage.count("<h2", in: html), 2)
        assertDataError(try RunFigures.write(for: other), naming: other.file("config.json"), saying: "benchmark")
    }

    /// Paper-sized runs (18 grid times, 28x28 images, 28^4 heatmaps) go through whole; with PSPC_REPORT_KEEP set
    /// to a folder, the runs and the report stay there (scripts/screenshot-report.sh looks at them).
    func testPaperSizedRunsMakeACompleteReport() throws {
        let keep = ProcessInfo.processInfo.environment["PSPC_REPORT_KEEP"]
        let runs = try ReportFixtures.make(.paper, in: keep.map { $0 + "/runs" })
        defer { if keep == nil { try? FileManager.default.removeItem(atPath: runs) } }
        let discovered = try RunDirectory.discover([runs])
        for run in discovered { XCTAssertFalse(try RunFigures.write(for: run).isEmpty) }
        let path = try Report.write(runs: discovered, to: keep ?? (runs + "/report"))
        let html = String(decoding: try FileIO.read(path), as: UTF8.self)
        XCTAssertEqual(try ReportPage.mismatches(html), [])
        XCTAssertEqual(
            ReportPage.numberCells(html).filter { $0.column == "mse_to_network" }.count, 18 * 7 + 18 * 3 + 36)
        for svg in ReportPage.svgs(html) { XCTAssertTrue(ReportPage.isWellFormedXML(svg)) }
        XCTAssertTrue(html.contains("<h4>t = 1.085 (grid index 10)</h4>"))
    }

    private func assertDataError<T>(
        _ expression: @autoclosure () throws -> T, naming path: String, saying word: String? = nil,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        do {
            _ = try expression()
            XCTFail("no error for \(path)", file: file, line: line)
        } catch let error as DataError {
            XCTAssertTrue(error.description.contains(path), "\(error)", file: file, line: line)
            if let word { XCTAssertTrue(error.description.contains(word), "\(error)", file: file, line: line) }
            XCTAssertFalse(error.description.contains("\n"), file: file, line: line)
        } catch {
            XCTFail("not a DataError: \(error)", file: file, line: line)
        }
    }
}
