import Locking
import Foundation
import NIOHTTP1
@testable import ShoalAPI
import ShoalNode
import Testing

/// Requests the router never sees — the HTTP parser refuses them, or they are `CONNECT` — on a
/// real socket: each is answered with the API's JSON error, and the connection then closes.
struct MalformedRequestTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var testDescription: String
        var request: String
        var status: Int
        var code: APIError.Code
    }

    static let cases: [Case] = [
        Case(testDescription: "a 100,000-character path",
             request: "GET /\(String(repeating: "a", count: 100_000)) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
             status: 400, code: .badRequest),
        Case(testDescription: "the method FOO",
             request: "FOO / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
             status: 501, code: .unsupportedMethod),
        Case(testDescription: "Content-Length: -1",
             request: "POST /chunks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n",
             status: 400, code: .badRequest),
        Case(testDescription: "CONNECT",
             request: "CONNECT host:443 HTTP/1.1\r\nHost: host:443\r\n\r\n",
             status: 501, code: .unsupportedMethod),
        Case(testDescription: "a garbage request line",
             request: "GET /status garbage\r\n\r\n",
             status: 400, code: .badRequest),
        Case(testDescription: "a header line without a colon",
             request: "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n",
             status: 400, code: .badRequest),
    ]

    @Test(arguments: cases)
    func isAnsweredWithTheJSONErrorThenTheConnectionCloses(_ testCase: Case) async throws {
        try await withTestNode { node in
            try await withLiveAPI(node) { port in
                let connection = try await RawHTTP.Connection.open(port: port)
                try await connection.send(testCase.request)
                let response = try await connection.readResponse()
                try expectAPIError(response, status: testCase.status, code: testCase.code)
                #expect(try await connection.readsEndOfStream())
            }
        }
    }

    @Test func aKeepAliveConnectionServesRequestAfterRequest() async throws {
        try await withTestNode { node in
            try await withLiveAPI(node) { port in
                let connection = try await RawHTTP.Connection.open(port: port)
                for _ in 0..<3 {
                    try await connection.send("GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    #expect(try await connection.readResponse().status == 200)
                }
                // A router error keeps the connection too.
                try await connection.send("GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                try expectAPIError(try await connection.readResponse(), status: 404, code: .notFound)
                try await connection.send("GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                #expect(try await connection.readResponse().status == 200)
            }
        }
    }

    @Test func aRequestThatFailsBehindAGoodOneIsAnsweredAfterIt() async throws {
        try await withTestNode { node in
            try await withLiveAPI(node) { port in
                let connection = try await RawHTTP.Connection.open(port: port)
                // One write: the parser fails on the second request while the first is answered.
                try await connection.send("GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nFOO / HTTP/1.1\r\n\r\n")
                #expect(try await connection.readResponse().status == 200)
                try expectAPIError(try await connection.readResponse(), status: 501, code: .unsupportedMethod)
                #expect(try await connection.readsEndOfStream())
            }
        }
    }

    @Test func aBrokenChunkedUploadIsRefusedAndStoresNothing() async throws {
        try await withTestNode { node in
            try await withLiveAPI(node) { port in
                let connection = try await RawHTTP.Connection.open(port: port)
                // The head passes; the body's second chunk size is not hex.
                try await connection.send("POST /chunks HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + "a\r\n\u{5}\0\0\0\0\0\0\0ab\r\nzz\r\n")
                try expectAPIError(try await connection.readResponse(), status: 400, code: .badRequest)
                #expect(try await connection.readsEndOfStream())
            }
            #expect(try node.status().chunks == 0)
        }
    }
}

/// The answers of `MalformedRequestMachine`, event by event, without sockets.
struct MalformedRequestMachineTests {
    @Test func aParserFailureBetweenRequestsIsAnsweredAtOnce() {
        var machine = MalformedRequestMachine()
        #expect(machine.parserFailed(.invalidMethod) == .answer(APIError(parserError: .invalidMethod)))
        #expect(machine.responseWritten(isEnd: true) == .drop)
        machine.checkInvariants()
    }

    @Test func theAnswerWaitsForTheResponsesOwed() {
        var machine = MalformedRequestMachine()
        #expect(machine.requestHeadReceived(isConnect: false) == .pass)
        #expect(machine.requestEndReceived() == .pass)
        #expect(machine.requestHeadReceived(isConnect: true) == .drop)
        #expect(machine.requestEndReceived() == .drop)
        machine.checkInvariants()
        #expect(machine.responseWritten(isEnd: false) == .pass)
        #expect(machine.responseWritten(isEnd: true) == .answer(.connectNotSupported))
        #expect(machine.responseWritten(isEnd: false) == .drop)
    }

    @Test func aFailureInsideARequestGoesToTheApplication() {
        var machine = MalformedRequestMachine()
        #expect(machine.requestHeadReceived(isConnect: false) == .pass)
        #expect(machine.requestBodyReceived() == .pass)
        #expect(machine.parserFailed(.invalidChunkSize) == .pass)
        machine.checkInvariants()
        // The router's answer goes out; Hummingbird's own empty 400 after it does not.
        #expect(machine.responseWritten(isEnd: true) == .close)
        #expect(machine.responseWritten(isEnd: false) == .drop)
    }

    @Test func aFailureInsideAnAnsweredRequestCloses() {
        var machine = MalformedRequestMachine()
        #expect(machine.requestHeadReceived(isConnect: false) == .pass)
        #expect(machine.responseWritten(isEnd: true) == .pass)   // 413 before reading the body
        #expect(machine.parserFailed(.invalidChunkSize) == .close)
    }
}

/// Checks that `response` is the API's JSON error with `status` and `code`, framed by a
/// Content-Length that matches its body.
func expectAPIError(_ response: RawHTTP.Response, status: Int, code: APIError.Code,
                    sourceLocation: SourceLocation = #_sourceLocation) throws {
    #expect(response.status == status, sourceLocation: sourceLocation)
    #expect(response.headers["content-type"]?.hasPrefix("application/json") == true, sourceLocation: sourceLocation)
    #expect(response.headers["content-length"] == String(response.body.count), sourceLocation: sourceLocation)
    let body = try JSONDecoder().decode(APIError.Body.self, from: Data(response.body))
    #expect(body.error.code == code.rawValue, sourceLocation: sourceLocation)
    #expect(!body.error.message.isEmpty, sourceLocation: sourceLocation)
}

extension RawHTTP {
    /// One keep-alive connection to 127.0.0.1 over a blocking socket; every read and write is
    /// bounded by `timeoutSeconds`. Closed when released.
    final class Connection: Sendable {
        private let fd: Int32
        private let pending = Locked<[UInt8]>([])

        private init(fd: Int32) { self.fd = fd }
        deinit { close(fd) }

        static func open(port: Int) async throws -> Connection {
            try await onOwnThread {
                Connection(fd: try RawHTTP.connectedSocket(port: port))
            }
        }

        /// Sends all of `text`, or as much as the server reads before it stops reading.
        func send(_ text: String) async throws {
            let bytes = Array(text.utf8)
            try await onOwnThread {
                var sent = 0
                while sent < bytes.count {
                    let n = bytes.withUnsafeBytes { Glibc.send(self.fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
                    if n <= 0 { break }
                    sent += n
                }
            }
        }

        /// The next whole response, or a failure if the connection ends or times out first.
        func readResponse() async throws -> Response {
            try await onOwnThread {
                var received = self.pending.withLock { $0 }
                while true {
                    if let (response, length) = parse(received) {
                        self.pending.withLock { $0 = Array(received[length...]) }
                        return response
                    }
                    guard let bytes = try self.receive() else {
                        throw Failure(description: "connection ended before a whole response: \(String(decoding: received, as: UTF8.self))")
                    }
                    received += bytes
                }
            }
        }

        /// True if the server closes its side (a read returns end of stream) with nothing more
        /// sent, within `timeoutSeconds`.
        func readsEndOfStream() async throws -> Bool {
            try await onOwnThread {
                guard self.pending.withLock({ $0.isEmpty }) else { return false }
                do {
                    return try self.receive() == nil
                } catch {
                    return false
                }
            }
        }

        /// Bytes read, or nil at end of stream.
        private func receive() throws -> [UInt8]? {
            var buffer = [UInt8](repeating: 0, count: 16 * 1024)
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n == 0 { return nil }
            guard n > 0 else { throw Failure(description: "recv: errno \(errno)") }
            return Array(buffer[..<n])
        }
    }
}
