import Foundation
import Hummingbird
import Locking
import Logging
import ShoalCore
import ShoalTestSupport
import Testing

/// FNV-1a over bytes: the fixture server's digest of what it received.
struct FNV1a: Sendable {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325
    mutating func add(_ bytes: some Sequence<UInt8>) {
        for byte in bytes { value = (value ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
    }
    static func of(_ bytes: [UInt8]) -> UInt64 {
        var h = FNV1a()
        h.add(bytes)
        return h.value
    }
}

/// A real HTTP server (Hummingbird) in the test process with fixed routes, on 127.0.0.1 and a
/// free port, for the length of `body`:
/// - `POST /upload`: reads the body as it streams, answers
///   `{"bytes":n,"fnv":h,"chunked":bool,"contentLength":"n"|""}`;
/// - `GET /blob/{n}`: n seeded bytes (seed 7) with a Content-Length, in 100,000-byte writes;
/// - `GET /chunked/{n}`: the same bytes without a length (chunked);
/// - `GET /bytes/{ref}`: 404 with the API's JSON error naming the reference;
/// - `POST /refuse`: 413 with a JSON error, without reading the body.
func withFixtureServer(_ body: @Sendable (Int) async throws -> Void) async throws {
    let router = Router()
    router.post("/upload") { request, _ -> Response in
        var count = 0
        var digest = FNV1a()
        for try await buffer in request.body {
            count += buffer.readableBytes
            digest.add(buffer.readableBytesView)
        }
        let chunked = request.headers[.transferEncoding]?.lowercased().contains("chunked") ?? false
        let length = request.headers[.contentLength] ?? ""
        let json = #"{"bytes":\#(count),"fnv":\#(digest.value),"chunked":\#(chunked),"contentLength":"\#(length)"}"#
        return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: json)))
    }
    for (path, withLength) in [("/blob/{n}", true), ("/chunked/{n}", false)] {
        router.get(RouterPath(path)) { _, context -> Response in
            let n = Int(context.parameters.get("n") ?? "") ?? 0
            let bytes = seededBytes(n, seed: 7)
            return Response(status: .ok, headers: [.contentType: "application/octet-stream"],
                            body: ResponseBody(contentLength: withLength ? n : nil) { writer in
                                var offset = 0
                                while offset < bytes.count {
                                    let end = min(offset + 100_000, bytes.count)
                                    try await writer.write(ByteBuffer(bytes: bytes[offset..<end]))
                                    offset = end
                                }
                                try await writer.finish(nil)
                            })
        }
    }
    router.get("/bytes/{ref}") { _, context -> Response in
        let ref = context.parameters.get("ref") ?? ""
        let json = #"{"error":{"code":"notFound","message":"no file \#(ref.prefix(8)): its root chunk is not here"}}"#
        return Response(status: .notFound, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: json)))
    }
    router.post("/refuse") { _, _ -> Response in
        let json = #"{"error":{"code":"chunkTooLarge","message":"refused before reading"}}"#
        return Response(status: .contentTooLarge, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: json)))
    }

    var logger = Logger(label: "shoal.cli.test")
    logger.logLevel = .critical
    let port = Locked<Int?>(nil)
    let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                          onServerRunning: { channel in port.withLock { $0 = channel.localAddress?.port } },
                          logger: logger)
    let server = Task { try await app.run() }
    defer { server.cancel() }
    _ = await eventually(timeout: TestTimeouts.listening, pollMs: 10) { port.withLock { $0 } != nil }
    try await body(try #require(port.withLock { $0 }, "the fixture server did not start within 60 s"))
    server.cancel()
    _ = await server.result
}

/// A TCP listener on 127.0.0.1 that answers each connection with fixed bytes, for what a
/// well-behaved server never sends: it reads the request head, writes `response`, then waits
/// `holdSeconds` and closes. The listener closes when the value is released.
final class RawServer: @unchecked Sendable {
    let port: Int
    private let fd: Int32

    init(response: [UInt8], holdSeconds: Double = 0) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else { throw TestFailure("cannot listen: errno \(errno)") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        let listener = fd
        // The accept thread owns the descriptor and closes it: `deinit` only shuts it down, so
        // the number cannot be reused by another socket while this thread may still accept on it.
        Thread {
            while true {
                let connection = accept(listener, nil, nil)
                guard connection >= 0 else {
                    close(listener)
                    return
                }
                Thread {
                    RawServer.serve(connection, response: response, holdSeconds: holdSeconds)
                }.start()
            }
        }.start()
    }

    private static func serve(_ connection: Int32, response: [UInt8], holdSeconds: Double) {
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var seen: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !seen.suffix(4).elementsEqual([13, 10, 13, 10]) && seen.count < 65536 {
            let n = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            seen.append(contentsOf: buffer[..<n])
        }
        _ = response.withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if holdSeconds > 0 { Thread.sleep(forTimeInterval: holdSeconds) }
        close(connection)
    }

    deinit { shutdown(fd, Int32(SHUT_RDWR)) }
}

/// The built `shoal` executable as a process.
enum CLI {
    /// Beside the test bundle (`.build/<triple>/debug/`): the test target depends on `shoal`.
    static var binaryPath: String {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("shoal").path
    }

    static var binaryExists: Bool { FileManager.default.isExecutableFile(atPath: binaryPath) }

    struct Output: Sendable {
        var status: Int32
        var stdout: [UInt8]
        var stderr: String
        var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    }

    /// Runs `shoal arguments` with a clean environment (plus `environment`), stdin from a pipe
    /// fed `stdin` (or /dev/null), and waits at most `timeoutSeconds`. Output goes to files,
    /// read once the process has exited.
    static func run(_ arguments: [String], environment: [String: String] = [:], stdin: [UInt8]? = nil,
                    timeoutSeconds: Double = 120) async throws -> Output {
        // A child that exits before reading its stdin must not kill the test process.
        signal(SIGPIPE, SIG_IGN)
        return try await onOwnThread {
            let directory = try TemporaryDirectory("shoal-cli")
            let outPath = directory.path + "/stdout", errPath = directory.path + "/stderr"
            FileManager.default.createFile(atPath: outPath, contents: nil)
            FileManager.default.createFile(atPath: errPath, contents: nil)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binaryPath)
            process.arguments = arguments
            process.environment = ["PATH": "/usr/bin:/bin"].merging(environment) { $1 }
            process.standardOutput = FileHandle(forWritingAtPath: outPath)
            process.standardError = FileHandle(forWritingAtPath: errPath)
            let input = Pipe()
            process.standardInput = stdin == nil ? FileHandle.nullDevice : input
            try process.run()
            if let stdin {
                Thread {
                    try? input.fileHandleForWriting.write(contentsOf: Data(stdin))
                    try? input.fileHandleForWriting.close()
                }.start()
            }
            let deadline = Date().addingTimeInterval(timeoutSeconds)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            return Output(status: process.terminationStatus, stdout: [UInt8](try Data(contentsOf: URL(fileURLWithPath: outPath))),
                          stderr: try String(contentsOfFile: errPath, encoding: .utf8))
        }
    }
}
