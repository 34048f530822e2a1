import Foundation
import Locking

#if canImport(Glibc)
import Glibc
#endif

/// A slow link on loopback for one TCP port only, in both directions, made with `tc`.
///
/// Other processes use loopback at the same time, so `lo` as a whole is never shaped: an
/// `htb` root qdisc sends unclassified packets straight through (its `default` is 0, the
/// direct queue), and two `u32` filters move the packets whose source or destination port is
/// `port` into one class, whose leaf is a `tbf` (`rate R burst B latency 400ms`). This kernel
/// has no `prio` qdisc (nor `netem`), which would otherwise be the root.
///
/// `burst` must hold the largest packet: loopback's MTU is 65,536 bytes, so a packet with its
/// link header is 65,550 bytes, and a `tbf` with `burst 64kb` (65,536) drops every full-sized
/// segment for good, stalling the TCP connection (measured: a plain transfer times out).
///
/// Only one shaper exists at a time on this machine: it holds an exclusive `flock` on
/// `lockPath` while its qdisc is installed. A qdisc of ours found while holding the lock is
/// the leftover of a run that died, and is removed; a root qdisc of anyone else's is left
/// alone and the shaper is unavailable.
final class LinkShaper {
    /// The handles of the root `htb`, its shaped class and the `tbf`; the root's is how a
    /// stale qdisc of ours is recognised.
    static let rootHandle = "5e1:"
    static let shapedClass = "5e1:1"
    static let tbfHandle = "5e2:"
    static let lockPath = "/tmp/shoal-bench-link-shaper.lock"
    /// How long to wait for another run's shaper to finish before giving up.
    static let lockWaitSecondsMax = 60.0
    /// `tc` calls are quick; one that hangs is a failure.
    static let tcSecondsMax = 10.0

    let tc: String
    let device: String
    let port: Int
    let rateBitsPerSecond: Int
    let burstBytes: Int
    private let lockFD: Int32
    private var removed = false

    private init(tc: String, device: String, port: Int, rateBitsPerSecond: Int, burstBytes: Int, lockFD: Int32) {
        (self.tc, self.device, self.port) = (tc, device, port)
        (self.rateBitsPerSecond, self.burstBytes, self.lockFD) = (rateBitsPerSecond, burstBytes, lockFD)
    }

    /// Why shaping cannot be done here (no `tc`, no CAP_NET_ADMIN, a missing qdisc kind).
    struct Unavailable: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// The `tc` argument lists that install the shaping (printed in the report, run in order).
    static func installCommands(device: String, port: Int, rateBitsPerSecond: Int, burstBytes: Int) -> [[String]] {
        [
            ["qdisc", "add", "dev", device, "root", "handle", rootHandle, "htb"],
            // Far above any rate shaped here: the tbf below does the shaping, htb only classifies.
            ["class", "add", "dev", device, "parent", rootHandle, "classid", shapedClass,
             "htb", "rate", "10gbit", "burst", "1mb", "cburst", "1mb"],
            ["qdisc", "add", "dev", device, "parent", shapedClass, "handle", tbfHandle,
             "tbf", "rate", "\(rateBitsPerSecond)bit", "burst", "\(burstBytes)", "latency", "400ms"],
            ["filter", "add", "dev", device, "parent", rootHandle, "protocol", "ip", "prio", "1",
             "u32", "match", "ip", "sport", "\(port)", "0xffff", "flowid", shapedClass],
            ["filter", "add", "dev", device, "parent", rootHandle, "protocol", "ip", "prio", "1",
             "u32", "match", "ip", "dport", "\(port)", "0xffff", "flowid", shapedClass],
        ]
    }

    /// The smallest burst that passes `device`'s largest packet (MTU plus a 14-byte link
    /// header), and never less than the 64 KiB the sync bench's issue names.
    static func minimumBurstBytes(device: String) -> Int {
        let mtu = (try? String(contentsOfFile: "/sys/class/net/\(device)/mtu", encoding: .utf8))
            .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 65_536
        return max(64 << 10, mtu + 14)
    }

    /// Shapes `port` on `device`, or says why it cannot. Removes a stale qdisc of ours first.
    static func install(device: String, port: Int, rateBitsPerSecond: Int, burstBytes: Int) throws(Unavailable) -> LinkShaper {
        guard let tc = ChildProcess.which("tc") else { throw Unavailable("tc_not_found") }
        let lockFD = try acquireLock()
        let shaper = LinkShaper(tc: tc, device: device, port: port, rateBitsPerSecond: rateBitsPerSecond,
                                burstBytes: burstBytes, lockFD: lockFD)
        do throws(Unavailable) {
            let current = try shaper.run(["qdisc", "show", "dev", device])
            if current.contains("qdisc htb \(rootHandle) root") {
                Output.note("link shaper: removing a stale qdisc \(rootHandle) from \(device)")
                _ = try shaper.run(["qdisc", "del", "dev", device, "root", "handle", rootHandle])
            } else if let line = current.split(separator: "\n").first(where: { $0.contains(" root ") }),
                      !line.hasPrefix("qdisc noqueue") {
                throw Unavailable("\(device) already has a root qdisc of another owner: \(line)")
            }
            for arguments in installCommands(device: device, port: port, rateBitsPerSecond: rateBitsPerSecond,
                                             burstBytes: burstBytes) {
                _ = try shaper.run(arguments)
            }
        } catch {
            shaper.remove()
            throw error
        }
        CleanupOnSignal.shared.setShaper(shaper)
        return shaper
    }

    private static func acquireLock() throws(Unavailable) -> Int32 {
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Unavailable("cannot open \(lockPath): \(String(cString: strerror(errno)))") }
        let deadline = monotonicSeconds() + lockWaitSecondsMax
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            guard errno == EWOULDBLOCK || errno == EINTR, monotonicSeconds() < deadline else {
                close(fd)
                throw Unavailable("another link shaper held \(lockPath) for \(Int(lockWaitSecondsMax)) s")
            }
            usleep(100_000)
        }
        return fd
    }

    /// Runs `tc` with `arguments`; its stdout, or `Unavailable` with what it said.
    @discardableResult
    func run(_ arguments: [String]) throws(Unavailable) -> String {
        let child: ChildProcess
        do {
            child = try ChildProcess.run(tc, arguments, timeoutSeconds: LinkShaper.tcSecondsMax)
        } catch {
            throw Unavailable("tc: \(error)")
        }
        guard child.termination == .exited(0) else {
            let said = child.stderrText.split(separator: "\n").first.map(String.init) ?? "\(child.termination.map { "\($0)" } ?? "?")"
            throw Unavailable("tc \(arguments.prefix(2).joined(separator: " ")): \(said)")
        }
        return String(decoding: child.stdout, as: UTF8.self)
    }

    /// Removes the qdisc (ours only: the kernel refuses a root of another handle) and releases
    /// the lock. Safe to call more than once.
    func remove() {
        guard !removed else { return }
        removed = true
        _ = try? ChildProcess.run(tc, ["qdisc", "del", "dev", device, "root", "handle", LinkShaper.rootHandle],
                                  timeoutSeconds: LinkShaper.tcSecondsMax)
        CleanupOnSignal.shared.setShaper(nil)
        flock(lockFD, LOCK_UN)
        close(lockFD)
    }

    /// What went through the `tbf` so far (both directions, IP and TCP headers included).
    struct Counters {
        var bytes = 0
        var packets = 0
        var drops = 0
        var overlimits = 0
    }

    func counters() -> Counters {
        guard let text = try? run(["-s", "-j", "qdisc", "show", "dev", device]),
              let list = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]],
              let tbf = list.first(where: { ($0["handle"] as? String) == LinkShaper.tbfHandle }) else { return Counters() }
        return Counters(bytes: tbf["bytes"] as? Int ?? 0, packets: tbf["packets"] as? Int ?? 0,
                        drops: tbf["drops"] as? Int ?? 0, overlimits: tbf["overlimits"] as? Int ?? 0)
    }

    /// "24mbit", "100Mbit", "512kbit", "1gbit", "3000000bit" → bits per second (tc's decimal units).
    static func parseRate(_ text: String) -> Int? {
        let t = text.lowercased()
        for (suffix, multiplier) in [("gbit", 1_000_000_000), ("mbit", 1_000_000), ("kbit", 1_000), ("bit", 1)] where t.hasSuffix(suffix) {
            return Double(t.dropLast(suffix.count)).map { Int($0 * Double(multiplier)) }.flatMap { $0 > 0 ? $0 : nil }
        }
        return nil
    }
}

/// What must be undone if the bench is killed by SIGINT, SIGTERM or SIGHUP: the link shaper's
/// qdisc, the nodes it started (which would otherwise outlive it) and its scratch directory. The handler runs on a
/// dispatch queue, not in signal context, so it may run `tc`.
final class CleanupOnSignal: Sendable {
    static let shared = CleanupOnSignal()

    private struct State {
        var shaper: (tc: String, device: String)?
        var children: Set<pid_t> = []
        var scratch: String?
        var sources: [any DispatchSourceSignal] = []
    }

    private let state = Locked(State())

    private init() {}

    /// Installs the handlers (once).
    func install() {
        state.withLock { state in
            guard state.sources.isEmpty else { return }
            for number in [SIGINT, SIGTERM, SIGHUP] {
                signal(number, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
                source.setEventHandler { [self] in self.cleanUpAndDie(number) }
                source.resume()
                state.sources.append(source)
            }
        }
    }

    func setShaper(_ shaper: LinkShaper?) {
        state.withLock { $0.shaper = shaper.map { ($0.tc, $0.device) } }
    }

    /// A scratch directory the run removes at its end (nil: none, or kept).
    func setScratch(_ path: String?) { state.withLock { $0.scratch = path } }

    func watch(_ pid: pid_t) { _ = state.withLock { $0.children.insert(pid) } }
    func forget(_ pid: pid_t) { _ = state.withLock { $0.children.remove(pid) } }

    private func cleanUpAndDie(_ number: Int32) {
        let (shaper, children, scratch) = state.withLock { ($0.shaper, $0.children, $0.scratch) }
        for pid in children.sorted() { kill(pid, SIGKILL) }
        // Reaped (for at most 5 s) so that they no longer hold the scratch directory's files.
        let deadline = monotonicSeconds() + 5
        var alive = children
        while !alive.isEmpty && monotonicSeconds() < deadline {
            alive = alive.filter { waitpid($0, nil, WNOHANG) == 0 }
            if !alive.isEmpty { usleep(10_000) }
        }
        if let scratch { Files.removeTree(scratch) }
        if let shaper {
            _ = try? ChildProcess.run(shaper.tc, ["qdisc", "del", "dev", shaper.device, "root", "handle", LinkShaper.rootHandle],
                                      timeoutSeconds: LinkShaper.tcSecondsMax)
        }
        Output.note("shoal-bench: signal \(number): nodes killed, link shaping removed")
        signal(number, SIG_DFL)
        kill(getpid(), number)
    }
}
