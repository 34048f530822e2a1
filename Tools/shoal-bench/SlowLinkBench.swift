import ArgumentParser
import Foundation
import ShoalCore
import ShoalStore

#if canImport(Glibc)
import Glibc
#endif

/// Two-node sync over a slow link: loopback shaped with `tc` for the node pair's port only.
///
/// Node A holds CHUNKS random chunks (written to its store before it starts) and listens on a
/// port of the bench's choosing; node B starts empty with `--peer` A. Only traffic from or to
/// A's peer port is shaped (`LinkShaper`). Before the nodes start, a plain TCP transfer on
/// the same port gives the link's ceiling. The sync is watched through B's HTTP API (chunks
/// stored, the peer's faults per session) and A's (connections admitted); once B stopped, its
/// record of A in its store says the score A's sessions left and whether B banned A. So the
/// bench measures whatever sync machinery the node has.
struct SlowLink: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "slowlink",
        abstract: "Times a fresh node pulling CHUNKS from a peer over loopback shaped to a line rate (tc tbf).")

    @Option(help: "Line rate in tc's units (kbit, mbit, gbit: powers of 1000).") var rate: String = "24mbit"
    @Option(help: "Comma-separated line rates, one run each (instead of --rate).") var rates: String?
    @Option(help: "Chunks A holds (4,096-byte payloads).") var chunks: Int = 12_000
    @Option(help: "Stop a rate's sync after this many seconds and report what arrived.") var secondsMax: Double = 300
    @Option(help: "The plain TCP ceiling sends this many seconds of line rate (at least 1 MiB).") var rawSeconds: Double = 4
    @Option(help: ArgumentHelp("""
        tbf burst in bytes (K and M suffixes: 64kb is 65,536). Default: loopback's MTU plus its \
        link header (65,550), the least that passes a full-sized packet.
        """, valueName: "bytes")) var burst: String?
    @Flag(help: "Exit 1 when tc cannot shape here, rather than printing skipped=1 and exiting 0.") var require = false
    @Option(help: "Scratch directory (default: a fresh one, removed at the end).") var dir: String?
    @Option(help: "Path of the shoal executable (default: beside this one).") var shoal: String?
    @Option var seed: UInt64 = 1
    @Flag(help: "Keep the scratch directory (the nodes' logs are in it).") var keep = false
    @Option(help: "The nodes' --log-level.") var logLevel: String = "warning"

    static let device = "lo"

    var lineRates: [Int] {
        (rates ?? rate).split(separator: ",").compactMap { LinkShaper.parseRate(String($0)) }
    }

    var burstBytes: Int? {
        burst.map { parseByteSize($0) } ?? LinkShaper.minimumBurstBytes(device: SlowLink.device)
    }

    func validate() throws {
        let texts = (rates ?? rate).split(separator: ",")
        guard !texts.isEmpty, lineRates.count == texts.count else { throw ValidationError("bad rate in \(rates ?? rate): use e.g. 24mbit") }
        guard chunks > 0, secondsMax > 0, rawSeconds > 0 else { throw ValidationError("--chunks, --seconds-max and --raw-seconds must be positive") }
        guard let burstBytes, burstBytes > 0 else { throw ValidationError("bad --burst \(burst ?? "")") }
    }

    func run() throws {
        CleanupOnSignal.shared.install()
        signal(SIGPIPE, SIG_IGN)
        // The probe: a shaper on a port nothing uses, removed at once.
        do {
            try LinkShaper.install(device: SlowLink.device, port: 9, rateBitsPerSecond: lineRates[0], burstBytes: burstBytes!).remove()
        } catch {
            try skip(error.description)
            return
        }
        let shoal = self.shoal ?? siblingExecutable("shoal")
        let scratch = try dir ?? Files.makeTemporaryDirectory(in: Files.defaultScratchParent(), prefix: "slowlink")
        defer { if !keep && dir == nil { Files.removeTree(scratch) } }
        if dir != nil { try Files.makeDirectory(scratch) }
        if !keep && dir == nil { CleanupOnSignal.shared.setScratch(scratch) }
        let dirA = scratch + "/a"
        if storedCount(dirA) != chunks {
            Files.removeTree(dirA)
            Output.note("slowlink: filling A with \(chunks) chunks …")
            _ = try fillNode(dataDirectory: dirA, chunks: chunks, seed: seed)
        }
        for file in ["data.mdb", "chunks.slots"] { _ = Files.readThrough(dirA + "/store/" + file) }
        for rate in lineRates {
            do {
                try runOnce(rateBitsPerSecond: rate, shoal: shoal, scratch: scratch, dirA: dirA)
            } catch let error as LinkShaper.Unavailable {
                try skip(error.description)
                return
            }
        }
    }

    private func skip(_ reason: String) throws {
        var line = ResultLine("slowlink")
        line.add("skipped", 1)
        line.add("reason", reason)
        line.emit()
        if require { throw ExitCode.failure }
    }

    /// One rate: the plain ceiling, then A and B syncing through the same shaped port.
    private func runOnce(rateBitsPerSecond rate: Int, shoal: String, scratch: String, dirA: String) throws {
        let mbit = Double(rate) / 1e6
        let plain = try PlainTransfer()
        let shaper = try LinkShaper.install(device: SlowLink.device, port: plain.port, rateBitsPerSecond: rate, burstBytes: burstBytes!)
        defer { shaper.remove() }
        Output.note("slowlink: \(mbit) Mbit/s on port \(plain.port) of \(SlowLink.device):\n"
            + LinkShaper.installCommands(device: SlowLink.device, port: plain.port, rateBitsPerSecond: rate, burstBytes: shaper.burstBytes)
                .map { "  tc " + $0.joined(separator: " ") }.joined(separator: "\n"))

        let rawBytes = max(1 << 20, Int(Double(rate) / 8 * rawSeconds))
        let raw = try plain.run(bytes: rawBytes, secondsMax: rawSeconds * 5 + 10)
        plain.close()
        let rawMBps = Double(raw.received) / 1e6 / max(raw.seconds, 1e-9)
        var line = ResultLine("slowlink-raw")
        line.add("rate_mbit", mbit)
        line.add("burst_bytes", shaper.burstBytes)
        line.throughput(bytes: raw.received, seconds: raw.seconds)
        line.add("complete", raw.complete ? 1 : 0)
        line.add("line_share", rawMBps * 8e6 / Double(rate))
        line.addLoadAverage()
        line.emit()

        let dirB = scratch + "/b-\(Int(mbit))mbit"
        Files.removeTree(dirB)
        let tag = "\(Int(mbit))mbit"
        let a = try NodeProcess.start("A", shoal: shoal, dataDirectory: dirA, peers: [],
                                      logPath: scratch + "/a-\(tag).log", logLevel: logLevel, listen: "127.0.0.1:\(plain.port)")
        CleanupOnSignal.shared.watch(a.child.pid)
        defer { if a.child.termination == nil { a.kill() }; CleanupOnSignal.shared.forget(a.child.pid) }
        let overlayA = try a.getJSON("/status")["overlay"] as? String ?? ""
        let wireBefore = shaper.counters()
        let b = try NodeProcess.start("B", shoal: shoal, dataDirectory: dirB, peers: ["127.0.0.1:\(plain.port)"],
                                      logPath: scratch + "/b-\(tag).log", logLevel: logLevel)
        CleanupOnSignal.shared.watch(b.child.pid)
        defer { if b.child.termination == nil { b.kill() }; CleanupOnSignal.shared.forget(b.child.pid) }

        var watch = SyncWatch(chunks: chunks)
        let started = monotonicSeconds()
        var nextNote = 10.0
        while true {
            let t = monotonicSeconds() - started
            let held = (try? b.getJSON("/status"))?["chunks"] as? Int
            let peers = (try? HTTP.getJSONArray(port: b.apiPort, path: "/peers")) ?? []
            watch.observe(at: t, held: held, peer: peers.first { $0["overlay"] as? String == overlayA })
            if watch.synced >= chunks || t >= secondsMax { break }
            if t >= nextNote {
                Output.note("slowlink: \(tag) t=\(Int(t)) s synced=\(watch.synced)/\(chunks) faults=\(watch.faults) sessions=\(watch.sessions)")
                nextNote += 10
            }
            usleep(250_000)
        }
        let seconds = watch.completedAt ?? (monotonicSeconds() - started)
        let wire = shaper.counters()
        let statusB = (try? b.getJSON("/status")) ?? [:]
        let admitted = (try? a.getJSON("/status")).flatMap { Self.inboundAdmitted($0) } ?? -1
        let stopB = b.stop(timeout: 30), stopA = a.stop(timeout: 30)
        if stopA != .exited(0) || stopB != .exited(0) { Output.note("slowlink: nodes ended with A \(stopA), B \(stopB)") }
        let record = OverlayAddress(hex: overlayA).flatMap { Self.peerRecord(dataDirectory: dirB, overlay: $0) }
        if !keep { Files.removeTree(dirB) }

        let payload = watch.synced * Chunk.payloadMax
        let wireBytes = wire.bytes - wireBefore.bytes
        line = ResultLine("slowlink")
        line.add("rate_mbit", mbit)
        line.add("burst_bytes", shaper.burstBytes)
        line.add("chunks", chunks)
        line.add("synced", watch.synced)
        line.add("complete", watch.synced >= chunks ? 1 : 0)
        line.throughput(bytes: payload, seconds: seconds)
        line.add("line_share", Double(payload) * 8 / (Double(rate) * seconds))
        line.add("wire_bytes", wireBytes)
        line.add("wire_share", Double(wireBytes) * 8 / (Double(rate) * seconds))
        line.add("wire_drops", wire.drops - wireBefore.drops)
        line.add("raw_MBps", rawMBps)
        line.add("received", statusB["chunksReceived"] as? Int ?? -1)
        line.add("duplicates", statusB["chunksDuplicate"] as? Int ?? -1)
        line.add("penalties_seen", watch.faults)
        line.add("score", record.map { Int($0.score) } ?? 0)
        line.add("banned", (record?.banUntilMs ?? 0) > Store.wallClockMs() ? 1 : 0)
        line.add("reconnects", max(0, admitted - 1))
        line.add("sessions_seen", watch.sessions)
        line.add("first_s", watch.firstAt ?? -1)
        line.add("half_s", watch.halfAt ?? -1)
        line.addLoadAverage()
        line.emit()
    }

    /// B's record of `overlay` (read after B stopped): the score its sessions left, its ban.
    static func peerRecord(dataDirectory: String, overlay: OverlayAddress) -> PeerRecord? {
        guard let store = try? Store(directory: dataDirectory + "/store", options: Store.Options(readOnly: true)) else { return nil }
        defer { store.close() }
        return (try? store.read { try $0.peer(overlay) }) ?? nil
    }

    /// Inbound connections A admitted since it started (`/status` → connections.inbound.counters).
    static func inboundAdmitted(_ status: [String: Any]) -> Int? {
        let connections = status["connections"] as? [String: Any]
        let inbound = connections?["inbound"] as? [String: Any]
        return (inbound?["counters"] as? [String: Any])?["admitted"] as? Int
    }
}

/// What B's API showed over a sync: chunks held over time, and its sessions with A.
///
/// A peer's `faults` in `/peers` belong to one session and vanish with it, so a
/// session that ends (the peer is gone from the list, or its faults went down) adds what it
/// showed last to the totals. A lower bound: faults in a session's last quarter second are
/// missed, and a batch timeout's penalties and the drop that follows come in one instant.
struct SyncWatch {
    let chunks: Int
    private(set) var synced = 0
    private(set) var firstAt: Double?
    private(set) var halfAt: Double?
    private(set) var completedAt: Double?
    /// Sessions seen, and what the ended ones showed last.
    private(set) var sessions = 0
    private var endedFaults = 0
    /// The faults the current session showed last; nil while B has no session with A.
    private var current: Int?

    init(chunks: Int) { self.chunks = chunks }

    var faults: Int { endedFaults + (current ?? 0) }

    mutating func observe(at t: Double, held: Int?, peer: [String: Any]?) {
        if let held {
            synced = max(synced, held)
            if synced > 0 && firstAt == nil { firstAt = t }
            if synced * 2 >= chunks && halfAt == nil { halfAt = t }
            if synced >= chunks && completedAt == nil { completedAt = t }
        }
        let seen = peer.map { $0["faults"] as? Int ?? 0 }
        if let current, seen == nil || seen! < current {
            endedFaults += current
            self.current = nil
        }
        if let seen {
            if current == nil { sessions += 1 }
            current = seen
        }
    }
}

extension ResultLine {
    /// `load1` and `load5` from /proc/loadavg: the machine is shared, so every figure says how
    /// busy it was.
    mutating func addLoadAverage() {
        let fields = ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "").split(separator: " ")
        add("load1", fields.count > 1 ? String(fields[0]) : "nan")
        add("load5", fields.count > 1 ? String(fields[1]) : "nan")
    }
}

extension HTTP {
    /// GET whose body is a JSON object (`/status`).
    static func getJSONObject(port: Int, path: String) throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: Data(try get(port: port, path: path))) as? [String: Any] else {
            throw BenchError("\(path): not a JSON object")
        }
        return object
    }

    /// GET whose body is a JSON array of objects (`/peers`).
    static func getJSONArray(port: Int, path: String) throws -> [[String: Any]] {
        let body = try get(port: port, path: path)
        guard let list = try JSONSerialization.jsonObject(with: Data(body)) as? [[String: Any]] else {
            throw BenchError("\(path): not a JSON array")
        }
        return list
    }
}
