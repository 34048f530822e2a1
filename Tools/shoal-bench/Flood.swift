import ArgumentParser
import Foundation
import ShoalCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A node under attack while it syncs from an honest peer.
///
/// Node B (the victim, a real `shoal start`) listens on 127.0.0.1. It starts empty; after an
/// idle spell the flood begins, and a moment later node A (holding BYTES) starts and dials it,
/// from 127.0.0.1, so B pulls A's chunks over an inbound connection while hostile clients from
/// 127.0.1.1 … 127.0.1.N hit the same port. B's memory, descriptors, threads, log and store are
/// sampled throughout; the honest sync is timed against a run without a flood.
struct Flood: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flood",
        abstract: "Times an honest two-node sync while hostile clients flood the pulling node's peer port.")

    enum Scenario: String, ExpressibleByArgument, CaseIterable, Sendable {
        /// Open and drop TCP connections as fast as possible.
        case churn
        /// Hold many connections that dribble a ClientHello, one byte per interval.
        case slow
        /// Complete the handshake, then send valid maximum-size frames and requests flat out.
        case frames
        /// Complete the handshake, then send random bytes beneath the frame codec.
        case garbage
        case all
    }

    @Option(help: "Bytes A holds (suffixes K, M, G; 4096-byte chunks).") var bytes: String = "64M"
    @Option(help: "churn, slow, frames, garbage or all.") var scenario: Scenario = .all
    @Option(help: "Hostile clients, each from a source address of its own in 127.0.1.0/24.") var clients: Int = 64
    @Option(help: "Seconds each flood lasts at least (longer if the honest sync is not done).") var seconds: Double = 20
    @Option(help: "Slow connections held in all (slow).") var slowConnections: Int = 1000
    @Option(help: "Seconds between the bytes of a slow connection.") var slowInterval: Double = 10
    @Option(help: "Seconds of B alone before the flood.") var idle: Double = 2
    @Option(help: "Seconds into the flood when A starts and dials B.") var honestDelay: Double = 1
    @Option(help: "Seconds B is watched after the flood stops.") var settle: Double = 3
    @Option(help: "Give up on the honest sync after this many seconds of flood.") var timeout: Double = 180
    @Option(help: "B's --log-level.") var logLevel: String = "info"
    @Option(help: "Passed to B as --inbound-max.") var inboundMax: Int?
    @Option(help: "Passed to B as --inbound-per-ip-max.") var inboundPerIpMax: Int?
    @Option(help: "Passed to B as --inbound-per-subnet-max.") var inboundPerSubnetMax: Int?
    @Option(help: "Passed to B as --handshakes-max.") var handshakesMax: Int?
    @Option(name: .customLong("b-arg"), help: ArgumentHelp("Any other argument for B's `shoal start`; repeat.", valueName: "arg"))
    var bArguments: [String] = []
    @Option(help: "Scratch directory (default: a fresh one, removed at the end).") var dir: String?
    @Option(help: "Path of the shoal executable (default: beside this one).") var shoal: String?
    @Option var seed: UInt64 = 1
    @Flag(help: "Keep the scratch directory.") var keep = false

    func validate() throws {
        guard parseByteSize(bytes) != nil else { throw ValidationError("bad --bytes \(bytes)") }
        guard (1...254).contains(clients) else { throw ValidationError("--clients must be 1…254") }
        guard seconds > 0, timeout >= seconds, slowInterval > 0, slowConnections >= clients else {
            throw ValidationError("need --seconds > 0, --timeout ≥ --seconds, --slow-interval > 0, --slow-connections ≥ --clients")
        }
    }

    var victimArguments: [String] {
        var out: [String] = []
        if let inboundMax { out += ["--inbound-max", "\(inboundMax)"] }
        if let inboundPerIpMax { out += ["--inbound-per-ip-max", "\(inboundPerIpMax)"] }
        if let inboundPerSubnetMax { out += ["--inbound-per-subnet-max", "\(inboundPerSubnetMax)"] }
        if let handshakesMax { out += ["--handshakes-max", "\(handshakesMax)"] }
        return out + bArguments
    }

    func run() async throws {
        raiseDescriptorLimit()
        signal(SIGPIPE, SIG_IGN)
        let total = parseByteSize(bytes)!
        let chunks = max(1, total / Chunk.payloadMax)
        let shoal = self.shoal ?? siblingExecutable("shoal")
        let scratch = try dir ?? Files.makeTemporaryDirectory(in: Files.defaultScratchParent(), prefix: "flood")
        defer { if !keep && dir == nil { Files.removeTree(scratch) } }
        if dir != nil { try Files.makeDirectory(scratch) }
        let dirA = scratch + "/a"
        if storedCount(dirA) < chunks {
            Output.note("flood: filling A with \(chunks) chunks …")
            _ = try fillNode(dataDirectory: dirA, chunks: chunks, seed: seed)
        }
        for file in ["data.mdb", "chunks.slots"] { _ = Files.readThrough(dirA + "/store/" + file) }

        let scenarios = scenario == .all ? Scenario.allCases.filter { $0 != .all } : [scenario]
        let setup = RunSetup(shoal: shoal, scratch: scratch, dirA: dirA, chunks: chunks, victimArguments: victimArguments,
                             logLevel: logLevel, idle: idle, honestDelay: honestDelay, seconds: seconds, settle: settle,
                             timeout: timeout)
        let baseline = try await setup.run(name: "baseline", attack: nil)
        var line = baseline.resultLine(name: "flood-baseline", baselineMBps: nil)
        line.emit()
        for scenario in scenarios {
            let attack = makeAttack(scenario)
            let run = try await setup.run(name: scenario.rawValue, attack: attack)
            line = run.resultLine(name: "flood-\(scenario.rawValue)", baselineMBps: baseline.honestMBps)
            line.emit()
        }
    }

    /// The hostile clients of `scenario`, as a body the run starts when the flood begins.
    private func makeAttack(_ scenario: Scenario) -> Attack {
        let clients = self.clients, slowConnections = self.slowConnections, slowInterval = self.slowInterval, seed = self.seed
        switch scenario {
        case .churn:
            return Attack { port, control in
                await onThreads(clients: clients) { index in churnClient(index: index, port: port, control: control) }
            }
        case .slow:
            return Attack { port, control in
                await onThreads(clients: clients) { index in
                    let count = slowConnections / clients + (index < slowConnections % clients ? 1 : 0)
                    return slowClient(index: index, count: count, port: port, intervalSeconds: slowInterval, control: control)
                }
            }
        case .frames, .garbage, .all:
            return Attack { port, control in
                await handshakenFlood(scenario: scenario, clients: clients, port: port, control: control, seed: seed)
            }
        }
    }

    private func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
}

/// Frames and garbage: every client behind a relay of its own source address.
private func handshakenFlood(scenario: Flood.Scenario, clients: Int, port: Int, control: FloodControl, seed: UInt64) async -> FloodTally {
    var relays: [SourceRelay] = []
    for index in 0..<clients {
        do {
            relays.append(try await SourceRelay.start(source: hostileSource(index), targetPort: port))
        } catch {
            Output.note("flood: relay for \(hostileSource(index)) failed: \(error)")
        }
    }
    let total = await withTaskGroup(of: FloodTally.self) { group in
        for (index, relay) in relays.enumerated() {
            let mixed: [HandshakenFlood.Kind] = [.unsolicitedDeliveries, .rangeRequests, .streamInfoRequests]
            let kind = scenario == .garbage ? .garbage : mixed[index % mixed.count]
            group.addTask {
                await HandshakenFlood.client(index: index, kind: kind, relayPort: relay.port, control: control, seed: seed)
            }
        }
        var total = FloodTally()
        for await tally in group { total.merge(tally) }
        return total
    }
    for relay in relays { await relay.close() }
    return total
}

/// What a flood runs: given B's peer port, attack until `control` says stop.
struct Attack: Sendable {
    let body: @Sendable (Int, FloodControl) async -> FloodTally
    init(_ body: @escaping @Sendable (Int, FloodControl) async -> FloodTally) { self.body = body }
}

/// One honest sync of a fresh B from A, with or without a flood.
struct RunSetup: Sendable {
    let shoal: String
    let scratch: String
    let dirA: String
    let chunks: Int
    let victimArguments: [String]
    let logLevel: String
    let idle: Double
    let honestDelay: Double
    let seconds: Double
    let settle: Double
    let timeout: Double

    static let sampleIntervalSeconds = 0.5

    func run(name: String, attack: Attack?) async throws -> RunResult {
        let dirB = scratch + "/b-" + name
        Files.removeTree(dirB)
        try Files.makeDirectory(dirB)
        let logB = scratch + "/b-\(name).log", logA = scratch + "/a-\(name).log"
        unlink(logB)
        unlink(logA)
        let b = try NodeProcess.start("B", shoal: shoal, dataDirectory: dirB, peers: [], extra: victimArguments,
                                            logPath: logB, logLevel: logLevel)
        let watcher = Watcher(setup: self, b: b, logB: logB, logA: logA)
        defer { watcher.tearDown() }
        Output.note("flood: \(name): B pid \(b.child.pid) on \(b.listen)")
        await onThread { watcher.watch(phase: "idle", seconds: idle) }

        let control = FloodControl(deadline: monotonicSeconds() + timeout + 5)
        let usageBefore = selfCPUSeconds()
        let started = monotonicSeconds()
        let attackTask: Task<FloodTally, Never>? = attack.map { attack in
            let port = b.listenPort
            return Task { await attack.body(port, control) }
        }
        let honest = await onThread { watcher.flood(attacked: attack != nil, control: control) }
        control.stop()
        let tally = await attackTask?.value ?? FloodTally()
        let attackSeconds = monotonicSeconds() - started
        let attackerCPU = selfCPUSeconds() - usageBefore
        await onThread { watcher.watch(phase: "settle", seconds: settle) }
        let (bCPU, _) = b.usage()
        let exit = b.stop(timeout: 20)
        return RunResult(chunks: chunks, honest: honest, tally: tally, samples: watcher.samples, heldPeak: control.heldPeak,
                         floodSeconds: attackSeconds, attackerCPUSeconds: attackerCPU, victimCPUSeconds: bCPU, victimExit: exit)
    }
}

/// Runs `body` on a thread of its own (it blocks: child pipes, /proc, the store count) and
/// returns its result.
func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread { continuation.resume(returning: body()) }.start()
    }
}

func selfCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

/// The honest sync as the watcher saw it.
struct HonestSync: Sendable {
    /// From A ready to B holding every chunk; nil if it did not finish.
    var seconds: Double?
    var chunksHeld: Int
}

/// Watches B (and starts A) from one thread; the only user of the children's pipes.
final class Watcher: @unchecked Sendable {
    let setup: RunSetup
    let b: NodeProcess
    let logB: String
    let logA: String
    private var a: NodeProcess?
    private var counter: StoredCounter
    private let began = monotonicSeconds()
    private(set) var samples: [NodeSample] = []
    private var lastChunks = 0

    init(setup: RunSetup, b: NodeProcess, logB: String, logA: String) {
        self.setup = setup
        self.b = b
        self.logB = logB
        self.logA = logA
        counter = StoredCounter(dataDirectory: b.dataDirectory)
    }

    private func sample(_ phase: String) {
        let s = NodeSample.take(pid: b.child.pid, at: monotonicSeconds() - began, phase: phase, logPath: logB,
                                storePath: b.dataDirectory + "/store/data.mdb", chunks: lastChunks)
        samples.append(s)
        Output.note(s.line)
    }

    /// Samples B for `seconds`.
    func watch(phase: String, seconds: Double) {
        let end = monotonicSeconds() + seconds
        var next = monotonicSeconds()
        while monotonicSeconds() < end {
            if monotonicSeconds() >= next {
                lastChunks = counter.count()
                sample(phase)
                next += RunSetup.sampleIntervalSeconds
            }
            b.drain()
            a?.drain()
            usleep(20_000)
        }
    }

    /// The flood phase: starts A after `honestDelay`, times the sync, and returns once the
    /// flood has lasted `seconds` and the sync is done (or `timeout` passed).
    func flood(attacked: Bool, control: FloodControl) -> HonestSync {
        let start = monotonicSeconds()
        var next = start
        var readyAt: Double?
        var syncedAt: Double?
        while true {
            let now = monotonicSeconds()
            if a == nil && now - start >= setup.honestDelay {
                do {
                    a = try NodeProcess.start("A", shoal: setup.shoal, dataDirectory: setup.dirA, peers: [b.listen],
                                                    extra: [], logPath: logA, logLevel: "warning")
                    readyAt = monotonicSeconds()
                } catch {
                    Output.note("flood: A did not start: \(error)")
                    break
                }
            }
            if readyAt != nil && syncedAt == nil {
                lastChunks = counter.count()
                if lastChunks >= setup.chunks { syncedAt = monotonicSeconds() }
            }
            if now >= next {
                sample(attacked ? "flood" : "sync")
                next += RunSetup.sampleIntervalSeconds
            }
            b.drain()
            a?.drain()
            let elapsed = monotonicSeconds() - start
            let floodDone = !attacked || elapsed >= setup.seconds
            if (syncedAt != nil && floodDone) || elapsed >= setup.timeout || b.child.outputClosed { break }
            usleep(10_000)
        }
        control.stop()
        if syncedAt == nil { lastChunks = counter.count() }
        return HonestSync(seconds: syncedAt.flatMap { s in readyAt.map { s - $0 } }, chunksHeld: lastChunks)
    }

    /// Stops A, closes the store count. (B is stopped by the run, which reports how it ended.)
    func tearDown() {
        counter.close()
        if let a, a.child.termination == nil { a.stop(timeout: 20) }
        if b.child.termination == nil { b.kill() }
    }
}

/// One run's figures.
struct RunResult: Sendable {
    let chunks: Int
    let honest: HonestSync
    let tally: FloodTally
    let samples: [NodeSample]
    let heldPeak: Int
    let floodSeconds: Double
    let attackerCPUSeconds: Double
    let victimCPUSeconds: Double
    let victimExit: ChildProcess.Termination

    var honestMBps: Double? { honest.seconds.map { Double(chunks * Chunk.payloadMax) / 1e6 / $0 } }

    func resultLine(name: String, baselineMBps: Double?) -> ResultLine {
        let idle = samples.filter { $0.phase == "idle" }
        let during = samples.filter { $0.phase == "flood" || $0.phase == "sync" }
        let settled = samples.filter { $0.phase == "settle" }
        var line = ResultLine(name)
        line.add("bytes", chunks * Chunk.payloadMax)
        line.add("synced", honest.seconds == nil ? 0 : 1)
        line.add("chunks_held", honest.chunksHeld)
        if let seconds = honest.seconds { line.add("honest_s", seconds) }
        line.add("honest_MBps", honestMBps ?? 0)
        if let baselineMBps {
            line.add("baseline_MBps", baselineMBps)
            line.add("ratio", (honestMBps ?? 0) / baselineMBps)
        }
        line.add("flood_s", floodSeconds)
        line.add("rss_idle_kb", idle.last?.rssKB ?? 0)
        line.add("rss_peak_kb", samples.map(\.rssKB).max() ?? 0)
        line.add("rss_end_kb", during.last?.rssKB ?? 0)
        line.add("rss_settled_kb", settled.last?.rssKB ?? 0)
        line.add("rss_flat", flattened(during.map(\.rssKB), band: 0.05, slack: 4096) ? 1 : 0)
        line.add("fd_start", idle.last?.fds ?? 0)
        line.add("fd_peak", samples.map(\.fds).max() ?? 0)
        line.add("fd_end", during.last?.fds ?? 0)
        line.add("fd_settled", settled.last?.fds ?? 0)
        line.add("fd_flat", flattened(during.map(\.fds), band: 0.05, slack: 16) ? 1 : 0)
        line.add("threads_peak", samples.map(\.threads).max() ?? 0)
        line.add("log_kb", (samples.last?.logBytes ?? 0) / 1024)
        line.add("store_kb", (samples.last?.storeBytes ?? 0) / 1024)
        line.add("connects", tally.connects)
        line.add("connect_failed", tally.connectFailed)
        if tally.localPortsExhausted > 0 { line.add("local_ports_exhausted", tally.localPortsExhausted) }
        line.add("established", tally.established)
        line.add("refused", tally.refused)
        line.add("dropped", tally.dropped)
        line.add("survived", tally.survived)
        line.add("refuse_ms_p50", quantile(tally.refuseMs, 0.5))
        line.add("drop_ms_p50", quantile(tally.dropMs, 0.5))
        line.add("drop_ms_p99", quantile(tally.dropMs, 0.99))
        line.add("returns", tally.returns)
        line.add("returns_refused", tally.returnsRefused)
        line.add("return_refuse_ms_p50", quantile(tally.returnRefuseMs, 0.5))
        if heldPeak > 0 { line.add("held_peak", heldPeak) }
        if tally.bytesWritten > 0 { line.add("hostile_MB", Double(tally.bytesWritten) / 1e6) }
        line.add("attacker_cpu_s", attackerCPUSeconds)
        line.add("b_cpu_s", victimCPUSeconds)
        line.add("b_exit", "\(victimExit)")
        return line
    }
}
