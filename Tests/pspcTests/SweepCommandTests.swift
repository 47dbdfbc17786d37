import Foundation
import PSPCData
import PSPCTestSupport
import XCTest

/// `pspc sweep` end to end with real processes: local workers and the Python network endpoint.
final class SweepCommandTests: XCTestCase {
    static func mse(_ a: [Double], _ b: [Double]) -> Double {
        zip(a, b).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } / Double(a.count)
    }

    /// The rows of a results.csv, by "t_index|label".
    static func rows(_ path: String) throws -> [String: [String]] {
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").dropFirst()
        var rows: [String: [String]] = [:]
        for line in lines {
            let f = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            rows["\(f[0])|\(f[4])"] = f
        }
        return rows
    }

    /// The sweep's MSEs equal those of `pspc denoise` outputs on the sweep's own z (1e-6 relative); a sweep
    /// killed with SIGKILL and re-run writes the same results bytes as an uninterrupted one, and leaves no
    /// worker or endpoint process behind.
    func testSweepMatchesDenoiseAndResumesAfterSIGKILL() throws {
        let work = try CommandRunner.temporaryDirectory("sweep")
        defer { try? FileManager.default.removeItem(atPath: work) }
        try NetworkFixture.makeNetwork(at: "\(work)/net.pt")
        try CommandRunner.succeed(["ingest", "--source", "fashion-mnist:train", "--limit", "300", "--shards", "3", "--out", "\(work)/data"])
        let env = NetworkFixture.environment
        func sweep(_ out: String) -> [String] {
            [
                "sweep", "forward", "--data", "\(work)/data", "--local-workers", "2", "--local-network", "\(work)/net.pt",
                "--methods", "empirical,gaussian,pspc-square", "--patch-sizes", "3,7,11", "--grid", "edm:6",
                "--queries", "24", "--seed", "5", "--out", out,
            ]
        }
        // A bad setting found after the run directory was made leaves nothing behind, so the fixed command runs.
        var tooMany = sweep("\(work)/whole")
        tooMany[tooMany.firstIndex(of: "24")!] = "100000"
        let refused = try CommandRunner.run(tooMany, environment: env)
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stderr.contains("asked for 100000 images, the set has 600"), refused.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(work)/whole"))
        let whole = try CommandRunner.succeed(sweep("\(work)/whole"), environment: env)
        XCTAssertTrue(whole.stderr.contains("throughput:"), whole.stderr)
        let rows = try Self.rows("\(work)/whole/results.csv")
        XCTAssertEqual(rows.count, 6 * 6)

        // Consistency with `pspc denoise` on the stored queries.
        let times = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(work)/whole/config.json"))) as! [String: Any]
        let grid = times["grid"] as! [Double]
        // Independent draws (the default, named in config.json): each t has its own clean images.
        XCTAssertEqual(times["draws"] as? String, "independent")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(work)/whole/x0.npy"))
        XCTAssertNotEqual(
            try NPY.read(path: "\(work)/whole/x0/t01.npy").asDoubles(), try NPY.read(path: "\(work)/whole/x0/t03.npy").asDoubles())
        for (index, method) in [(1, ["--method", "pspc-square", "--patch-size", "7"]), (3, ["--method", "empirical"]), (4, ["--method", "gaussian"])] {
            let name = String(format: "t%02d", index)
            let x0 = try NPY.read(path: "\(work)/whole/x0/\(name).npy").asDoubles()
            try CommandRunner.succeed(
                ["denoise", "--data", "\(work)/data", "--t", "\(grid[index])", "--input", "\(work)/whole/z/\(name).npy",
                 "--output", "\(work)/d.npy"] + method)
            let output = try NPY.read(path: "\(work)/d.npy").asDoubles()
            let network = try NPY.read(path: "\(work)/whole/outputs/\(name)/network.npy").asDoubles()
            let label = method.count == 4 ? "pspc-square s=7" : method[1]
            let row = rows["\(index)|\(label)"]!
            XCTAssertEqual(Self.mse(output, network), Double(row[5])!, accuracy: 1e-6 * Double(row[5])!, label)
            XCTAssertEqual(Self.mse(output, x0), Double(row[6])!, accuracy: 1e-6 * Double(row[6])!, label)
        }

        // Kill a second run once some units are written, then run it again.
        let process = Process()
        process.executableURL = CommandRunner.binary
        process.arguments = sweep("\(work)/killed")
        var environment = ProcessInfo.processInfo.environment
        for (k, v) in env { environment[k] = v }
        process.environment = environment
        process.standardError = FileHandle.nullDevice
        try process.run()
        let unit = "\(work)/killed/outputs/t01/empirical.npy"
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: unit) && Date() < deadline { usleep(20_000) }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        XCTAssertTrue(FileManager.default.fileExists(atPath: unit), "no unit was written before the kill")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(work)/killed/done"), "the sweep finished before the kill")
        // The killed coordinator's workers and endpoint notice and stop.
        usleep(3_000_000)
        let children = try CommandRunner.processes(matching: "\(work)/")
        XCTAssertEqual(children, [], "processes left behind by the killed sweep")
        let resumed = try CommandRunner.succeed(sweep("\(work)/killed"), environment: env)
        XCTAssertTrue(resumed.stderr.contains("resuming"), resumed.stderr)
        for file in ["results.csv", "results.json", "x0/t05.npy", "z/t05.npy", "outputs/t05/pspc-square-s11.npy"] {
            XCTAssertEqual(
                try FileIO.read("\(work)/whole/\(file)"), try FileIO.read("\(work)/killed/\(file)"), "\(file) differs")
        }
        // A different setting with the same --out is refused, naming it.
        var changed = sweep("\(work)/killed")
        changed[changed.firstIndex(of: "5")!] = "6"
        let different = try CommandRunner.run(changed, environment: env)
        XCTAssertEqual(different.status, 1)
        XCTAssertTrue(different.stderr.contains("different config (seed: 5 != 6)"), different.stderr)
    }

    /// A study of two named networks from the command line: both answer on the same queries, the method runs
    /// once, networks.csv holds their MSE to each other (equal to the stored outputs'), config.json names both;
    /// the sample comparison draws from both and compares them with each other; unnamed or twice-named networks, or two networks for a one-network command, are refused in words.
    func testASweepComparesSeveralNamedNetworks() throws {
        let work = try CommandRunner.temporaryDirectory("sweep-networks")
        defer { try? FileManager.default.removeItem(atPath: work) }
        try NetworkFixture.makeNetwork(
            at: "\(work)/a.pt",
            extra: "with torch.no_grad():\n    for p in net.parameters():\n        p.mul_(1.1)\nsave_checkpoint(net, '\(work)/b.pt')")
        try CommandRunner.succeed(["ingest", "--source", "fashion-mnist:train", "--limit", "100", "--out", "\(work)/data"])
        let env = NetworkFixture.environment
        let base = ["sweep", "forward", "--data", "\(work)/data", "--methods", "empirical", "--grid", "edm:3", "--queries", "6"]
        for (networks, message) in [
            (["--local-network", "\(work)/a.pt", "--local-network", "\(work)/b.pt"], "every one needs a name"),
            (["--local-network", "x=\(work)/a.pt", "--local-network", "x=\(work)/b.pt"], "the network name 'x' is given twice"),
        ] {
            let refused = try CommandRunner.run(base + networks + ["--out", "\(work)/refused"], environment: env)
            XCTAssertNotEqual(refused.status, 0)
            XCTAssertTrue(refused.stderr.contains(message), refused.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: "\(work)/refused"))
        }
        try CommandRunner.succeed(
            base + ["--local-network", "a=\(work)/a.pt", "--local-network", "b=\(work)/b.pt", "--out", "\(work)/study"],
            environment: env)
        let rows = try Self.rows("\(work)/study/results.csv")
        XCTAssertEqual(rows.count, 3 * 3)
        XCTAssertEqual(rows["0|network a"]?[3], "a")
        XCTAssertEqual(Double(rows["0|network a"]![5]), 0)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(work)/study/config.json"))) as! [String: Any]
        let named = try XCTUnwrap(config["network"] as? [[String: Any]])
        XCTAssertEqual(named.map { $0["name"] as? String }, ["a", "b"])
        XCTAssertEqual(named.map { $0["checkpoint"] as? String }, ["\(work)/a.pt", "\(work)/b.pt"])
        let text = try String(contentsOfFile: "\(work)/study/networks.csv", encoding: .utf8)
        let lines = text.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        XCTAssertEqual(lines.first, ["t_index", "t", "label", "network", "mse", "ci_low", "ci_high", "queries"])
        for t in 0..<3 {
            let name = String(format: "t%02d", t)
            let a = try NPY.read(path: "\(work)/study/outputs/\(name)/network-a.npy").asDoubles()
            let b = try NPY.read(path: "\(work)/study/outputs/\(name)/network-b.npy").asDoubles()
            XCTAssertGreaterThan(Self.mse(a, b), 0)
            let row = try XCTUnwrap(lines.first { $0[0] == String(t) && $0[2] == "network b" && $0[3] == "network a" })
            XCTAssertEqual(Double(row[4])!, Self.mse(a, b), accuracy: 1e-12 * Self.mse(a, b))
            XCTAssertEqual(row[7], "6")
        }
        // The sample comparison: `network` stands for both, each compared with the other and with the method.
        try CommandRunner.succeed(
            ["sample", "--compare", "--methods", "network,empirical", "--data", "\(work)/data", "--local-network",
             "a=\(work)/a.pt", "--local-network", "b=\(work)/b.pt", "--steps", "3", "--count", "2", "--out",
             "\(work)/samples"], environment: env)
        let similarity = try String(contentsOfFile: "\(work)/samples/similarity.csv", encoding: .utf8)
        XCTAssertTrue(similarity.contains("\nnetwork a,network b,"), similarity)
        XCTAssertTrue(similarity.contains("\nnetwork b,empirical,"), similarity)
        for name in ["network-a", "network-b", "empirical"] {
            XCTAssertEqual(try NPY.read(path: "\(work)/samples/samples/\(name).npy").shape, [2, 1, 28, 28], name)
        }
        XCTAssertNotEqual(
            try NPY.read(path: "\(work)/samples/samples/network-a.npy").asDoubles(),
            try NPY.read(path: "\(work)/samples/samples/network-b.npy").asDoubles())
        let denoise = try CommandRunner.run(
            ["denoise", "--data", "\(work)/data", "--method", "network", "--t", "1", "--input",
             "\(work)/study/z/t00.npy", "--output", "\(work)/d.npy", "--local-network", "a=\(work)/a.pt",
             "--local-network", "b=\(work)/b.pt"], environment: env)
        XCTAssertNotEqual(denoise.status, 0)
        XCTAssertTrue(denoise.stderr.contains("this command takes one network (2 were given)"), denoise.stderr)
    }
}
