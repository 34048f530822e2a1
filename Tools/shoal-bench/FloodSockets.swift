import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What the hostile clients of one flood saw, summed over clients.
struct FloodTally: Sendable {
    /// Connections tried (TCP connects for churn and slow, dials for frames and garbage).
    var connects = 0
    /// TCP did not connect (refused, timed out, no local port left).
    var connectFailed = 0
    /// Of `connectFailed`: the kernel had no local port left for that source address.
    var localPortsExhausted = 0
    /// TLS and the hello completed (frames, garbage).
    var established = 0
    /// Closed by the victim before it could have been an offence: at once after connecting
    /// (within `refusedWithinSeconds`), or, for frames and garbage, before the handshake ended.
    var refused = 0
    /// Closed by the victim after the offence began.
    var dropped = 0
    /// Still open when the flood ended.
    var survived = 0
    /// Connections from a source address the victim had already dropped a connection of.
    var returns = 0
    /// Of `returns`: refused.
    var returnsRefused = 0
    /// Milliseconds from the offence to the victim's close (dropped connections).
    var dropMs: [Double] = []
    /// Milliseconds from connecting to the victim's close (refused connections).
    var refuseMs: [Double] = []
    var returnRefuseMs: [Double] = []
    /// Bytes the clients wrote after their handshake (frames, garbage).
    var bytesWritten = 0

    /// Samples kept per list; a flood of a million connections needs no more for its quantiles.
    static let samplesMax = 200_000

    static let refusedWithinSeconds = 0.5

    mutating func merge(_ other: FloodTally) {
        connects += other.connects
        connectFailed += other.connectFailed
        localPortsExhausted += other.localPortsExhausted
        established += other.established
        refused += other.refused
        dropped += other.dropped
        survived += other.survived
        returns += other.returns
        returnsRefused += other.returnsRefused
        dropMs += other.dropMs.prefix(max(0, Self.samplesMax - dropMs.count))
        refuseMs += other.refuseMs.prefix(max(0, Self.samplesMax - refuseMs.count))
        returnRefuseMs += other.returnRefuseMs.prefix(max(0, Self.samplesMax - returnRefuseMs.count))
        bytesWritten += other.bytesWritten
    }

    mutating func closedByVictim(afterSeconds seconds: Double, returning: Bool) {
        if seconds < Self.refusedWithinSeconds {
            refused += 1
            if refuseMs.count < Self.samplesMax { refuseMs.append(seconds * 1000) }
            if returning {
                returnsRefused += 1
                if returnRefuseMs.count < Self.samplesMax { returnRefuseMs.append(seconds * 1000) }
            }
        } else {
            dropped += 1
            if dropMs.count < Self.samplesMax { dropMs.append(seconds * 1000) }
        }
    }
}

/// When a flood stops: its clients look at `stopped` between operations, and never run past
/// `deadline` (monotonic seconds) whatever happens.
final class FloodControl: Sendable {
    let deadline: Double
    private let stopFlag = Atomic<Bool>(false)
    private let heldNow = Atomic<Int>(0)
    private let heldMost = Atomic<Int>(0)

    init(deadline: Double) { self.deadline = deadline }

    var stopped: Bool { stopFlag.load(ordering: .relaxed) || monotonicSeconds() >= deadline }
    func stop() { stopFlag.store(true, ordering: .relaxed) }

    /// Connections the clients hold open right now, and the most at once.
    func held(_ delta: Int) {
        let now = heldNow.add(delta, ordering: .relaxed).newValue
        if delta > 0 { heldMost.max(now, ordering: .relaxed) }
    }

    var heldPeak: Int { heldMost.load(ordering: .relaxed) }
}

/// Plain TCP sockets from a chosen loopback source address, blocking with timeouts.
enum RawSocket {
    /// Linux's `IP_BIND_ADDRESS_NO_PORT`: the port is picked at connect, by the whole 4-tuple,
    /// so one source address is not limited to one connection per ephemeral port.
    private static let ipBindAddressNoPort: Int32 = 24

    /// A connected socket from `source` to 127.0.0.1:`port`, or the errno of the failure.
    static func connect(from source: String, toPort port: Int, timeoutMs: Int) -> Result<Int32, Errno> {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(Errno(errno)) }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_IP), ipBindAddressNoPort, &one, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: timeoutMs / 1000, tv_usec: (timeoutMs % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var local = sockaddr_in(address: source, port: 0)
        var remote = sockaddr_in(address: "127.0.0.1", port: port)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else {
            let e = errno
            close(fd)
            return .failure(Errno(e))
        }
        let connected = withUnsafePointer(to: &remote) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let e = errno
            close(fd)
            return .failure(Errno(e))
        }
        return .success(fd)
    }

    /// True when the victim has already closed `fd` (end of file or reset waiting), without
    /// consuming anything.
    static func closedByPeer(_ fd: Int32) -> Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
    }
}

struct Errno: Error {
    let code: Int32
    init(_ code: Int32) { self.code = code }
}

extension sockaddr_in {
    init(address: String, port: Int) {
        self.init()
        sin_family = sa_family_t(AF_INET)
        sin_port = in_port_t(UInt16(port).bigEndian)
        sin_addr.s_addr = inet_addr(address)
    }
}

/// The source address of hostile client `index` (0-based): 127.0.1.1, 127.0.1.2, … — another
/// /24 than the honest peer's 127.0.0.1.
func hostileSource(_ index: Int) -> String { "127.0.1.\(index % 254 + 1)" }

/// Runs `clients` bodies on threads of their own (blocking sockets) and sums their tallies.
func onThreads(clients: Int, _ body: @escaping @Sendable (Int) -> FloodTally) async -> FloodTally {
    await withTaskGroup(of: FloodTally.self) { group in
        for index in 0..<clients {
            group.addTask {
                await withCheckedContinuation { continuation in
                    let thread = Thread { continuation.resume(returning: body(index)) }
                    thread.stackSize = 256 << 10
                    thread.start()
                }
            }
        }
        var total = FloodTally()
        for await tally in group { total.merge(tally) }
        return total
    }
}

// MARK: Churn

/// Opens a TCP connection and drops it, again and again, as fast as it can.
func churnClient(index: Int, port: Int, control: FloodControl) -> FloodTally {
    var tally = FloodTally()
    let source = hostileSource(index)
    while !control.stopped {
        tally.connects += 1
        switch RawSocket.connect(from: source, toPort: port, timeoutMs: 1000) {
        case .failure(let error):
            tally.connectFailed += 1
            if error.code == EADDRNOTAVAIL {
                tally.localPortsExhausted += 1
                usleep(10_000)
            }
        case .success(let fd):
            // Seen only if the victim closed it in the moment between connect and close.
            if RawSocket.closedByPeer(fd) { tally.refused += 1 }
            close(fd)
        }
    }
    return tally
}

// MARK: Slow

/// Holds `count` connections open, each sending the next byte of a TLS ClientHello every
/// `intervalSeconds`; reopens what the victim closes (after `refusedBackoffSeconds` when it
/// was refused at once, so that refusals do not turn this into churn).
func slowClient(index: Int, count: Int, port: Int, intervalSeconds: Double, control: FloodControl) -> FloodTally {
    struct Slot {
        var fd: Int32 = -1
        var openedAt = 0.0
        var nextSendAt = 0.0
        var reopenAt = 0.0
        var sent = 0
    }
    // A TLS 1.2-framed ClientHello's first bytes (record header, handshake header, version),
    // then anything: the victim never gets enough to answer.
    let hello: [UInt8] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03] + (0..<245).map { UInt8(truncatingIfNeeded: $0 &* 37) }
    let refusedBackoffSeconds = 0.1
    let source = hostileSource(index)
    var tally = FloodTally()
    var slots = [Slot](repeating: Slot(), count: count)
    var droppedBefore = false
    // Spread the connections' sends over the interval so the bytes trickle evenly.
    let stagger = intervalSeconds / Double(max(1, count))

    func open(_ i: Int, now: Double) {
        tally.connects += 1
        switch RawSocket.connect(from: source, toPort: port, timeoutMs: 1000) {
        case .failure(let error):
            tally.connectFailed += 1
            if error.code == EADDRNOTAVAIL { tally.localPortsExhausted += 1 }
            slots[i].reopenAt = now + refusedBackoffSeconds
        case .success(let fd):
            slots[i] = Slot(fd: fd, openedAt: now, nextSendAt: now + Double(i) * stagger, reopenAt: 0, sent: 0)
            if droppedBefore { tally.returns += 1 }
            control.held(1)
        }
    }

    func closed(_ i: Int, now: Double) {
        let seconds = now - slots[i].openedAt
        tally.closedByVictim(afterSeconds: seconds, returning: droppedBefore)
        if seconds >= FloodTally.refusedWithinSeconds { droppedBefore = true }
        close(slots[i].fd)
        control.held(-1)
        slots[i].fd = -1
        slots[i].reopenAt = seconds < FloodTally.refusedWithinSeconds ? now + refusedBackoffSeconds : now
    }

    var buffer = [UInt8](repeating: 0, count: 4096)
    while !control.stopped {
        let now = monotonicSeconds()
        for i in slots.indices where slots[i].fd < 0 && slots[i].reopenAt <= now && !control.stopped {
            open(i, now: monotonicSeconds())
        }
        for i in slots.indices where slots[i].fd >= 0 && slots[i].nextSendAt <= now {
            let byte = hello[slots[i].sent % hello.count]
            let n = withUnsafePointer(to: byte) { send(slots[i].fd, $0, 1, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n < 0 && errno != EAGAIN && errno != EWOULDBLOCK {
                closed(i, now: now)
                continue
            }
            slots[i].sent += 1
            slots[i].nextSendAt += intervalSeconds
        }
        var fds = slots.indices.filter { slots[$0].fd >= 0 }.map { pollfd(fd: slots[$0].fd, events: Int16(POLLIN), revents: 0) }
        let ready = poll(&fds, nfds_t(fds.count), 100)
        guard ready > 0 else { continue }
        let at = monotonicSeconds()
        for entry in fds where entry.revents != 0 {
            guard let i = slots.firstIndex(where: { $0.fd == entry.fd }) else { continue }
            let n = recv(entry.fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                closed(i, now: at)
            }
            // n > 0: the victim said something (an alert); the connection stays until it closes.
        }
    }
    for i in slots.indices where slots[i].fd >= 0 {
        tally.survived += 1
        close(slots[i].fd)
        control.held(-1)
    }
    return tally
}
