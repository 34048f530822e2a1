import Locking
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import ShoalAPI
import ShoalCore
import ShoalNode
import ShoalTestSupport
import Testing

/// The API on a real socket, for what the router test client cannot send: bodies without a
/// Content-Length (chunked transfer encoding), where only `collect(upTo:)` stands in the way.
struct LiveServerTests {
    @Test func aChunkedBodyOverTheLimitIs413() async throws {
        try await withTestNode { node in
            try await withLiveAPI(node) { port in
                let body = [UInt8](repeating: 9, count: Chunk.serializedMax + 100)
                let response = try await RawHTTP.post(port: port, path: "/chunks", chunkedBody: body)
                #expect(response.status == 413)
                let error = try JSONDecoder().decode(APIError.Body.self, from: Data(response.body))
                #expect(error.error.code == "chunkTooLarge")
            }
            #expect(try node.status().chunks == 0)
        }
    }

    @Test func aChunkedBodyWithinTheLimitIsStored() async throws {
        var source = SeededChunks(seed: 20)
        let chunk = source.chunk(size: 3000)
        try await withTestNode { node in
            try await withLiveAPI(node) { port in
                let response = try await RawHTTP.post(port: port, path: "/chunks", chunkedBody: chunk.serialized)
                #expect(response.status == 201)
                let answer = try JSONDecoder().decode(UploadResponse.self, from: Data(response.body))
                #expect(answer.address == chunk.address.hex)
            }
            #expect(try node.chunk(chunk.address) == chunk)
        }
    }

    @Test func theApplicationReportsThePortItBound() async throws {
        try await withTestNode { node in
            try await withLiveAPI(node) { port in
                #expect(port != 0)
                let response = try await RawHTTP.get(port: port, path: "/status")
                #expect(response.status == 200)
                let status = try JSONDecoder().decode(NodeStatus.self, from: Data(response.body))
                #expect(status.overlay == node.overlay.hex)
            }
        }
    }
}

/// Runs the API on 127.0.0.1, port 0 (a free port), for the duration of `body`, which gets the
/// port the application reported through `onListening`.
func withLiveAPI(_ node: some NodeAPIBacking, _ body: @Sendable (Int) async throws -> Void) async throws {
    var logger = Logger(label: "shoal.api.test")
    logger.logLevel = .critical
    let recorder = PortRecorder()
    let app = makeAPIApplication(node: node, host: "127.0.0.1", port: 0, logger: logger) { recorder.record($0) }
    let server = Task { try await app.run() }
    defer { server.cancel() }
    _ = await eventually(timeout: TestTimeouts.listening, pollMs: 10) { recorder.port != nil }
    try await body(try #require(recorder.port, "the API did not report a port within 60 s"))
    server.cancel()
    _ = await server.result
}

final class PortRecorder: Sendable {
    private let value = Locked<Int?>(nil)
    func record(_ port: Int) { value.withLock { $0 = port } }
    var port: Int? { value.withLock { $0 } }
}

/// HTTP/1.1 over a plain blocking socket to 127.0.0.1, one request per connection, bounded by
/// socket timeouts. Only for tests.
enum RawHTTP {
    struct Response {
        var status: Int
        /// Header names lowercased; the last of repeated fields.
        var headers: [String: String] = [:]
        var body: [UInt8]
    }

    static let timeoutSeconds = 10

    static func get(port: Int, path: String) async throws -> Response {
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
        return try await onOwnThread { try exchange(port: port, request: request) }
    }

    static func post(port: Int, path: String, chunkedBody body: [UInt8]) async throws -> Response {
        var request = Array("POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".utf8)
        // Pieces of 1000 bytes: the server sees the body only as it arrives.
        var offset = 0
        while offset < body.count {
            let piece = body[offset..<min(offset + 1000, body.count)]
            request.append(contentsOf: Array("\(String(piece.count, radix: 16))\r\n".utf8))
            request.append(contentsOf: piece)
            request.append(contentsOf: [13, 10])
            offset += piece.count
        }
        request += Array("0\r\n\r\n".utf8)
        let bytes = request
        return try await onOwnThread { try exchange(port: port, request: bytes) }
    }

    /// Blocking socket calls stay off Swift's cooperative pool (two threads on two cores), which
    /// the server under test needs to answer.
    static func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try work() }) }.start()
        }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// A blocking TCP socket connected to 127.0.0.1:`port`, every send and receive bounded by
    /// `timeoutSeconds`. The caller closes it.
    static func connectedSocket(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: errno \(errno)") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let code = errno
            close(fd)
            throw Failure(description: "connect: errno \(code)")
        }
        return fd
    }

    private static func exchange(port: Int, request: [UInt8]) throws -> Response {
        let fd = try connectedSocket(port: port)
        defer { close(fd) }
        var sent = 0
        while sent < request.count {
            let n = request.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            // The server may answer 413 and stop reading before the whole body is sent.
            if n <= 0 { break }
            sent += n
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n <= 0 { break }
            received += buffer[..<n]
            if let response = parse(received) { return response.response }
        }
        return try parse(received)?.response ?? { throw Failure(description: "incomplete response: \(String(decoding: received, as: UTF8.self))") }()
    }

    /// A complete response (status line, headers, Content-Length body) at the start of `bytes`
    /// and the number of bytes it takes, or nil if more is needed.
    static func parse(_ bytes: [UInt8]) -> (response: Response, length: Int)? {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let end = bytes.indices.first(where: { bytes[$0...].starts(with: separator) }) else { return nil }
        let head = String(decoding: bytes[..<end], as: UTF8.self)
        let lines = head.components(separatedBy: "\r\n")
        let parts = lines[0].split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { return nil }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            let pair = line.split(separator: ":", maxSplits: 1)
            if pair.count == 2 {
                headers[pair[0].lowercased()] = pair[1].trimmingCharacters(in: .whitespaces)
            }
        }
        let length = headers["content-length"].flatMap { Int($0) } ?? 0
        let body = bytes[(end + 4)...]
        guard body.count >= length else { return nil }
        return (Response(status: status, headers: headers, body: Array(body.prefix(length))), end + 4 + length)
    }
}
