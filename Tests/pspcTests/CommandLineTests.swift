import Foundation
import PSPCCore
import PSPCData
import PSPCTestSupport
import XCTest

/// End-to-end: the built binary on real Fashion-MNIST, read back through its files.
final class CommandLineTests: XCTestCase {
    static let work: String = try! CommandRunner.temporaryDirectory("cli")
    static let t = 1.09

    /// 1000 training images ingested as 1, 3 and 7 shards; 6 noisy test queries; flex heatmaps.
    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: work)
        super.tearDown()
    }

    static let prepared: Bool = {
        for k in [1, 3, 7] {
            _ = try! CommandRunner.run([
                "ingest", "--source", "fashion-mnist:train", "--limit", "1000", "--shards", "\(k)", "--out",
                "\(work)/data\(k)",
            ])
        }
        let test = try! IDXReader.read(path: "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", limit: 6)
        let eps = NormalNoise(seed: 1).normals(stream: 0, count: test.pixels.count)
        let z = test.pixels.enumerated().map { Float(Double($1) / 127.5 - 1 + t * eps[$0]) }
        try! NPY.write(NPYArray(shape: [6, 1, 28, 28], data: .float32(z)), to: "\(work)/z.npy")
        var maps = [Float](repeating: 0, count: 784 * 784)
        for out in 0..<784 {
            for q in 0..<784 {
                let dy = Double(q / 28 - out / 28), dx = Double(q % 28 - out % 28)
                maps[out * 784 + q] = Float(exp(-(dy * dy + dx * dx) / 4))
            }
        }
        try! NPY.write(NPYArray(shape: [28, 28, 28, 28], data: .float32(maps)), to: "\(work)/heatmaps.npy")
        return true
    }()

    static let methods: [(String, [String])] = [
        ("empirical", ["--method", "empirical"]),
        ("pspc-square", ["--method", "pspc-square", "--patch-size", "7"]),
        ("pspc-square-schedule", ["--method", "pspc-square", "--schedule", "cifar10"]),
        ("pspc-flex", ["--method", "pspc-flex", "--heatmaps", "\(work)/heatmaps.npy", "--lambda", "0.3"]),
        ("gaussian", ["--method", "gaussian"]),
        ("cfdm", ["--method", "cfdm", "--smoothing", "0.1", "--copies", "2", "--cfdm-seed", "4"]),
    ]

    func denoise(_ data: String, _ method: [String], output: String, environment: [String: String] = [:]) throws
        -> [Double]
    {
        try CommandRunner.succeed(
            [
                "denoise", "--data", data, "--t", "\(Self.t)", "--input", "\(Self.work)/z.npy",
                "--output", output,
            ] + method, environment: environment)
        return try NPY.read(path: output).asDoubles()
    }

    /// Every subcommand's help prints: swift-argument-parser checks option names for clashes there (two
    /// `--seed` options once made `pspc sample --help` fail).
    func testEverySubcommandHasHelp() throws {
        for command in [
            ["ingest"], ["queries"], ["denoise"], ["sample"], ["sweep"], ["sweep", "forward"], ["sweep", "reverse"],
            ["calibrate"], ["heatmap"], ["report"], ["grid"], ["worker"], ["info"],
        ] {
            let result = try CommandRunner.run(command + ["--help"])
            XCTAssertEqual(result.status, 0, "pspc \(command.joined(separator: " ")) --help: \(result.stderr)")
            XCTAssertTrue(result.stdout.contains("USAGE: pspc \(command.joined(separator: " "))"), result.stdout)
        }
    }

    func testShardCountDoesNotChangeAnswers() throws {
        XCTAssertTrue(Self.prepared)
        for (name, method) in Self.methods {
            let outputs = try [1, 3, 7].map {
                try denoise("\(Self.work)/data\($0)", method, output: "\(Self.work)/out-\(name)-\($0).npy")
            }
            XCTAssertEqual(outputs[0].count, 6 * 784)
            for other in outputs.dropFirst() {
                XCTAssertLessThanOrEqual(maxDifference(outputs[0], other), 1e-5, name)
            }
        }
    }

    func testEveryCPULevelGivesTheSameAnswers() throws {
        XCTAssertTrue(Self.prepared)
        for (name, method) in Self.methods where name.hasPrefix("pspc") {
            let best = try denoise("\(Self.work)/data3", method, output: "\(Self.work)/level-best.npy")
            for level in ["baseline", "avx2"] {
                let out = try denoise(
                    "\(Self.work)/data3", method, output: "\(Self.work)/level-\(level).npy",
                    environment: ["PSPC_KERNELS": level])
                XCTAssertLessThanOrEqual(maxDifference(best, out), 1e-9, "\(name) with \(level) kernels")
            }
        }
    }

    func testFlexReportsUncoveredPixels() throws {
        XCTAssertTrue(Self.prepared)
        // Masks that all sit in the image centre leave the border to the empirical fallback.
        var maps = [Float](repeating: 0, count: 784 * 784)
        for out in 0..<784 { maps[out * 784 + 14 * 28 + 14] = 1 }
        try NPY.write(NPYArray(shape: [28, 28, 28, 28], data: .float32(maps)), to: "\(Self.work)/center.npy")
        let result = try CommandRunner.succeed(
            [
                "denoise", "--data", "\(Self.work)/data1", "--t", "1", "--input", "\(Self.work)/z.npy", "--output",
                "\(Self.work)/flex-center.npy", "--method", "pspc-flex", "--heatmaps", "\(Self.work)/center.npy",
                "--lambda", "0.5",
            ])
        XCTAssertTrue(result.stderr.contains("(783 positions per query) had no mask"), result.stderr)
    }

    func testSampleWritesSamplesAndAGrid() throws {
        XCTAssertTrue(Self.prepared)
        let out = "\(Self.work)/samples"
        try CommandRunner.succeed([
            "sample", "--data", "\(Self.work)/data3", "--method", "pspc-square", "--patch-size", "5",
            "--steps", "6", "--solver", "heun", "--count", "4", "--seed", "2", "--out", out,
        ])
        let samples = try NPY.read(path: out + "/samples.npy")
        XCTAssertEqual(samples.shape, [4, 1, 28, 28])
        XCTAssertTrue(samples.asDoubles().allSatisfy { $0.isFinite && abs($0) < 1.5 })
        let png = try PNG.decode(FileIO.read(out + "/samples.png"), name: "samples.png")
        XCTAssertGreaterThan(png.width, 56)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/config.json"))
        // Same seed, same samples, whatever the sharding.
        try CommandRunner.succeed([
            "sample", "--data", "\(Self.work)/data7", "--method", "pspc-square", "--patch-size", "5",
            "--steps", "6", "--solver", "heun", "--count", "4", "--seed", "2", "--out", out + "7",
        ])
        XCTAssertLessThanOrEqual(
            maxDifference(samples.asDoubles(), try NPY.read(path: out + "7/samples.npy").asDoubles()), 1e-5)
    }

    func maxDifference(_ a: [Double], _ b: [Double]) -> Double {
        XCTAssertEqual(a.count, b.count)
        return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
    }
}
