import Foundation
import PSPCData
import PSPCTestSupport
import XCTest

/// Through the built binary: outputs go to regular files that are not the inputs, the pair of query files is
/// written whole or not at all, and a port in use is reported in words.
final class OutputPathTests: XCTestCase {
    static let work: String = try! CommandRunner.temporaryDirectory("outputs")

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: work)
        super.tearDown()
    }

    static let prepared: Bool = {
        _ = try! CommandRunner.run([
            "ingest", "--source", "fashion-mnist:train", "--limit", "50", "--out", "\(work)/data",
        ])
        let z = [Float](repeating: 0.1, count: 2 * 784)
        try! NPY.write(NPYArray(shape: [2, 1, 28, 28], data: .float32(z)), to: "\(work)/z.npy")
        return true
    }()

    func denoise(output: String, input: String? = nil) throws -> CommandRunner.Result {
        XCTAssertTrue(Self.prepared)
        return try CommandRunner.run([
            "denoise", "--data", "\(Self.work)/data", "--method", "empirical", "--t", "1", "--input",
            input ?? "\(Self.work)/z.npy", "--output", output,
        ])
    }

    func expectRefused(_ result: CommandRunner.Result, _ expected: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(result.crashed, result.stderr, file: file, line: line)
        XCTAssertEqual(result.status, 1, result.stderr, file: file, line: line)
        XCTAssertTrue(result.stderr.contains(expected), "stderr was: \(result.stderr)", file: file, line: line)
    }

    /// A fifo (as /dev/full, a device) given as --output is refused and stays what it was.
    func testNonRegularOutputIsRefused() throws {
        let fifo = "\(Self.work)/fifo"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        expectRefused(try denoise(output: fifo), "\(fifo) is a fifo, not a regular file")
        XCTAssertEqual(FileIO.nonRegularKind(fifo), "a fifo")
        expectRefused(try denoise(output: "/dev/full"), "/dev/full is a character device, not a regular file")
        XCTAssertEqual(FileIO.nonRegularKind("/dev/full"), "a character device")
        expectRefused(try denoise(output: Self.work), "is a directory, not a regular file")
    }

    /// --output naming the input, directly or through a symbolic link, is refused and the input kept.
    func testOutputSameAsInputIsRefused() throws {
        XCTAssertTrue(Self.prepared)
        let before = try FileIO.read("\(Self.work)/z.npy")
        expectRefused(try denoise(output: "\(Self.work)/z.npy"), "is the same file as --input")
        let link = "\(Self.work)/link.npy"
        try? FileManager.default.removeItem(atPath: link)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "\(Self.work)/z.npy")
        expectRefused(try denoise(output: "\(Self.work)/./../\((Self.work as NSString).lastPathComponent)/z.npy", input: link), "is the same file as --input")
        XCTAssertEqual(try FileIO.read("\(Self.work)/z.npy"), before)
    }

    /// `pspc queries` whose clean-image file cannot be written leaves no new z.npy behind.
    func testQueriesNeverLeaveHalfAPair() throws {
        let out = "\(Self.work)/queries"
        try FileManager.default.createDirectory(atPath: "\(out)/x0.npy", withIntermediateDirectories: true)
        let result = try CommandRunner.run(["queries", "--t", "1", "--count", "2", "--out", out])
        expectRefused(result, "x0.npy is a directory")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(out)/z.npy"), "half a pair written")
    }

    /// A worker whose port is taken says so in words, not as a raw bind(...) error.
    func testWorkerOnAPortInUse() throws {
        XCTAssertTrue(Self.prepared)
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Bool in
                bind(listener, pointer, length) == 0 && listen(listener, 1) == 0
                    && getsockname(listener, pointer, &length) == 0
            }
        }
        XCTAssertTrue(bound)
        let port = Int(UInt16(bigEndian: address.sin_port))
        try FileIO.writeAtomically(Array("0123456789abcdef0123".utf8), to: "\(Self.work)/token")
        let result = try CommandRunner.run([
            "worker", "--listen", "127.0.0.1:\(port)", "--data", "\(Self.work)/data", "--token-file",
            "\(Self.work)/token",
        ])
        expectRefused(result, "pspc: error: cannot listen on 127.0.0.1:\(port): Address already in use (EADDRINUSE)")
    }
}
