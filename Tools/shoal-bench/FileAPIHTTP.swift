#if canImport(Glibc)
import Glibc
#endif

/// The status line and headers of an HTTP/1.1 response.
struct HTTPResponseHead: Equatable {
    /// Most bytes a response head may have before the bench gives up on it.
    static let bytesMax = 64 << 10

    var status: Int
    /// Header names lowercased, in the order received.
    var headers: [(name: String, value: String)]

    static func == (a: HTTPResponseHead, b: HTTPResponseHead) -> Bool {
        a.status == b.status && a.headers.map(\.name) == b.headers.map(\.name) && a.headers.map(\.value) == b.headers.map(\.value)
    }

    /// The first value of header `name` (any case).
    func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.name == lower }?.value
    }

    var contentLength: Int? { header("content-length").flatMap { Int($0.trimmingSpaces) } }
    var isChunked: Bool { header("transfer-encoding")?.lowercased().contains("chunked") ?? false }

    /// Parses the head without its final empty line: `HTTP/1.1 201 Created\r\nName: value…`.
    init(parsing text: String) throws {
        var lines = text.split(separator: "\r\n", omittingEmptySubsequences: false).makeIterator()
        guard let statusLine = lines.next() else { throw BenchError("empty HTTP response head") }
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]), (100...599).contains(status) else {
            throw BenchError("not an HTTP/1.x status line: \(statusLine.prefix(80))")
        }
        self.status = status
        headers = []
        while let line = lines.next() {
            if line.isEmpty { continue }
            guard let colon = line.firstIndex(of: ":") else { throw BenchError("malformed header line: \(line.prefix(80))") }
            headers.append((String(line[..<colon]).lowercased(), String(line[line.index(after: colon)...]).trimmingSpaces))
        }
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}

/// Decodes a `Transfer-Encoding: chunked` body as it arrives, handing on the data and keeping
/// at most one size line (bounded) of its own. Performs no I/O.
struct ChunkedBodyDecoder {
    /// Most bytes of one size line (hex digits and extensions) or trailer line.
    static let lineBytesMax = 1024

    private enum State {
        /// Reading a size line; `line` holds what came so far.
        case sizeLine
        /// `remaining` bytes of data left in the current chunk.
        case data(remaining: Int)
        /// The CRLF after a chunk's data; `seen` of its two bytes read.
        case dataEnd(seen: Int)
        /// After the last (zero) chunk: trailer lines until an empty one.
        case trailer
        case done
    }

    private var state = State.sizeLine
    private var line: [UInt8] = []

    var isDone: Bool { if case .done = state { return true } else { return false } }

    /// Consumes `bytes`; `emit` gets each piece of data. Returns how many bytes were used (less
    /// than given only once the body is done: what follows belongs to no body).
    mutating func feed(_ bytes: UnsafeRawBufferPointer, _ emit: (UnsafeRawBufferPointer) throws -> Void) throws -> Int {
        var i = 0
        while i < bytes.count {
            switch state {
            case .done:
                return i
            case .data(let remaining):
                let n = min(remaining, bytes.count - i)
                try emit(UnsafeRawBufferPointer(rebasing: bytes[i..<i + n]))
                i += n
                state = remaining - n == 0 ? .dataEnd(seen: 0) : .data(remaining: remaining - n)
            case .dataEnd(let seen):
                let expected: UInt8 = seen == 0 ? 13 : 10
                guard bytes[i] == expected else { throw BenchError("chunked body: no CRLF after a chunk's data") }
                i += 1
                state = seen == 0 ? .dataEnd(seen: 1) : .sizeLine
            case .sizeLine, .trailer:
                let byte = bytes[i]
                i += 1
                if byte != 10 {
                    line.append(byte)
                    if line.count > Self.lineBytesMax { throw BenchError("chunked body: a line longer than \(Self.lineBytesMax) bytes") }
                    continue
                }
                if line.last == 13 { line.removeLast() }
                let text = String(decoding: line, as: UTF8.self)
                line.removeAll(keepingCapacity: true)
                if case .trailer = state {
                    if text.isEmpty { state = .done }
                    continue
                }
                let digits = text.split(separator: ";", maxSplits: 1).first.map { $0.trimmingSpaces } ?? ""
                guard !digits.isEmpty, digits.count <= 15, let size = Int(digits, radix: 16) else {
                    throw BenchError("chunked body: bad chunk size line \(text.prefix(40))")
                }
                state = size == 0 ? .trailer : .data(remaining: size)
            }
        }
        return i
    }
}

/// One HTTP/1.1 request and its response over a plain TCP connection to 127.0.0.1: the bench
/// links no HTTP client, and a plain socket shows what the node costs, not what a client adds.
/// Every read and write is bounded by the socket timeouts and by the caller's deadline.
final class HTTPExchange {
    /// Bytes read per `recv` and sent per `send`.
    static let ioBytes = 1 << 20

    private let fd: Int32
    /// Bytes received past the response head, not yet handed to the body's reader.
    private var pending: [UInt8] = []
    private var buffer: [UInt8]

    /// Connects to 127.0.0.1:`port`; each `send` and `recv` waits at most `ioTimeoutSeconds`.
    init(port: Int, ioTimeoutSeconds: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket: \(String(cString: strerror(errno)))") }
        buffer = [UInt8](repeating: 0, count: Self.ioBytes)
        var timeout = timeval(tv_sec: ioTimeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw BenchError("connect 127.0.0.1:\(port): \(message)")
        }
    }

    deinit { close(fd) }

    /// Sends every byte; throws on a closed connection or a timeout (never SIGPIPE).
    func send(_ bytes: UnsafeRawBufferPointer) throws {
        var sent = 0
        while sent < bytes.count {
            let n = Glibc.send(fd, bytes.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
            if n < 0 {
                if errno == EINTR { continue }
                throw BenchError("send: \(String(cString: strerror(errno)))")
            }
            sent += n
        }
    }

    func send(_ text: String) throws {
        try Array(text.utf8).withUnsafeBytes { try send($0) }
    }

    /// Sends `length` bytes of the open file `fileFD` from its current offset, read and sent a
    /// buffer at a time (never the whole file in memory). Stops early, returning the bytes
    /// sent, when the server answers before taking the whole body (an error) or closes.
    func sendFile(_ fileFD: Int32, length: Int, deadline: Double) throws -> Int {
        var sent = 0
        var chunk = [UInt8](repeating: 0, count: Self.ioBytes)
        while sent < length {
            let n = chunk.withUnsafeMutableBytes { read(fileFD, $0.baseAddress, min($0.count, length - sent)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw BenchError("reading the file to send: \(n == 0 ? "it ended early" : String(cString: strerror(errno)))") }
            var done = 0
            while done < n {
                // Wait until the socket takes more or the server has something to say; a
                // server that answered early stops reading, and a blocking send would wait
                // for its idle timeout.
                var ready = pollfd(fd: fd, events: Int16(POLLIN | POLLOUT), revents: 0)
                let remaining = deadline - monotonicSeconds()
                guard remaining > 0 else { throw BenchError("sending the body: deadline passed after \(sent + done) of \(length) bytes") }
                let polled = poll(&ready, 1, Int32(min(1000, max(1, remaining * 1000))))
                if polled < 0 && errno != EINTR { throw BenchError("poll: \(String(cString: strerror(errno)))") }
                if polled <= 0 { continue }
                if ready.revents & Int16(POLLIN | POLLERR | POLLHUP) != 0 { return sent + done }
                let wrote = chunk.withUnsafeBytes {
                    Glibc.send(fd, $0.baseAddress! + done, n - done, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                }
                if wrote < 0 {
                    if errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK { continue }
                    return sent + done
                }
                done += wrote
            }
            sent += n
        }
        return sent
    }

    /// One `recv` into the buffer; 0 at end of stream.
    private func receive() throws -> Int {
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw BenchError("recv: \(errno == EAGAIN || errno == EWOULDBLOCK ? "timed out" : String(cString: strerror(errno)))")
        }
    }

    /// Reads until the end of the response head (bounded by `HTTPResponseHead.bytesMax` and
    /// `deadline`); the bytes after it stay for `readBody`.
    func readHead(deadline: Double) throws -> HTTPResponseHead {
        var head: [UInt8] = []
        var scanned = 0
        while true {
            if head.count >= 4 {
                var i = max(0, scanned - 3)
                while i + 3 < head.count {
                    if head[i] == 13 && head[i + 1] == 10 && head[i + 2] == 13 && head[i + 3] == 10 {
                        pending = Array(head[(i + 4)...])
                        return try HTTPResponseHead(parsing: String(decoding: head[..<i], as: UTF8.self))
                    }
                    i += 1
                }
                scanned = head.count
            }
            guard head.count < HTTPResponseHead.bytesMax else { throw BenchError("response head longer than \(HTTPResponseHead.bytesMax) bytes") }
            guard monotonicSeconds() < deadline else { throw BenchError("no complete response head by the deadline") }
            let n = try receive()
            guard n > 0 else { throw BenchError("connection closed before a complete response head (\(head.count) bytes)") }
            head += buffer[0..<n]
        }
    }

    /// Reads the body of `head` and hands it to `consume` piece by piece, never holding it
    /// whole. Content-Length, chunked, or (neither) up to the end of the stream. Throws past
    /// `bytesMax` bytes or `deadline`. Returns the body's length.
    @discardableResult
    func readBody(_ head: HTTPResponseHead, bytesMax: Int, deadline: Double,
                  _ consume: (UnsafeRawBufferPointer) throws -> Void) throws -> Int {
        var total = 0
        var chunked = head.isChunked ? ChunkedBodyDecoder() : nil
        let length = chunked == nil ? head.contentLength : nil
        if let length, length > bytesMax { throw BenchError("response body of \(length) bytes is over the bound of \(bytesMax)") }
        // Hands on what arrived; returns true once the body is complete.
        func take(_ bytes: UnsafeRawBufferPointer) throws -> Bool {
            if chunked != nil {
                _ = try chunked!.feed(bytes) { piece in
                    total += piece.count
                    guard total <= bytesMax else { throw BenchError("chunked response body over the bound of \(bytesMax) bytes") }
                    try consume(piece)
                }
                return chunked!.isDone
            }
            let n = length.map { min(bytes.count, $0 - total) } ?? bytes.count
            total += n
            guard total <= bytesMax else { throw BenchError("response body over the bound of \(bytesMax) bytes") }
            if n > 0 { try consume(UnsafeRawBufferPointer(rebasing: bytes[0..<n])) }
            return length.map { total >= $0 } ?? false
        }
        var done = length == 0
        if !done && !pending.isEmpty {
            done = try pending.withUnsafeBytes { try take($0) }
            pending = []
        }
        while !done {
            guard monotonicSeconds() < deadline else { throw BenchError("response body incomplete at the deadline (\(total) bytes)") }
            let n = try receive()
            if n == 0 {
                if length == nil && chunked == nil { break }  // delimited by the end of the stream
                throw BenchError("connection closed after \(total) of \(length.map(String.init) ?? "?") body bytes")
            }
            done = try buffer.withUnsafeBytes { try take(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        return total
    }

    /// The whole body, for small answers (JSON, errors).
    func readSmallBody(_ head: HTTPResponseHead, deadline: Double) throws -> [UInt8] {
        var body: [UInt8] = []
        try readBody(head, bytesMax: 1 << 20, deadline: deadline) { body += $0 }
        return body
    }
}
