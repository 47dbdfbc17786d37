import Foundation
import PSPCExperiments
import XCTest

/// The SVG plotting layer: axes, gaps for values a log axis cannot show, escaping, matrices.
final class SVGPlotTests: XCTestCase {
    func testLogTicksAreDecadesWithPlainLabels() {
        XCTAssertEqual(SVGAxis.logTicks(low: 0.001, high: 100), [0.001, 0.01, 0.1, 1, 10, 100])
        XCTAssertEqual(
            SVGAxis.logTicks(low: 0.001, high: 100).map(SVGAxis.logLabel), ["0.001", "0.01", "0.1", "1", "10", "100"])
        XCTAssertEqual(SVGAxis.logLabel(1e-5), "1e-5")
        XCTAssertEqual(SVGAxis.logLabel(1e6), "1e6")
        // Ranges of many decades label every 2nd or 3rd one.
        XCTAssertEqual(SVGAxis.logTicks(low: 1e-10, high: 1), [1e-10, 1e-8, 1e-6, 1e-4, 1e-2, 1])
        XCTAssertEqual(SVGAxis.logTicks(low: 1, high: 1), [])
        XCTAssertEqual(SVGAxis.logTicks(low: -1, high: 10), [])
    }

    func testLogAxisFitsWholeDecadesAroundTheData() {
        let layout = SVGAxis("t", scale: .log).layout(for: [0.002, 80, .nan, 0, -3])
        XCTAssertEqual(layout.low, 0.001)
        XCTAssertEqual(layout.high, 100)
        XCTAssertEqual(layout.labels, ["0.001", "0.01", "0.1", "1", "10", "100"])
        XCTAssertEqual(layout.fraction(0.1) ?? .nan, 0.4, accuracy: 1e-12)
        XCTAssertNil(layout.fraction(0))
        XCTAssertNil(layout.fraction(.nan))
        XCTAssertTrue(layout.minorTicks.contains(0.002))
    }

    func testLinearTicksAreRoundNumbers() {
        let layout = SVGAxis("s").layout(for: [3, 32])
        XCTAssertEqual(layout.ticks, [0, 10, 20, 30, 40])
        XCTAssertEqual(layout.labels.first, "0")
        let small = SVGAxis("lambda").layout(for: [0.3, 0.7])
        XCTAssertEqual(small.labels, ["0.3", "0.4", "0.5", "0.6", "0.7"])
        XCTAssertEqual(SVGAxis("flat").layout(for: [2, 2]).ticks.count > 1, true)
    }

    func testValuesALogAxisCannotShowBreakTheLine() throws {
        let plot = SVGPlot(
            title: "gaps", x: SVGAxis("t", scale: .log), y: SVGAxis("mse", scale: .log),
            series: [SVGPlot.Series("a", x: [0.01, 0.1, 1, 10, 100, 1000], y: [1e-3, .nan, 1e-2, 0, 1e-1, -1])])
        let svg = plot.render()
        XCTAssertTrue(ReportPage.isWellFormedXML(svg))
        XCTAssertFalse(svg.lowercased().contains("nan"))
        XCTAssertFalse(svg.contains("inf"))
        let path = try XCTUnwrap(
            ReportPage.matches(##"<path d="(M[^"]*)" fill="none" stroke="#0072B2""##, in: svg).first)
        // Three drawable points, each cut off from the others: three moves, no lines.
        XCTAssertEqual(ReportPage.count("M", in: path[1]), 3, path[1])
        XCTAssertEqual(ReportPage.count("L", in: path[1]), 0)
        // The three points and the legend's swatch.
        XCTAssertEqual(ReportPage.count("<circle", in: svg), 4)
    }

    func testBandsAreShadedPolygonsUnderTheCurvesBrokenWhereAPointHasNone() throws {
        let x = [0.01, 0.1, 1, 10, 100]
        let plot = SVGPlot(
            title: "bands", x: SVGAxis("t", scale: .log), y: SVGAxis("mse", scale: .log),
            series: [
                SVGPlot.Series(
                    "a", x: x, y: [1e-3, 2e-3, 3e-3, 4e-3, 5e-3],
                    band: (low: [5e-4, 1e-3, .nan, 2e-3, 4e-3], high: [2e-3, 3e-3, .nan, 9e-3, 0.2])),
                SVGPlot.Series("b", x: x, y: [1, 1, 1, 1, 1]),
            ])
        let svg = plot.render()
        XCTAssertTrue(ReportPage.isWellFormedXML(svg))
        XCTAssertFalse(svg.lowercased().contains("nan"))
        let polygons = ReportPage.matches(##"<polygon class="band" points="([^"]*)" fill="([^"]*)""##, in: svg)
        // The point without an interval splits the band in two runs of two points: 4 vertices each.
        XCTAssertEqual(polygons.count, 2)
        for polygon in polygons {
            XCTAssertEqual(polygon[1].split(separator: " ").count, 4, polygon[1])
            XCTAssertEqual(polygon[2], "#0072B2", "a band takes its curve's colour")
        }
        // Below every curve, and the y axis reaches the band's top (0.2 lies inside the plot's decades).
        let firstCurve = try XCTUnwrap(svg.range(of: "stroke-width=\"1.8\""))
        let lastBand = try XCTUnwrap(svg.range(of: "<polygon", options: .backwards))
        XCTAssertLessThan(lastBand.lowerBound, firstCurve.lowerBound)
        XCTAssertTrue(svg.contains(">1</text>"), "the axis spans up to the band's and curve b's values")
        // No band asked: no polygon.
        let plain = SVGPlot(
            title: "plain", x: SVGAxis("t", scale: .log), y: SVGAxis("mse", scale: .log),
            series: [SVGPlot.Series("a", x: x, y: [1, 2, 3, 4, 5])])
        XCTAssertFalse(plain.render().contains("<polygon"))
    }

    func testASeriesWithNothingToDrawStillMakesAPlot() {
        let plot = SVGPlot(
            title: "empty", x: SVGAxis("t", scale: .log), y: SVGAxis("y", scale: .log),
            series: [SVGPlot.Series("zeros", x: [1, 2], y: [0, 0]), SVGPlot.Series("none", x: [], y: [])])
        let svg = plot.render()
        XCTAssertTrue(ReportPage.isWellFormedXML(svg))
        XCTAssertFalse(svg.lowercased().contains("nan"))
    }

    func testTextIsEscapedForXML() {
        XCTAssertEqual(SVG.escape("a < b & \"c\" > 'd'"), "a &lt; b &amp; &quot;c&quot; &gt; &#39;d&#39;")
        XCTAssertEqual(SVG.escape("bell\u{7}"), "bell")
        let plot = SVGPlot(
            title: "<script>&", x: SVGAxis("t <x>"), y: SVGAxis("\"y\""),
            series: [SVGPlot.Series("s=1 & <2>", x: [1, 2], y: [3, 4])])
        let svg = plot.render()
        XCTAssertTrue(ReportPage.isWellFormedXML(svg))
        XCTAssertFalse(svg.contains("<script>"))
        XCTAssertTrue(svg.contains("&lt;script&gt;&amp;"))
        XCTAssertTrue(svg.contains("s=1 &amp; &lt;2&gt;"))
        let matrix = SVGMatrix(title: "m", rowLabels: ["<a>"], columnLabels: ["&"], values: [[1]])
        XCTAssertTrue(ReportPage.isWellFormedXML(matrix.render()))
    }

    func testSeriesBeyondThePaletteAreDashedAndTheLegendIsOutside() throws {
        let series = (0..<12).map { k in SVGPlot.Series("series \(k)", x: [1, 2, 3], y: [1, Double(k + 2), 3]) }
        let plot = SVGPlot(title: "many", x: SVGAxis("x"), y: SVGAxis("y"), series: series, width: 600, height: 200)
        let svg = plot.render()
        XCTAssertTrue(ReportPage.isWellFormedXML(svg))
        // Palette colours for the first 10, dashes from the 11th on (curve and legend swatch).
        XCTAssertEqual(ReportPage.count("stroke-dasharray=\"6 3\"", in: svg), 4)
        // The legend (12 rows of 17 px) made the plot taller than asked.
        XCTAssertGreaterThan(plot.height, 200)
        // Legend swatches start right of the plot frame.
        let frame = try XCTUnwrap(
            ReportPage.matches(#"<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)""#, in: svg).dropFirst().first)
        let right = (Double(frame[1]) ?? 0) + (Double(frame[2]) ?? 0)
        let swatches = ReportPage.matches(#"<path d="M([\d.]+) [\d.]+h24""#, in: svg).compactMap { Double($0[1]) }
        XCTAssertEqual(swatches.count, 12)
        XCTAssertTrue(swatches.allSatisfy { $0 > right })
    }

    func testStepsHoldEachValueToTheMidpoint() throws {
        let plot = SVGPlot(
            title: "schedule", x: SVGAxis("t", scale: .log), y: SVGAxis("s"),
            series: [SVGPlot.Series("s", x: [10, 1, 0.1], y: [32, 7, 3], style: .steps)])
        let svg = plot.render()
        let path = try XCTUnwrap(ReportPage.matches(#"<path d="(M[^"]*)" fill="none""#, in: svg).first?[1])
        XCTAssertEqual(ReportPage.count("H", in: path), 4)
        XCTAssertEqual(ReportPage.count("V", in: path), 2)
    }

    func testMatrixWritesItsNumbersAndMarksMissingOnes() {
        let matrix = SVGMatrix(
            title: "Pearson", rowLabels: ["a", "b"], columnLabels: ["a", "b"], values: [[1, 0.4567], [.nan, 1]])
        let svg = matrix.render()
        XCTAssertTrue(ReportPage.isWellFormedXML(svg))
        XCTAssertTrue(svg.contains(">0.457</text>"))
        XCTAssertTrue(svg.contains(">–</text>"))
        XCTAssertFalse(svg.lowercased().contains("nan"))
        XCTAssertGreaterThan(matrix.width, 2 * 48)
    }

    func testRowsPlaceFiguresSideBySide() {
        let a = SVGMatrix(title: "a", rowLabels: ["x"], columnLabels: ["x"], values: [[1]])
        let row = SVGRow([a, a], gap: 10)
        XCTAssertEqual(row.width, 2 * a.width + 10)
        XCTAssertTrue(row.render().contains("translate(\(SVG.coordinate(a.width + 10)),0)"))
        XCTAssertTrue(ReportPage.isWellFormedXML(row.render()))
    }

    func testShortNumbers() {
        XCTAssertEqual(SVG.shortNumber(0.012345678), "0.01235")
        XCTAssertEqual(SVG.shortNumber(80), "80")
        XCTAssertEqual(SVG.shortNumber(12345.6), "12346")
        XCTAssertEqual(SVG.shortNumber(1.23456e-7), "1.235e-7")
        XCTAssertEqual(SVG.shortNumber(2.5e7), "2.500e7")
        XCTAssertEqual(SVG.shortNumber(0), "0")
        XCTAssertEqual(SVG.coordinate(12.50), "12.5")
        XCTAssertEqual(SVG.coordinate(3), "3")
    }
}
