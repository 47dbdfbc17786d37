import Foundation
import PSPCData
import PSPCExperiments
import XCTest

/// `RunFigures`: the figures/ files each kind of run gets.
final class ReportRunFiguresTests: XCTestCase {
    private var root = ""

    override func setUpWithError() throws { root = try ReportFixtures.make() }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: root) }

    private func names(_ paths: [String]) -> [String] { paths.map { ($0 as NSString).lastPathComponent } }

    private func svg(_ path: String) throws -> String {
        let text = String(decoding: try FileIO.read(path), as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""), path)
        XCTAssertTrue(ReportPage.isWellFormedXML(text), path)
        return text
    }

    func testSweepFigures() throws {
        let forward = RunDirectory(root + "/forward")
        let written = try RunFigures.write(for: forward)
        XCTAssertEqual(names(written), ["mse-to-network.svg", "mse-to-x0.svg", "patch-size-error.svg"])
        XCTAssertEqual(written.first, forward.file("figures", "mse-to-network.svg"))
        let toNetwork = try svg(written[0])
        // One series per variant but the network, all labelled in the legend.
        XCTAssertFalse(toNetwork.contains("<title>network</title>"))
        for label in ["empirical", "gaussian", "pspc-square s=3", "pspc-square schedule", "pspc-flex lambda=0.5"] {
            XCTAssertTrue(toNetwork.contains("<title>\(label)</title>"), label)
        }
        XCTAssertTrue(try svg(written[1]).contains("<title>network</title>"))
        // Patch-size curves: one per grid t near 0.01, 0.1, ..., 30 (all 4 here), over the sizes 3, 5, 7.
        let sizes = try svg(written[2])
        for t in ["0.02", "0.3", "3.26", "10"] { XCTAssertTrue(sizes.contains("<title>t = \(t)</title>"), t) }
        XCTAssertEqual(ReportPage.count("<title>t = ", in: sizes), 4)

        // No pspc-square sizes in the reverse sweep: no patch-size figure.
        XCTAssertEqual(
            names(try RunFigures.write(for: RunDirectory(root + "/reverse"))), ["mse-to-network.svg", "mse-to-x0.svg"])
    }

    func testCalibrationFigures() throws {
        let written = try RunFigures.write(for: RunDirectory(root + "/calibration"))
        XCTAssertEqual(names(written), ["patch-size-error.svg", "schedule.svg"])
        let schedule = try svg(written[1])
        XCTAssertTrue(schedule.contains("Patch size schedule s(t)"))
        XCTAssertTrue(schedule.contains("Mask threshold schedule lambda(t)"))
        XCTAssertEqual(ReportPage.count("<title>paper, CIFAR-10</title>", in: schedule), 2)
        // The paper's CIFAR-10 sizes are drawn as steps from 3 to 32.
        XCTAssertTrue(schedule.contains(">32</text>") || schedule.contains(">30</text>"))

        // Without a lambda schedule, one panel.
        try FileManager.default.removeItem(atPath: root + "/calibration/lambda-schedule.json")
        let single = try svg(try RunFigures.write(for: RunDirectory(root + "/calibration"))[1])
        XCTAssertFalse(single.contains("lambda(t)"))
    }

    func testHeatmapFigures() throws {
        let written = try RunFigures.write(for: RunDirectory(root + "/heatmap"))
        XCTAssertEqual(names(written), ["locality.svg", "heatmaps.png"])
        let locality = try svg(written[0])
        XCTAssertTrue(locality.contains("<title>95 % of mass</title>"))
        let png = try FileIO.read(written[1])
        XCTAssertEqual(Array(png.prefix(4)), [0x89, 0x50, 0x4E, 0x47])
        let image = try PNG.decode(png, name: written[1])
        // 3 pixels (rows) x 4 t (columns) of 8x8 maps enlarged 14 times (112 pixels), 4 pixels apart.
        XCTAssertEqual(image.width, 4 + 4 * (112 + 4))
        XCTAssertEqual(image.height, 4 + 3 * (112 + 4))
        XCTAssertEqual(image.channels, 3)
    }

    func testSampleComparisonFigure() throws {
        let written = try RunFigures.write(for: RunDirectory(root + "/samples"))
        XCTAssertEqual(names(written), ["similarity.svg"])
        let matrix = try svg(written[0])
        XCTAssertTrue(matrix.contains("Pearson correlation"))
        XCTAssertTrue(matrix.contains("Mean L2 distance"))
        // Both matrices: 3 x 3 cells each, the diagonal written as 1 and 0.
        XCTAssertEqual(ReportPage.count("<rect x=", in: matrix) - 1, 18)
        XCTAssertEqual(ReportPage.count(">1</text>", in: matrix), 3)
    }

    func testFiguresAreDeterministic() throws {
        let run = RunDirectory(root + "/forward")
        let first = try RunFigures.write(for: run).map { try FileIO.read($0) }
        let second = try RunFigures.write(for: run).map { try FileIO.read($0) }
        XCTAssertEqual(first, second)
    }
}
