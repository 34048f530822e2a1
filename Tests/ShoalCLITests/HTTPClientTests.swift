import Foundation
import ShoalAPI
@testable import shoal
import ShoalTestSupport
import Testing

/// The terminal's HTTP client against real servers on 127.0.0.1: framing both ways, errors by
/// kind, bounded waits.
struct HTTPClientTests {
    struct UploadEcho: Decodable {
        var bytes: Int
        var fnv: UInt64
        var chunked: Bool
        var contentLength: String
    }

    /// Generous by default: in a loaded full run the fixture server's handlers (on the
    /// cooperative pool) can wait many seconds for a thread.
    static func client(_ port: Int, timeoutSeconds: Int = 60) -> HTTPClient {
        HTTPClient(address: HostPort(host: "127.0.0.1", port: port), idleTimeoutSeconds: timeoutSeconds)
    }

    @Test func aPipeIsUploadedChunkedAndArrivesWhole() async throws {
        let bytes = seededBytes(3 << 20 + 12345, seed: 1)
        try await withFixtureServer { port in
            let (echo, progress) = try await onOwnThread { () throws -> (UploadEcho, [UInt64]) in
                var fds: [Int32] = [0, 0]
                guard pipe(&fds) == 0 else { throw TestFailure("pipe failed") }
                let (readEnd, writeEnd) = (fds[0], fds[1])
                let writer = Thread {
                    _ = bytes.withUnsafeBytes { raw in
                        var offset = 0
                        while offset < raw.count {
                            let n = write(writeEnd, raw.baseAddress! + offset, min(50_000, raw.count - offset))
                            if n <= 0 { break }
                            offset += n
                        }
                    }
                    close(writeEnd)
                }
                writer.start()
                defer { close(readEnd) }
                nonisolated(unsafe) var sent: [UInt64] = []
                let response = try HTTPClientTests.client(port).send(
                    HTTPRequest(method: "POST", target: "/upload", body: .stream(fd: readEnd, length: nil))) { sent.append($0) }
                let body = try response.collect(bytesMax: 1 << 16)
                #expect(response.status == 200)
                return (try JSONDecoder().decode(UploadEcho.self, from: Data(body)), sent)
            }
            #expect(echo.chunked)
            #expect(echo.contentLength == "")
            #expect(echo.bytes == bytes.count)
            #expect(echo.fnv == FNV1a.of(bytes))
            #expect(progress.last == UInt64(bytes.count))
            #expect(progress.count > 1, "sent in pieces as the pipe delivers them")
        }
    }

    @Test func aFileIsUploadedWithItsLengthAndProgressCountsEveryByte() async throws {
        let directory = try TemporaryDirectory("shoal-cli")
        let bytes = seededBytes(2 << 20 + 7, seed: 2)
        let path = directory.path + "/input"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        try await withFixtureServer { port in
            let (echo, progress) = try await onOwnThread { () throws -> (UploadEcho, [UInt64]) in
                let input = try UploadInput.open(path)
                defer { input.close() }
                #expect(input.length == UInt64(bytes.count))
                nonisolated(unsafe) var sent: [UInt64] = []
                let response = try HTTPClientTests.client(port).send(
                    HTTPRequest(method: "POST", target: "/upload", body: .stream(fd: input.fd, length: input.length))) { sent.append($0) }
                let body = try response.collect(bytesMax: 1 << 16)
                return (try JSONDecoder().decode(UploadEcho.self, from: Data(body)), sent)
            }
            #expect(!echo.chunked)
            #expect(echo.contentLength == "\(bytes.count)")
            #expect(echo.bytes == bytes.count)
            #expect(echo.fnv == FNV1a.of(bytes))
            #expect(progress.last == UInt64(bytes.count))
            #expect(progress == progress.sorted() && Set(progress).count == progress.count, "progress only grows")
        }
    }

    @Test(arguments: ["/blob", "/chunked"])
    func aResponseBodyStreamsWhole(_ route: String) async throws {
        let size = 5_000_000
        try await withFixtureServer { port in
            let (framing, body, progress) = try await onOwnThread { () throws -> (HTTPResponse.Framing, [UInt8], [UInt64]) in
                let response = try HTTPClientTests.client(port).send(HTTPRequest(method: "GET", target: "\(route)/\(size)"))
                var body: [UInt8] = []
                var progress: [UInt64] = []
                let total = try response.stream(into: { (piece: UnsafeRawBufferPointer) throws(HTTPClientError) in
                    #expect(piece.count <= HTTPClient.bufferBytes)
                    body.append(contentsOf: piece)
                }, received: { progress.append($0) })
                #expect(total == UInt64(size))
                return (response.framing, body, progress)
            }
            #expect(framing == (route == "/blob" ? .length(UInt64(size)) : .chunked))
            #expect(body == seededBytes(size, seed: 7))
            #expect(progress.last == UInt64(size))
            #expect(progress.count > 1, "delivered in pieces, not at once")
        }
    }

    @Test func anErrorAnswerCarriesTheAPIsMessage() async throws {
        try await withFixtureServer { port in
            let answer = try await onOwnThread {
                try HTTPClientTests.client(port).fetch(HTTPRequest(method: "GET", target: "/bytes/" + String(repeating: "ab", count: 32)))
            }
            #expect(answer.head.status == 404)
            #expect(answer.head.header("content-type") == "application/json")
            #expect(apiErrorText(answer.body) == "no file abababab: its root chunk is not here (notFound)")
        }
    }

    @Test func aServerThatRefusesBeforeReadingTheBodyIsHeard() async throws {
        // 64 MiB would take a while to send; the answer comes first and the client stops.
        let bytes = [UInt8](repeating: 1, count: 64 << 20)
        try await withFixtureServer { port in
            let status = try await onOwnThread {
                try HTTPClientTests.client(port).fetch(HTTPRequest(method: "POST", target: "/refuse", body: .bytes(bytes))).head.status
            }
            #expect(status == 413)
        }
    }

    @Test func aContentLengthBodyCutShortIsTruncated() async throws {
        let head = Array("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".utf8)
        let server = try RawServer(response: head + [UInt8](repeating: 7, count: 500))
        let error = await #expect(throws: HTTPClientError.self) {
            try await onOwnThread {
                _ = try HTTPClientTests.client(server.port).fetch(HTTPRequest(method: "GET", target: "/x"))
            }
        }
        #expect(error == .truncated(expected: 1000, received: 500))
        #expect(error?.exitCode == CLIExit.unreachable)
    }

    @Test func aChunkedBodyWithoutItsLastChunkIsTruncated() async throws {
        let response = Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n".utf8)
        let server = try RawServer(response: response)
        let error = await #expect(throws: HTTPClientError.self) {
            try await onOwnThread {
                _ = try HTTPClientTests.client(server.port).fetch(HTTPRequest(method: "GET", target: "/x"))
            }
        }
        #expect(error == .truncated(expected: nil, received: 11))
    }

    @Test(arguments: [
        "HTTP/1.1 abc OK\r\n\r\n",
        "SMTP ready\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    ])
    func aMalformedResponseIsAClearError(_ response: String) async throws {
        let server = try RawServer(response: Array(response.utf8))
        let error = await #expect(throws: HTTPClientError.self) {
            try await onOwnThread {
                _ = try HTTPClientTests.client(server.port).fetch(HTTPRequest(method: "GET", target: "/x"))
            }
        }
        guard case .malformedResponse(let message)? = error else {
            Issue.record("expected malformedResponse, got \(String(describing: error))")
            return
        }
        #expect(!message.isEmpty)
    }

    @Test func aClosedPortIsCannotConnect() async throws {
        let port = try closedPort()
        let error = await #expect(throws: HTTPClientError.self) {
            try await onOwnThread { _ = try HTTPClientTests.client(port).fetch(HTTPRequest(method: "GET", target: "/status")) }
        }
        guard case .cannotConnect(let message)? = error else {
            Issue.record("expected cannotConnect, got \(String(describing: error))")
            return
        }
        #expect(message == "cannot connect to the API at 127.0.0.1:\(port): Connection refused")
        #expect(error?.exitCode == CLIExit.unreachable)
    }

    @Test func aServerThatSaysNothingTimesOutAfterTheIdleTimeout() async throws {
        let server = try RawServer(response: [], holdSeconds: 10)
        // Timed on the client's own thread: in a loaded full run, getting back onto the
        // cooperative pool can take seconds that are not the client's.
        let (error, elapsed) = try await onOwnThread { () -> (HTTPClientError?, Duration) in
            let started = ContinuousClock.now
            do {
                _ = try HTTPClientTests.client(server.port, timeoutSeconds: 1).fetch(HTTPRequest(method: "GET", target: "/x"))
                return (nil, ContinuousClock.now - started)
            } catch let error as HTTPClientError {
                return (error, ContinuousClock.now - started)
            }
        }
        guard case .timedOut? = error else {
            Issue.record("expected timedOut, got \(String(describing: error))")
            return
        }
        #expect(elapsed >= .milliseconds(900) && elapsed < .seconds(5))
    }

    @Test func aHeadResponseHasNoBodyWhateverItsLength() throws {
        let head = try HTTPResponseHead.parse(ArraySlice("HTTP/1.1 200 OK\r\nContent-Length: 99".utf8))
        #expect(try head.framing(method: "HEAD") == .none)
        #expect(try head.framing(method: "GET") == .length(99))
        let noContent = try HTTPResponseHead.parse(ArraySlice("HTTP/1.1 204 No Content\r\nContent-Length: 99".utf8))
        #expect(try noContent.framing(method: "GET") == .none)
        let closeDelimited = try HTTPResponseHead.parse(ArraySlice("HTTP/1.0 200 OK".utf8))
        #expect(try closeDelimited.framing(method: "GET") == .untilClose)
        #expect(closeDelimited.reason == "OK")
    }
}
