import ArgumentParser
import ShoalAPI

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `shoal status`: asks a running node's API for `/status` (or `/peers`) and prints the JSON.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Print a running node's status (GET /status) or its peers (GET /peers) as JSON.",
        discussion: "Exit status: 0 on HTTP 200, 1 otherwise (the API's error is printed on stderr)."
    )

    @Option(help: ArgumentHelp("The node's API address (default: SHOAL_API, else 127.0.0.1:1633).", valueName: "host:port"))
    var api: String?

    @Flag(help: "Print the connected peers (GET /peers) instead.")
    var peers = false

    /// The whole exchange (connect, send, receive) must finish within this.
    static let timeoutSeconds = 10

    func validate() throws {
        if let api, HostPort(parsing: api, allowPortZero: false) == nil {
            throw ValidationError("--api: '\(api)' is not HOST:PORT")
        }
    }

    func run() throws {
        let text = api ?? getenv(DaemonSettings.EnvironmentKey.api).map { String(cString: $0) }
        let address: HostPort
        if let text, !text.isEmpty {
            guard let parsed = HostPort(parsing: text, allowPortZero: false) else {
                Terminal.err("shoal: \(DaemonSettings.EnvironmentKey.api): '\(text)' is not HOST:PORT")
                throw ExitCode.validationFailure
            }
            address = parsed
        } else {
            address = DaemonSettings.defaults.api
        }
        let path = peers ? "/peers" : "/status"
        let response: (status: Int, body: String)
        do {
            response = try httpGet(address, path: path, timeoutSeconds: StatusCommand.timeoutSeconds)
        } catch {
            Terminal.err("shoal: cannot reach the API at \(address): \(error)")
            throw ExitCode.failure
        }
        if response.status == 200 {
            Terminal.out(response.body.hasSuffix("\n") ? String(response.body.dropLast()) : response.body)
        } else {
            Terminal.err("shoal: GET \(path) answered \(response.status): \(response.body)")
            throw ExitCode.failure
        }
    }
}

/// One HTTP/1.1 GET over a blocking socket, `Connection: close`: enough for a status probe,
/// no client library.
func httpGet(_ address: HostPort, path: String, timeoutSeconds: Int) throws(DaemonError) -> (status: Int, body: String) {
    /// A status document is a few KiB; a peers list of hundreds of peers stays far below this.
    let responseBytesMax = 16 << 20
    var hints = addrinfo()
    hints.ai_family = AF_UNSPEC
    #if canImport(Glibc)
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    #else
    hints.ai_socktype = SOCK_STREAM
    #endif
    var list: UnsafeMutablePointer<addrinfo>?
    let rc = getaddrinfo(address.host, "\(address.port)", &hints, &list)
    guard rc == 0, let first = list else { throw DaemonError("cannot resolve \(address.host): \(String(cString: gai_strerror(rc)))") }
    defer { freeaddrinfo(list) }

    var fd: Int32 = -1
    var lastError = "no address"
    var entry: UnsafeMutablePointer<addrinfo>? = first
    while let info = entry {
        entry = info.pointee.ai_next
        let s = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
        guard s >= 0 else { lastError = String(cString: strerror(errno)); continue }
        // On Linux, SO_SNDTIMEO also bounds connect().
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        if connect(s, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 {
            fd = s
            break
        }
        lastError = String(cString: strerror(errno))
        close(s)
    }
    guard fd >= 0 else { throw DaemonError(lastError) }
    defer { close(fd) }

    let request = Array("GET \(path) HTTP/1.1\r\nHost: \(address)\r\nAccept: application/json\r\nConnection: close\r\n\r\n".utf8)
    var sent = 0
    while sent < request.count {
        let n = request.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { throw DaemonError("send: \(String(cString: strerror(errno)))") }
        sent += n
    }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
        if n < 0 && errno == EINTR { continue }
        guard n >= 0 else { throw DaemonError("receive: \(String(cString: strerror(errno)))") }
        if n == 0 { break }
        bytes.append(contentsOf: buffer[..<n])
        guard bytes.count <= responseBytesMax else { throw DaemonError("response larger than \(responseBytesMax) bytes") }
        if let response = try parseHTTPResponse(bytes) { return response }
    }
    guard let response = try parseHTTPResponse(bytes, complete: true) else { throw DaemonError("incomplete HTTP response") }
    return response
}

/// The status and body of a response with a `Content-Length`, once all of it has arrived (or
/// whatever arrived, when the server closed: `complete`); nil while more is due.
private func parseHTTPResponse(_ bytes: [UInt8], complete: Bool = false) throws(DaemonError) -> (status: Int, body: String)? {
    let separator: [UInt8] = [13, 10, 13, 10]
    guard let headerEnd = bytes.indices.first(where: { bytes[$0...].starts(with: separator) }) else {
        if complete { throw DaemonError("malformed HTTP response") }
        return nil
    }
    let lines = String(decoding: bytes[..<headerEnd], as: UTF8.self).split(separator: "\r\n")
    let parts = (lines.first ?? "").split(separator: " ")
    guard parts.count >= 2, let status = Int(parts[1]) else { throw DaemonError("malformed HTTP status line '\(lines.first ?? "")'") }
    var length: Int?
    for line in lines.dropFirst() {
        let pair = line.split(separator: ":", maxSplits: 1)
        if pair.count == 2, pair[0].lowercased() == "content-length" {
            length = Int(pair[1].filter { $0 != " " && $0 != "\t" })
        }
    }
    let body = bytes[(headerEnd + 4)...]
    if let length {
        guard body.count >= length else { return complete ? (status, String(decoding: body, as: UTF8.self)) : nil }
        return (status, String(decoding: body.prefix(length), as: UTF8.self))
    }
    return complete ? (status, String(decoding: body, as: UTF8.self)) : nil
}
