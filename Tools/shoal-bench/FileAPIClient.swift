import Crypto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The file routes of a node's HTTP API (`POST /bytes`, `GET /bytes/{ref}`), driven over a
/// plain socket with the body streamed from or to the caller, never held whole.
enum FileAPIClient {
    /// Seconds one `send` or `recv` may block. Above the 60 s a node waits for a chunk that
    /// does not come (`Shoal-Wait-Seconds`), so its answer, not this bound, ends such a wait.
    static let ioTimeoutSeconds = 120

    struct Upload {
        var reference: String
        var chunks: Int?
        /// From connecting until the response head arrived (the node answers after the commit).
        var seconds: Double
    }

    /// `POST /bytes` with `Content-Length` and the file's bytes, read from disk a buffer at a time.
    static func upload(port: Int, file: RandomFile, deadline: Double) throws -> Upload {
        let fd = open(file.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BenchError("open(\(file.path)): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let started = monotonicSeconds()
        let exchange = try HTTPExchange(port: port, ioTimeoutSeconds: ioTimeoutSeconds)
        try exchange.send("POST /bytes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                          + "Content-Length: \(file.size)\r\nConnection: close\r\n\r\n")
        let sent = try exchange.sendFile(fd, length: file.size, deadline: deadline)
        let head = try exchange.readHead(deadline: deadline)
        let seconds = monotonicSeconds() - started
        let body = try exchange.readSmallBody(head, deadline: deadline)
        guard head.status == 201 else {
            throw BenchError("POST /bytes: status \(head.status) after \(sent) of \(file.size) bytes sent: \(String(decoding: body.prefix(500), as: UTF8.self))")
        }
        guard let json = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
              let reference = json["reference"] as? String, reference.utf8.count == 64 else {
            throw BenchError("POST /bytes: 201 without a 64-digit reference: \(String(decoding: body.prefix(500), as: UTF8.self))")
        }
        if let size = json["size"] as? Int, size != file.size {
            throw BenchError("POST /bytes: the node counted \(size) bytes, \(file.size) were sent")
        }
        return Upload(reference: reference, chunks: json["chunks"] as? Int, seconds: seconds)
    }

    struct Download {
        var head: HTTPResponseHead
        var bytes: Int
        /// From connecting until the response head, the first body byte, the last body byte.
        var headSeconds: Double
        var firstByteSeconds: Double
        var seconds: Double
    }

    /// `GET /bytes/{reference}` (with `Range: bytes=a-b` when `range` is given and the extra
    /// header lines); the body goes to `consume` as it arrives. Throws unless the status is
    /// `expectedStatus`.
    static func download(port: Int, reference: String, range: ClosedRange<Int>? = nil, headers: [String] = [],
                         expectedStatus: Int, bytesMax: Int, deadline: Double,
                         _ consume: (UnsafeRawBufferPointer) throws -> Void) throws -> Download {
        let started = monotonicSeconds()
        let exchange = try HTTPExchange(port: port, ioTimeoutSeconds: ioTimeoutSeconds)
        var request = "GET /bytes/\(reference) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if let range { request += "Range: bytes=\(range.lowerBound)-\(range.upperBound)\r\n" }
        for line in headers { request += line + "\r\n" }
        try exchange.send(request + "\r\n")
        let head = try exchange.readHead(deadline: deadline)
        let headSeconds = monotonicSeconds() - started
        guard head.status == expectedStatus else {
            let body = (try? exchange.readSmallBody(head, deadline: min(deadline, monotonicSeconds() + 10))) ?? []
            throw BenchError("GET /bytes/\(reference)\(range.map { " bytes=\($0.lowerBound)-\($0.upperBound)" } ?? ""): status \(head.status), want \(expectedStatus): \(String(decoding: body.prefix(500), as: UTF8.self))")
        }
        var firstByte: Double?
        let bytes = try exchange.readBody(head, bytesMax: bytesMax, deadline: deadline) { piece in
            if firstByte == nil { firstByte = monotonicSeconds() - started }
            try consume(piece)
        }
        let seconds = monotonicSeconds() - started
        return Download(head: head, bytes: bytes, headSeconds: headSeconds, firstByteSeconds: firstByte ?? seconds, seconds: seconds)
    }

    /// The whole file, hashed as it arrives and checked against `file`: size and SHA-256.
    static func downloadChecked(port: Int, reference: String, file: RandomFile, headers: [String] = [],
                                deadline: Double) throws -> Download {
        var hasher = SHA256()
        let got = try download(port: port, reference: reference, headers: headers, expectedStatus: 200,
                               bytesMax: file.size, deadline: deadline) { hasher.update(bufferPointer: $0) }
        if let length = got.head.contentLength, length != file.size {
            throw BenchError("GET /bytes/\(reference): Content-Length \(length), the file has \(file.size) bytes")
        }
        let digest = Array(hasher.finalize())
        guard got.bytes == file.size, digest == file.sha256 else {
            throw BenchError("GET /bytes/\(reference): \(got.bytes) bytes with SHA-256 \(digest.hexString); the file has \(file.size) bytes, \(file.sha256.hexString)")
        }
        return got
    }
}
