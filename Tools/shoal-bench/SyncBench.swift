import ArgumentParser
import Foundation
import ShoalCore
import ShoalNode
import ShoalStore

#if canImport(Glibc)
import Glibc
#endif

/// Two or more real `shoal start` processes on 127.0.0.1, driven from here.
struct NodeProcess {
    let name: String
    let dataDirectory: String
    let child: ChildProcess
    let listen: String
    let apiPort: Int

    /// Starts `shoal start` on 127.0.0.1 (peer port `listen`, by default one the kernel picks;
    /// `extra` arguments) and waits (bounded) for its ready line. With `logPath`, its stderr is appended to that file rather than piped: a node
    /// that logs every refused connection must not block on a pipe, and the log's size is
    /// itself a figure (the flood). `listen` and `api` default to free ports; a node restarted
    /// where its peers know it passes the ports it had.
    static func start(
        _ name: String, shoal: String, dataDirectory: String, peers: [String], extra: [String] = [],
        logPath: String? = nil, logLevel: String = "warning", timeout: Double = 60,
        listen: String = "127.0.0.1:0", api: String = "127.0.0.1:0"
    ) throws -> NodeProcess {
        var arguments = ["start", "--data-dir", dataDirectory, "--listen", listen, "--api", api,
                         "--network-id", "7", "--log-level", logLevel]
        for peer in peers { arguments += ["--peer", peer] }
        arguments += extra
        let child: ChildProcess
        if let logPath {
            // `exec` keeps the pid: /proc/<pid> is the node's own.
            let quoted = "'" + logPath.replacingOccurrences(of: "'", with: "'\\''") + "'"
            child = try ChildProcess("/bin/sh", ["-c", "exec \"$0\" \"$@\" 2>>\(quoted)", shoal] + arguments)
        } else {
            child = try ChildProcess(shoal, arguments)
        }
        let deadline = monotonicSeconds() + timeout
        while monotonicSeconds() < deadline {
            let closed = child.pump(until: min(deadline, monotonicSeconds() + 0.05))
            if let line = child.stdoutLines.first(where: { $0.hasPrefix("shoal: listening on ") }) {
                // "shoal: listening on H:P, API on H:P, overlay HEX"
                let parts = line.dropFirst("shoal: listening on ".count).split(separator: ",")
                let listen = String(parts[0])
                let api = parts[1].split(separator: " ").last.map(String.init) ?? ""
                guard let apiPort = api.split(separator: ":").last.flatMap({ Int($0) }) else {
                    throw BenchError("\(name): cannot parse the ready line \(line)")
                }
                return NodeProcess(name: name, dataDirectory: dataDirectory, child: child, listen: listen, apiPort: apiPort)
            }
            if closed {
                // Both pipes closed: the process is gone.
                child.wait(until: monotonicSeconds() + 5)
                let log = logPath.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) } ?? child.stderrText
                throw BenchError("\(name) exited before it was ready: \(child.termination.map { "\($0)" } ?? "?")\n\(log.suffix(2000))")
            }
        }
        child.signal(SIGKILL)
        child.wait(until: monotonicSeconds() + 5)
        throw BenchError("\(name) was not ready within \(timeout) s\n\(child.stderrText.suffix(2000))")
    }

    /// CPU seconds (user + system) and peak resident set in bytes, from /proc.
    func usage() -> (cpuSeconds: Double, peakRSS: Int) {
        var cpu = 0.0, rss = 0
        if let stat = try? String(contentsOfFile: "/proc/\(child.pid)/stat", encoding: .utf8),
           let close = stat.lastIndex(of: ")") {
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // After the command: state is field 3, utime 14, stime 15 (1-based in proc(5)).
            if fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) {
                cpu = (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
            }
        }
        if let status = try? String(contentsOfFile: "/proc/\(child.pid)/status", encoding: .utf8),
           let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
           let kb = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) {
            rss = kb * 1024
        }
        return (cpu, rss)
    }

    /// Keeps the child's pipes drained (a node that logs must never block on a full pipe).
    func drain() { child.pump(until: monotonicSeconds() + 0.001) }

    /// SIGTERM, then waits for a clean exit; returns how it ended.
    @discardableResult
    func stop(timeout: Double = 30) -> ChildProcess.Termination {
        child.signal(SIGTERM)
        return child.wait(until: monotonicSeconds() + timeout).termination
    }

    func kill() {
        child.signal(SIGKILL)
        child.wait(until: monotonicSeconds() + 10)
    }

    /// GET on the node's API; the body as JSON.
    func getJSON(_ path: String) throws -> [String: Any] {
        let body = try HTTP.get(port: apiPort, path: path)
        guard let json = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            throw BenchError("\(name) \(path): not a JSON object")
        }
        return json
    }
}

/// A minimal HTTP/1.1 GET over loopback (the bench links no HTTP client).
enum HTTP {
    static func get(port: Int, path: String, timeoutSeconds: Int = 10) throws -> [UInt8] {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket: errno \(errno)") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw BenchError("connect 127.0.0.1:\(port): errno \(errno)") }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else {
            throw BenchError("send: errno \(errno)")
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while response.count < 16 << 20 {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            response += buffer[0..<n]
        }
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let headerEnd = (0..<max(0, response.count - 3)).first(where: { Array(response[$0..<$0 + 4]) == separator }) else {
            throw BenchError("GET \(path): no HTTP response")
        }
        let head = String(decoding: response[..<headerEnd], as: UTF8.self)
        guard head.hasPrefix("HTTP/1.1 200") else { throw BenchError("GET \(path): \(head.prefix(60))") }
        var body = Array(response[(headerEnd + 4)...])
        if head.lowercased().contains("transfer-encoding: chunked") { body = dechunk(body) }
        return body
    }

    static func dechunk(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [], i = 0
        while i < bytes.count {
            guard let lineEnd = (i..<bytes.count - 1).first(where: { bytes[$0] == 13 && bytes[$0 + 1] == 10 }),
                  let size = Int(String(decoding: bytes[i..<lineEnd], as: UTF8.self), radix: 16), size > 0 else { break }
            let start = lineEnd + 2
            out += bytes[start..<min(start + size, bytes.count)]
            i = start + size + 2
        }
        return out
    }
}

/// Fills a node's data directory (identity and store) with random chunks before it starts.
func fillNode(dataDirectory: String, chunks: Int, seed: UInt64) throws -> OverlayAddress {
    try Files.makeDirectory(dataDirectory)
    let identity = try NodeIdentity.loadOrCreate(directory: dataDirectory, networkID: 7)
    let store = try Store(directory: dataDirectory + "/store", options: Store.Options(overlay: identity.overlay))
    defer { store.close() }
    var rng = SplitMix64(seed: seed)
    var done = 0
    while done < chunks {
        let n = min(2000, chunks - done)
        let batch = try (0..<n).map { _ in try Chunk(payload: rng.bytes(Chunk.payloadMax)) }
        try store.apply(StoreBatch(chunks: batch))
        done += n
    }
    return identity.overlay
}

/// The number of chunks in a (possibly running) node's store, read-only, in one open; 0 while
/// it has no store yet.
func storedCount(_ dataDirectory: String) -> Int {
    var counter = StoredCounter(dataDirectory: dataDirectory)
    defer { counter.close() }
    return counter.count()
}

/// Counts a running node's chunks through one read-only open of its store, kept across polls
/// (opening the environment for each poll cost the machine more than the count itself).
struct StoredCounter {
    let dataDirectory: String
    private var store: Store?

    init(dataDirectory: String) { self.dataDirectory = dataDirectory }

    mutating func count() -> Int {
        if store == nil {
            guard Files.exists(dataDirectory + "/store/data.mdb") else { return 0 }
            store = try? Store(directory: dataDirectory + "/store", options: Store.Options(readOnly: true))
        }
        return (try? store?.count()) ?? 0
    }

    mutating func close() {
        store?.close()
        store = nil
    }
}

/// Every interval a client sealed for `server`'s bins covers only chunks the client holds.
/// Returns the number of sealed bin IDs whose chunk the client lacks.
func intervalViolations(server: String, client: String) throws -> (violations: Int, sealedChecked: Int) {
    let serverStore = try Store(directory: server + "/store", options: Store.Options(readOnly: true))
    defer { serverStore.close() }
    let clientStore = try Store(directory: client + "/store", options: Store.Options(readOnly: true))
    defer { clientStore.close() }
    let records = try clientStore.read { try $0.allIntervals(peer: serverStore.overlay) }
    var violations = 0, checked = 0
    for (key, record) in records where record.epoch == serverStore.epoch {
        for range in record.ranges {
            let entries = try serverStore.read { r in
                try r.range(bin: Int(key.bin), from: range.lowerBound, limit: .max).filter { $0.binID <= range.upperBound }
            }
            let held = try clientStore.has(entries.map(\.address))
            checked += entries.count
            violations += held.filter { !$0 }.count
        }
    }
    return (violations, checked)
}

func siblingExecutable(_ name: String) -> String {
    let me = Files.executablePath()
    return String(me[..<(me.lastIndex(of: "/") ?? me.startIndex)]) + "/" + name
}

func verifyWithInspector(_ dataDirectory: String) -> Bool {
    guard let child = try? ChildProcess.run(siblingExecutable("lmdb-inspect"), ["verify", dataDirectory], timeoutSeconds: 300) else {
        return false
    }
    if child.termination != .exited(0) {
        Output.note("lmdb-inspect verify \(dataDirectory): \(child.termination.map { "\($0)" } ?? "?")\n\(String(decoding: child.stdout.suffix(2000), as: UTF8.self))")
    }
    return child.termination == .exited(0)
}

struct Sync2Node: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync-2node",
        abstract: "Node A holds BYTES of random chunks; B starts empty and pulls them. Times connect → all committed.")

    @Option(help: "Bytes A holds (suffixes K, M, G; 4096-byte chunks).") var bytes: String = "256M"
    @Option(help: "Scratch directory (default: a fresh one, removed at the end).") var dir: String?
    @Option(help: "Path of the shoal executable (default: beside this one).") var shoal: String?
    @Option(help: "Give up after this many seconds of syncing.") var timeout: Double = 600
    @Option var seed: UInt64 = 1
    @Flag(help: "Keep the scratch directory.") var keep = false
    @Option(help: ArgumentHelp("""
        A's store before the nodes start: warm (read once into the page cache, as the peers' \
        sources are: iroh's is in memory, libtorrent's file was just written) or cold (dropped \
        from the page cache, so A serves from the disk).
        """, valueName: "warm|cold")) var source: SourceCache = .warm

    enum SourceCache: String, ExpressibleByArgument { case warm, cold }

    func run() throws {
        guard let total = parseByteSize(bytes) else { throw ValidationError("bad --bytes \(bytes)") }
        let chunks = max(1, total / Chunk.payloadMax)
        let shoal = self.shoal ?? siblingExecutable("shoal")
        let scratch = try dir ?? Files.makeTemporaryDirectory(in: Files.defaultScratchParent(), prefix: "sync-2node")
        defer { if !keep && dir == nil { Files.removeTree(scratch) } }
        if dir != nil { try Files.makeDirectory(scratch) }
        let dirA = scratch + "/a", dirB = scratch + "/b"
        Output.note("filling A with \(chunks) chunks …")
        _ = try fillNode(dataDirectory: dirA, chunks: chunks, seed: seed)
        for file in ["data.mdb", "chunks.slots"] {
            switch source {
            case .warm: _ = Files.readThrough(dirA + "/store/" + file)
            case .cold: Files.dropFromPageCache(dirA + "/store/" + file)
            }
        }
        let a = try NodeProcess.start("A", shoal: shoal, dataDirectory: dirA, peers: [])
        defer { if a.child.termination == nil { a.kill() } }
        let b = try NodeProcess.start("B", shoal: shoal, dataDirectory: dirB, peers: [a.listen])
        defer { if b.child.termination == nil { b.kill() } }
        let started = monotonicSeconds()
        var count = 0
        var counter = StoredCounter(dataDirectory: dirB)
        while monotonicSeconds() - started < timeout {
            a.drain()
            b.drain()
            count = counter.count()
            if count >= chunks { break }
            usleep(5_000)
        }
        counter.close()
        let seconds = monotonicSeconds() - started
        let (cpuA, rssA) = a.usage(), (cpuB, rssB) = b.usage()
        guard count >= chunks else { throw BenchError("B holds \(count) of \(chunks) chunks after \(timeout) s") }
        let stopA = a.stop(), stopB = b.stop()
        var line = ResultLine("sync-2node")
        line.throughput(bytes: chunks * Chunk.payloadMax, seconds: seconds)
        line.add("chunks", chunks)
        line.add("chunks_per_s", Double(chunks) / seconds)
        line.add("a_cpu_s", cpuA)
        line.add("b_cpu_s", cpuB)
        line.add("a_peak_rss_mb", Double(rssA) / 1e6)
        line.add("b_peak_rss_mb", Double(rssB) / 1e6)
        line.emit()
        guard stopA == .exited(0), stopB == .exited(0) else { throw BenchError("nodes did not exit cleanly: A \(stopA), B \(stopB)") }
        guard verifyWithInspector(dirA), verifyWithInspector(dirB) else { throw BenchError("verify failed") }
        let (violations, _) = try intervalViolations(server: dirA, client: dirB)
        guard violations == 0 else { throw BenchError("\(violations) sealed bin IDs of A are missing in B") }
    }
}

struct SyncCrash: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync-crash",
        abstract: "B pulls A's chunks and is killed with SIGKILL at random moments, then restarted; checks what survives.")

    @Option var chunks: Int = 100_000
    @Option var cycles: Int = 10
    @Option var seed: UInt64 = 1
    @Option(help: "Scratch directory (default: a fresh one, removed at the end).") var dir: String?
    @Option(help: "Path of the shoal executable (default: beside this one).") var shoal: String?
    @Option(help: "Kill B after a random delay up to this many seconds (short: a kill must land while B syncs).") var killWithin: Double = 0.4
    @Flag var keep = false

    func run() throws {
        let shoal = self.shoal ?? siblingExecutable("shoal")
        let scratch = try dir ?? Files.makeTemporaryDirectory(in: Files.defaultScratchParent(), prefix: "sync-crash")
        defer { if !keep && dir == nil { Files.removeTree(scratch) } }
        if dir != nil { try Files.makeDirectory(scratch) }
        let dirA = scratch + "/a", dirB = scratch + "/b"
        var rng = SplitMix64(seed: seed)
        let started = monotonicSeconds()
        Output.note("filling A with \(chunks) chunks …")
        _ = try fillNode(dataDirectory: dirA, chunks: chunks, seed: seed)
        let a = try NodeProcess.start("A", shoal: shoal, dataDirectory: dirA, peers: [])
        defer { if a.child.termination == nil { a.kill() } }
        var verifyFailures = 0, violations = 0, checked = 0, killsDuringSync = 0
        for cycle in 1...cycles {
            let b = try NodeProcess.start("B", shoal: shoal, dataDirectory: dirB, peers: [a.listen])
            let delay = 0.05 + Double(rng.next() % 1000) / 1000 * killWithin
            let until = monotonicSeconds() + delay
            while monotonicSeconds() < until { a.drain(); b.drain(); usleep(2_000) }
            b.kill()
            let count = storedCount(dirB)
            if count < chunks { killsDuringSync += 1 }
            if !verifyWithInspector(dirB) { verifyFailures += 1 }
            let v = try intervalViolations(server: dirA, client: dirB)
            violations += v.violations
            checked += v.sealedChecked
            Output.note("cycle \(cycle): killed B after \(Int(delay * 1000)) ms holding \(count)/\(chunks); sealed bin IDs checked \(v.sealedChecked), violations \(v.violations)")
        }
        // Last run: let B finish.
        let b = try NodeProcess.start("B", shoal: shoal, dataDirectory: dirB, peers: [a.listen])
        let deadline = monotonicSeconds() + 600
        var count = 0
        while monotonicSeconds() < deadline {
            a.drain(); b.drain()
            count = storedCount(dirB)
            if count >= chunks { break }
            usleep(20_000)
        }
        let status = try a.getJSON("/status")
        let served = status["chunksServed"] as? Int ?? -1
        let stopB = b.stop()
        let stopA = a.stop()
        if !verifyWithInspector(dirA) { verifyFailures += 1 }
        if !verifyWithInspector(dirB) { verifyFailures += 1 }
        let final = try intervalViolations(server: dirA, client: dirB)
        violations += final.violations
        // Chunks A delivered beyond the one delivery each needed: work lost in crashes.
        let redelivered = served - chunks
        let bound = cycles * SessionLimits().sync.historyStreamsMax * ProtocolLimits.offerBatchMax
        var line = ResultLine("sync-crash")
        line.add("cycles", cycles)
        line.add("kills_during_sync", killsDuringSync)
        line.add("chunks", chunks)
        line.add("held", count)
        line.add("lost", chunks - count)
        line.add("verify_failures", verifyFailures)
        line.add("interval_violations", violations)
        line.add("redelivered", redelivered)
        line.add("redelivered_bound", bound)
        line.add("seconds", monotonicSeconds() - started)
        line.emit()
        // A run in which no kill landed during the sync proves nothing about crash resume.
        guard count == chunks, verifyFailures == 0, violations == 0, redelivered <= bound, killsDuringSync > 0,
              stopA == .exited(0), stopB == .exited(0) else {
            throw BenchError("sync-crash failed: held \(count)/\(chunks), kills during sync \(killsDuringSync), verify failures \(verifyFailures), violations \(violations), redelivered \(redelivered) (bound \(bound)), A \(stopA), B \(stopB)")
        }
    }
}

func parseByteSize(_ text: String) -> Int? {
    let t = text.uppercased().replacingOccurrences(of: "IB", with: "").replacingOccurrences(of: "B", with: "")
    let multipliers: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
    if let last = t.last, let m = multipliers[last] { return Int(t.dropLast()).map { $0 * m } }
    return Int(t)
}
