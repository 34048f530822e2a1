import ShoalAPI

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A small HTTP/1.1 client over one blocking socket per request (`Connection: close`), for the
/// terminal commands. Bodies stream both ways: a request body is read from a file descriptor
/// piece by piece (`Content-Length` when its size is known, chunked otherwise), a response body
/// is handed to a sink piece by piece, so memory stays bounded by `bufferBytes` whatever the
/// size of the file (decision 0018).
///
/// Every wait is bounded by `idleTimeoutSeconds`: connecting, and each wait for the socket to
/// accept or deliver a byte. A transfer that keeps moving never times out; one that stalls for
/// that long fails with `HTTPClientError.timedOut`. Reading the request body from its source
/// (a pipe the user feeds) is not bounded: that is the user's input, not the API.
struct HTTPClient: Sendable {
    let address: HostPort
    var idleTimeoutSeconds: Int

    /// Socket reads and request-body pieces are at most this large.
    static let bufferBytes = 256 * 1024
    /// A status line and headers larger than this are not a response from a Shoal node.
    static let headBytesMax = 64 * 1024
    /// A chunk-size line of a chunked response (size, extensions) is at most this long.
    static let chunkLineBytesMax = 4096

    init(address: HostPort, idleTimeoutSeconds: Int) {
        self.address = address
        self.idleTimeoutSeconds = idleTimeoutSeconds
    }

    /// Connects, sends `request` (its body streamed, `sent` told the body bytes written so far
    /// after each piece), and returns once the response head has arrived; read the body from
    /// the returned `HTTPResponse`.
    ///
    /// A server may answer before it has read the whole body (an error such as 413, or a
    /// refused header): when the socket becomes readable during the upload, or the upload fails
    /// because the server closed its side, the client stops sending and reads that answer.
    func send(_ request: HTTPRequest, sent: (UInt64) -> Void = { _ in }) throws(HTTPClientError) -> HTTPResponse {
        let connection = try HTTPSocket.connect(to: address, timeoutSeconds: idleTimeoutSeconds)
        var head = "\(request.method) \(request.target) HTTP/1.1\r\nHost: \(address)\r\nConnection: close\r\n"
        for (name, value) in request.headers { head += "\(name): \(value)\r\n" }
        switch request.body {
        case .empty:
            if request.method == "POST" || request.method == "PUT" { head += "Content-Length: 0\r\n" }
        case .bytes(let bytes):
            head += "Content-Length: \(bytes.count)\r\n"
        case .stream(_, let length?):
            head += "Content-Length: \(length)\r\n"
        case .stream(_, nil):
            head += "Transfer-Encoding: chunked\r\n"
        }
        head += "\r\n"

        do {
            try connection.write(Array(head.utf8)[...])
            try sendBody(request.body, on: connection, sent: sent)
        } catch .serverAnswered {
            // Fall through to read the answer the server gave early.
        } catch {
            // Closed or reset under the upload: the server may still have said why.
            if case .connectionFailed = error, let response = try? HTTPResponse.read(from: connection, method: request.method) {
                return response
            }
            throw error
        }
        return try HTTPResponse.read(from: connection, method: request.method)
    }

    private func sendBody(_ body: HTTPRequest.Body, on connection: HTTPSocket, sent: (UInt64) -> Void) throws(HTTPClientError) {
        switch body {
        case .empty:
            return
        case .bytes(let bytes):
            try connection.write(bytes[...], stopIfReadable: true)
            sent(UInt64(bytes.count))
        case .stream(let fd, let length):
            var buffer = [UInt8](repeating: 0, count: HTTPClient.bufferBytes)
            var total: UInt64 = 0
            while true {
                let want = length.map { Int(min(UInt64(buffer.count), $0 - total)) } ?? buffer.count
                if want == 0 { break }
                let n = try HTTPClient.readInput(fd, into: &buffer, count: want)
                if n == 0 {
                    if let length, total < length {
                        throw .input("the input ended after \(total) of its \(length) bytes (did it shrink while being read?)")
                    }
                    break
                }
                if length == nil {
                    var piece = Array("\(String(n, radix: 16))\r\n".utf8)
                    piece.append(contentsOf: buffer[..<n])
                    piece.append(contentsOf: [13, 10])
                    try connection.write(piece[...], stopIfReadable: true)
                } else {
                    try connection.write(buffer[..<n], stopIfReadable: true)
                }
                total += UInt64(n)
                sent(total)
            }
            if length == nil { try connection.write(Array("0\r\n\r\n".utf8)[...], stopIfReadable: true) }
        }
    }

    /// One `read(2)` of the request body's source, retried on EINTR.
    private static func readInput(_ fd: Int32, into buffer: inout [UInt8], count: Int) throws(HTTPClientError) -> Int {
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, count) }
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw .input("cannot read the input: \(String(cString: strerror(errno)))")
        }
    }

    /// Sends `request` and collects the whole response body, at most `bodyBytesMax` bytes: for
    /// the small JSON answers (status, pins, errors).
    func fetch(_ request: HTTPRequest, bodyBytesMax: Int = 16 << 20) throws(HTTPClientError) -> (head: HTTPResponseHead, body: [UInt8]) {
        let response = try send(request)
        let body = try response.collect(bytesMax: bodyBytesMax)
        return (response.head, body)
    }
}

/// One request: method, target (path and query), extra headers, body.
struct HTTPRequest: Sendable {
    enum Body: Sendable {
        case empty
        case bytes([UInt8])
        /// Read from the file descriptor until end of file (or `length` bytes). A known length is
        /// sent as `Content-Length`; an unknown one (a pipe) as `Transfer-Encoding: chunked`.
        case stream(fd: Int32, length: UInt64?)
    }

    var method: String
    var target: String
    var headers: [(String, String)] = []
    var body: Body = .empty
}

/// A failed exchange, by whom to blame: the network and the API (`exitCode` 3), or the local
/// input and output (4).
enum HTTPClientError: Error, CustomStringConvertible, Equatable {
    /// No connection: refused, unreachable, unknown host.
    case cannotConnect(String)
    /// Nothing moved for the idle timeout.
    case timedOut(String)
    /// The connection broke after it was made (reset, closed under a write).
    case connectionFailed(String)
    /// What came back is not HTTP/1.1 as this client speaks it.
    case malformedResponse(String)
    /// The response body ended before its declared end (`expected` nil: a chunked body
    /// without its last chunk, or a Content-Length body cut short where the length was unknown).
    case truncated(expected: UInt64?, received: UInt64)
    /// The request body's source could not be read.
    case input(String)
    /// The response body could not be written where it goes.
    case output(String)
    /// Internal: the server answered while the request body was still being sent.
    case serverAnswered

    var description: String {
        switch self {
        case .cannotConnect(let message), .timedOut(let message), .connectionFailed(let message),
             .malformedResponse(let message), .input(let message), .output(let message):
            return message
        case .truncated(let expected?, let received):
            return "the response was cut short: \(received) of \(expected) bytes arrived"
        case .truncated(nil, let received):
            return "the response was cut short after \(received) bytes (its end never arrived)"
        case .serverAnswered:
            return "the server answered before the request was sent"
        }
    }

    /// The command's exit status for this failure (Docs/CLI.md).
    var exitCode: Int32 {
        switch self {
        case .input, .output: return CLIExit.localIO
        default: return CLIExit.unreachable
        }
    }
}

/// Status line and headers of a response.
struct HTTPResponseHead: Sendable, Equatable {
    var status: Int
    var reason: String
    /// In order, names as sent.
    var headers: [(name: String, value: String)]

    /// The last value of the header `name` (case-insensitive).
    func header(_ name: String) -> String? {
        headers.last { $0.name.lowercased() == name.lowercased() }?.value
    }

    static func == (a: HTTPResponseHead, b: HTTPResponseHead) -> Bool {
        a.status == b.status && a.reason == b.reason
            && a.headers.map(\.name) == b.headers.map(\.name) && a.headers.map(\.value) == b.headers.map(\.value)
    }

    /// Parses the status line and header lines (without the blank line).
    static func parse(_ bytes: ArraySlice<UInt8>) throws(HTTPClientError) -> HTTPResponseHead {
        let text = String(decoding: bytes, as: UTF8.self)
        let lines = text.split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusLine = lines.first ?? ""
        let parts = statusLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), parts[1].count == 3,
              parts[1].allSatisfy(\.isASCII), let status = Int(parts[1]), (100...999).contains(status) else {
            throw .malformedResponse("not an HTTP/1.1 status line: '\(statusLine.prefix(80))'")
        }
        var headers: [(name: String, value: String)] = []
        for line in lines.dropFirst() where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                throw .malformedResponse("malformed header line '\(line.prefix(80))'")
            }
            let value = line[line.index(after: colon)...].trimmingCharacters(in: " \t")
            headers.append((String(line[..<colon]), value))
        }
        return HTTPResponseHead(status: status, reason: parts.count > 2 ? String(parts[2]) : "", headers: headers)
    }

    /// How the body is delimited (RFC 9112 §6.3), for a response to `method`.
    func framing(method: String) throws(HTTPClientError) -> HTTPResponse.Framing {
        if method == "HEAD" || (100..<200).contains(status) || status == 204 || status == 304 { return .none }
        if let encoding = header("Transfer-Encoding") {
            guard encoding.lowercased().split(separator: ",").last?.trimmingCharacters(in: " \t") == "chunked" else {
                throw .malformedResponse("unsupported Transfer-Encoding '\(encoding)'")
            }
            return .chunked
        }
        if let text = header("Content-Length") {
            guard !text.isEmpty, text.allSatisfy({ $0 >= "0" && $0 <= "9" }), let length = UInt64(text) else {
                throw .malformedResponse("malformed Content-Length '\(text.prefix(40))'")
            }
            return .length(length)
        }
        return .untilClose
    }
}

extension StringProtocol {
    /// Without the leading and trailing characters in `set`.
    func trimmingCharacters(in set: String) -> String {
        var slice = Substring(self)
        while let first = slice.first, set.contains(first) { slice = slice.dropFirst() }
        while let last = slice.last, set.contains(last) { slice = slice.dropLast() }
        return String(slice)
    }
}

/// A response whose head has arrived; its body is read once, with `stream` or `collect`.
final class HTTPResponse {
    enum Framing: Equatable {
        case none
        case length(UInt64)
        case chunked
        case untilClose
    }

    let head: HTTPResponseHead
    let framing: Framing
    private let connection: HTTPSocket

    private init(head: HTTPResponseHead, framing: Framing, connection: HTTPSocket) {
        self.head = head
        self.framing = framing
        self.connection = connection
    }

    var status: Int { head.status }

    /// Reads the head of the final response (skipping interim 1xx responses).
    fileprivate static func read(from connection: HTTPSocket, method: String) throws(HTTPClientError) -> HTTPResponse {
        /// A server sends a handful of interim responses at most.
        let interimMax = 8
        for _ in 0...interimMax {
            let head = try HTTPResponseHead.parse(connection.readHead())
            if (100..<200).contains(head.status) && head.status != 101 { continue }
            return HTTPResponse(head: head, framing: try head.framing(method: method), connection: connection)
        }
        throw .malformedResponse("more than \(interimMax) interim responses")
    }

    /// Hands the body to `sink` piece by piece (each at most `HTTPClient.bufferBytes`), after
    /// each piece tells `received` the total so far, and returns the body's length. A body that
    /// ends before its declared end is `.truncated`; a sink that throws ends the transfer with
    /// `.output`.
    @discardableResult
    func stream(into sink: (UnsafeRawBufferPointer) throws(HTTPClientError) -> Void,
                received: (UInt64) -> Void = { _ in }) throws(HTTPClientError) -> UInt64 {
        var total: UInt64 = 0
        switch framing {
        case .none:
            return 0
        case .length(let length):
            while total < length {
                let n = try connection.read(atMost: Int(min(UInt64(HTTPClient.bufferBytes), length - total)), sink: sink)
                guard n > 0 else { throw .truncated(expected: length, received: total) }
                total += UInt64(n)
                received(total)
            }
        case .untilClose:
            while true {
                let n = try connection.read(atMost: HTTPClient.bufferBytes, sink: sink)
                if n == 0 { break }
                total += UInt64(n)
                received(total)
            }
        case .chunked:
            while true {
                let line = try connection.readLine(bytesMax: HTTPClient.chunkLineBytesMax, atEndOfFile: .truncated(expected: nil, received: total))
                let sizeText = line.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: " \t") } ?? ""
                guard !sizeText.isEmpty, sizeText.count <= 16, let size = UInt64(sizeText, radix: 16) else {
                    throw .malformedResponse("malformed chunk size line '\(line.prefix(40))'")
                }
                if size == 0 {
                    // Trailer fields, then the blank line.
                    while try !connection.readLine(bytesMax: HTTPClient.chunkLineBytesMax, atEndOfFile: .truncated(expected: nil, received: total)).isEmpty {}
                    break
                }
                var left = size
                while left > 0 {
                    let n = try connection.read(atMost: Int(min(UInt64(HTTPClient.bufferBytes), left)), sink: sink)
                    guard n > 0 else { throw .truncated(expected: nil, received: total) }
                    left -= UInt64(n)
                    total += UInt64(n)
                    received(total)
                }
                guard try connection.readLine(bytesMax: 2, atEndOfFile: .truncated(expected: nil, received: total)).isEmpty else {
                    throw .malformedResponse("a chunk is longer than its size line says")
                }
            }
        }
        return total
    }

    /// The whole body, at most `bytesMax` bytes (more is `.malformedResponse`).
    func collect(bytesMax: Int) throws(HTTPClientError) -> [UInt8] {
        var body: [UInt8] = []
        try stream { (piece: UnsafeRawBufferPointer) throws(HTTPClientError) in
            guard body.count + piece.count <= bytesMax else {
                throw .malformedResponse("response body larger than \(bytesMax) bytes")
            }
            body.append(contentsOf: piece)
        }
        return body
    }
}

/// A connected TCP socket with a read buffer; every wait bounded by `timeoutSeconds`.
/// Closed when released.
private final class HTTPSocket {
    let fd: Int32
    let peer: String
    let timeoutSeconds: Int
    /// Bytes received and not yet consumed: `buffer[start..<end]`.
    private var buffer = [UInt8](repeating: 0, count: HTTPClient.bufferBytes)
    private var start = 0
    private var end = 0
    private var atEndOfFile = false

    private init(fd: Int32, peer: String, timeoutSeconds: Int) {
        self.fd = fd
        self.peer = peer
        self.timeoutSeconds = timeoutSeconds
    }

    deinit { close(fd) }

    static func connect(to address: HostPort, timeoutSeconds: Int) throws(HTTPClientError) -> HTTPSocket {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(address.host, "\(address.port)", &hints, &list)
        guard rc == 0, let first = list else {
            throw .cannotConnect("cannot resolve \(address.host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }

        var lastError = "no address"
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let info = entry {
            entry = info.pointee.ai_next
            let s = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
            guard s >= 0 else { lastError = String(cString: strerror(errno)); continue }
            #if canImport(Darwin)
            var one: Int32 = 1
            setsockopt(s, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<Int32>.size))
            #endif
            // SO_SNDTIMEO bounds a blocking connect() (Linux; on Darwin too for TCP). Reads and
            // writes afterwards wait in poll() with their own bound.
            var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
            setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            #if canImport(Glibc)
            let connected = Glibc.connect(s, info.pointee.ai_addr, info.pointee.ai_addrlen)
            #else
            let connected = Darwin.connect(s, info.pointee.ai_addr, info.pointee.ai_addrlen)
            #endif
            if connected == 0 {
                return HTTPSocket(fd: s, peer: "\(address)", timeoutSeconds: timeoutSeconds)
            }
            let code = errno
            lastError = code == EINPROGRESS || code == EAGAIN || code == ETIMEDOUT
                ? "no answer within \(timeoutSeconds) s" : String(cString: strerror(code))
            close(s)
        }
        throw .cannotConnect("cannot connect to the API at \(address): \(lastError)")
    }

    /// Waits until the socket is ready for `events` (bounded); returns the events that are.
    private func wait(_ events: Int16, doing what: String) throws(HTTPClientError) -> Int16 {
        var entry = pollfd(fd: fd, events: events, revents: 0)
        while true {
            let n = poll(&entry, 1, Int32(timeoutSeconds * 1000))
            if n > 0 { return entry.revents }
            if n == 0 { throw .timedOut("the API at \(peer) did not \(what) for \(timeoutSeconds) s") }
            if errno != EINTR { throw .connectionFailed("poll: \(String(cString: strerror(errno)))") }
        }
    }

    /// Writes all of `bytes`. With `stopIfReadable`, throws `.serverAnswered` as soon as the
    /// server has sent something (its answer, before the request is complete).
    func write(_ bytes: ArraySlice<UInt8>, stopIfReadable: Bool = false) throws(HTTPClientError) {
        var result: HTTPClientError?
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let ready: Int16
                do throws(HTTPClientError) {
                    ready = try wait(Int16(POLLOUT) | (stopIfReadable ? Int16(POLLIN) : 0), doing: "accept data")
                } catch {
                    result = error
                    return
                }
                if stopIfReadable && ready & Int16(POLLIN) != 0 {
                    result = .serverAnswered
                    return
                }
                #if canImport(Glibc)
                let flags = Int32(MSG_NOSIGNAL | MSG_DONTWAIT)
                #else
                let flags = Int32(MSG_DONTWAIT)
                #endif
                let n = send(fd, raw.baseAddress! + offset, raw.count - offset, flags)
                if n > 0 {
                    offset += n
                } else if n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) {
                    continue
                } else {
                    result = .connectionFailed("sending to the API at \(peer) failed: \(String(cString: strerror(errno)))")
                    return
                }
            }
        }
        if let result { throw result }
    }

    /// Receives more bytes into the buffer (compacting it first); false at end of file.
    private func fill() throws(HTTPClientError) -> Bool {
        if atEndOfFile { return false }
        if start > 0 {
            let count = end - start
            if count > 0 { buffer.withUnsafeMutableBytes { $0.baseAddress!.copyMemory(from: $0.baseAddress! + start, byteCount: count) } }
            start = 0
            end = count
        }
        guard end < buffer.count else { return true }
        while true {
            _ = try wait(Int16(POLLIN), doing: "send data")
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + end, $0.count - end, Int32(MSG_DONTWAIT)) }
            if n > 0 {
                end += n
                return true
            }
            if n == 0 {
                atEndOfFile = true
                return false
            }
            if errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK { continue }
            throw .connectionFailed("receiving from the API at \(peer) failed: \(String(cString: strerror(errno)))")
        }
    }

    /// The status line and headers, up to the blank line (consumed, not returned).
    func readHead() throws(HTTPClientError) -> ArraySlice<UInt8> {
        var scanned = 0
        while true {
            let available = end - start
            let from = max(start, start + scanned - 3)
            if available >= 4 && from <= end - 4 {
                for i in from...(end - 4)
                    where buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 {
                    let head = buffer[start..<i]
                    start = i + 4
                    return ArraySlice(Array(head))
                }
            }
            scanned = available
            guard available < HTTPClient.headBytesMax else {
                throw .malformedResponse("response head larger than \(HTTPClient.headBytesMax) bytes")
            }
            guard try fill() else {
                throw available == 0
                    ? .connectionFailed("the API at \(peer) closed the connection without an answer")
                    : .malformedResponse("the response head was cut short")
            }
        }
    }

    /// One CRLF-terminated line (without CRLF), at most `bytesMax` bytes.
    func readLine(bytesMax: Int, atEndOfFile error: HTTPClientError) throws(HTTPClientError) -> String {
        while true {
            if end - start >= 2 {
                for i in start..<(end - 1) where buffer[i] == 13 && buffer[i + 1] == 10 {
                    let line = String(decoding: buffer[start..<i], as: UTF8.self)
                    start = i + 2
                    return line
                }
            }
            guard end - start <= bytesMax else { throw .malformedResponse("a line of the response is longer than \(bytesMax) bytes") }
            guard try fill() else { throw error }
        }
    }

    /// Hands up to `count` body bytes to `sink`: buffered ones first, else one receive. 0 at end of file.
    func read(atMost count: Int, sink: (UnsafeRawBufferPointer) throws(HTTPClientError) -> Void) throws(HTTPClientError) -> Int {
        if start == end {
            start = 0
            end = 0
            guard try fill() else { return 0 }
        }
        let n = min(count, end - start)
        var failure: HTTPClientError?
        buffer.withUnsafeBytes { raw in
            do throws(HTTPClientError) {
                try sink(UnsafeRawBufferPointer(rebasing: raw[start..<(start + n)]))
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        start += n
        return n
    }
}
