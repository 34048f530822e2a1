import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A plain TCP transfer on 127.0.0.1 through a port of the bench's own: the ceiling a shaped
/// link gives any protocol, measured on the same port pair the node then uses.
///
/// The listener sends and the client receives, as the node that holds the chunks serves the
/// one that pulls them. The client closes first, so the TIME_WAIT stays on its ephemeral port
/// and the listener's port is free for the node that binds it next.
final class PlainTransfer {
    let port: Int
    private var listenFD: Int32
    /// Bytes per `send`/`recv` call.
    static let bufferBytes = 64 << 10

    /// Listens on 127.0.0.1 at a port the kernel picks.
    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = PlainTransfer.loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && listen(fd, 1) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else {
            let reason = String(cString: strerror(errno))
            Glibc.close(fd)
            throw BenchError("bind/listen 127.0.0.1:0: \(reason)")
        }
        listenFD = fd
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit { close() }

    func close() {
        if listenFD >= 0 { Glibc.close(listenFD) }
        listenFD = -1
    }

    /// What the client received, and the seconds from its connect to the last byte (or to
    /// the deadline, when the link stalled).
    struct Outcome {
        var received: Int
        var seconds: Double
        var complete: Bool
    }

    /// Connects a client, sends it `bytes` from the listener's side and times the receipt.
    /// Every wait ends by `secondsMax`.
    func run(bytes: Int, secondsMax: Double) throws -> Outcome {
        let deadline = monotonicSeconds() + secondsMax
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard client >= 0 else { throw BenchError("socket: \(String(cString: strerror(errno)))") }
        defer { Glibc.close(client) }
        PlainTransfer.setTimeouts(client, seconds: 1)
        var address = PlainTransfer.loopback(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw BenchError("connect 127.0.0.1:\(port): \(String(cString: strerror(errno)))") }
        let started = monotonicSeconds()
        let server = accept(listenFD, nil, nil)  // queued already: returns at once
        guard server >= 0 else { throw BenchError("accept: \(String(cString: strerror(errno)))") }
        PlainTransfer.setTimeouts(server, seconds: 1)
        let sent = DispatchSemaphore(value: 0)
        Thread {
            PlainTransfer.send(bytes, on: server, until: deadline)
            // Wait for the client's close (it closes first), then close.
            var byte: UInt8 = 0
            while monotonicSeconds() < deadline && recv(server, &byte, 1, 0) != 0 && (errno == EAGAIN || errno == EINTR) {}
            Glibc.close(server)
            sent.signal()
        }.start()
        var received = 0, lastByte = started
        var buffer = [UInt8](repeating: 0, count: PlainTransfer.bufferBytes)
        while received < bytes && monotonicSeconds() < deadline {
            let n = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                received += n
                lastByte = monotonicSeconds()
            } else if n == 0 || (errno != EAGAIN && errno != EINTR) {
                break
            }
        }
        let outcome = Outcome(received: received, seconds: (received < bytes ? monotonicSeconds() : lastByte) - started,
                              complete: received == bytes)
        shutdown(client, Int32(SHUT_RDWR))
        _ = sent.wait(timeout: .now() + max(1, deadline - monotonicSeconds()))
        return outcome
    }

    private static func send(_ bytes: Int, on fd: Int32, until deadline: Double) {
        let buffer = [UInt8](repeating: 0x5a, count: bufferBytes)
        var sent = 0
        while sent < bytes && monotonicSeconds() < deadline {
            let n = buffer.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, min($0.count, bytes - sent), Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                sent += n
            } else if n < 0 && errno != EAGAIN && errno != EINTR {
                return
            }
        }
    }

    private static func setTimeouts(_ fd: Int32, seconds: Int) {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}
