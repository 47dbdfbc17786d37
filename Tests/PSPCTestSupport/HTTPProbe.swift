import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A small HTTP/1.1 client over a plain socket, for tests of the metrics endpoint: it sends exactly the bytes
/// it is given (malformed requests included) and reads the answer until the server closes the connection.
public enum HTTPProbe {
    public struct Response {
        public var status: Int
        public var head: String
        public var body: String
    }

    public struct ProbeError: Error, CustomStringConvertible {
        public var description: String
    }

    /// `GET path` with `Connection: close`.
    public static func get(_ path: String, port: Int, host: String = "127.0.0.1") throws -> Response {
        try parse(exchange("GET \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n", port: port, host: host))
    }

    /// Sends `raw` and returns everything the server wrote before it closed (a 30 s receive timeout keeps a test
    /// from hanging on a server that never answers).
    public static func exchange(_ raw: String, port: Int, host: String = "127.0.0.1") throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ProbeError(description: "socket: errno \(errno)") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { throw ProbeError(description: "bad host \(host)") }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw ProbeError(description: "connect to \(host):\(port): errno \(errno)") }
        let bytes = Array(raw.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw ProbeError(description: "send: errno \(errno)") }
            written += n
        }
        var answer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { break }
            guard n > 0 else { throw ProbeError(description: "recv: errno \(errno) after \(answer.count) bytes") }
            answer += chunk[..<n]
        }
        return String(decoding: answer, as: UTF8.self)
    }

    /// The status code, head and body of one response.
    public static func parse(_ text: String) throws -> Response {
        guard let split = text.range(of: "\r\n\r\n") else {
            throw ProbeError(description: "no HTTP response head in \(text.debugDescription)")
        }
        let head = String(text[..<split.lowerBound])
        let fields = head.split(separator: " ", maxSplits: 2)
        guard fields.count >= 2, fields[0].hasPrefix("HTTP/1."), let status = Int(fields[1]) else {
            throw ProbeError(description: "no status line in \(head.debugDescription)")
        }
        return Response(status: status, head: head, body: String(text[split.upperBound...]))
    }

    /// Scrapes `/metrics` until `done` holds for its samples (a state the server reaches on its own, such as no
    /// connection left open), at most about a minute; returns the last samples either way, for the test to check.
    public static func scrape(
        port: Int, until done: ([String: Double]) -> Bool = { _ in true }
    ) async throws -> [String: Double] {
        var samples = try Self.samples(get("/metrics", port: port).body)
        for _ in 0..<6000 where !done(samples) {
            try await Task.sleep(nanoseconds: 10_000_000)
            samples = try Self.samples(get("/metrics", port: port).body)
        }
        return samples
    }

    /// The samples of a Prometheus text exposition, by series (`name{label="value",...}` as written).
    public static func samples(_ exposition: String) throws -> [String: Double] {
        var out: [String: Double] = [:]
        for line in exposition.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                throw ProbeError(description: "not a sample line: \(line)")
            }
            let series = String(line[..<space])
            guard out[series] == nil else { throw ProbeError(description: "series \(series) appears twice") }
            out[series] = value
        }
        return out
    }
}
