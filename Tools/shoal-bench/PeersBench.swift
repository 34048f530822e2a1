import ArgumentParser
import Foundation
import Logging
import NIOPosix
import ShoalCore
import ShoalNode

#if canImport(Glibc)
import Glibc
#endif

/// The memory one idle connected peer costs a node.
///
/// One real `shoal start` process; the bench connects COUNT peers to it, each with a fresh
/// identity through the node's own `Transport`, completes the handshake and keeps them idle
/// but alive (`IdlePeer`: an empty store's answers, pongs). The node's resident set is read
/// from /proc before the first connection, once all are connected and settled, and after
/// IDLE seconds more; each per-peer figure divides by the peers the node counts at that reading.
///
/// The node prunes connected peers beyond `TopologyLimits.binPeersMax` in a bin below its
/// depth, so random identities would see about half of 100 clients sent away. By default
/// (`--placement spread`) each client's identity is drawn until its overlay falls in a bin of
/// the node's that keeps it: bins 0, 1, 2… of the node's overlay take `binPeersMax` clients
/// each, and the rest (at least `neighbourhoodMin`, or all when there are fewer) share the next
/// bin, which then holds the node's neighbourhood (depth = that bin). No bin below depth then
/// holds more than the node keeps, so no client is pruned.
struct PeersBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peers",
        abstract: "Resident memory of a node per idle connected peer, with COUNT real peer connections.",
        discussion: """
            Each per-peer figure divides the growth of the node's resident set since the first \
            reading by the peers the node counts (its /status) at that reading: per_peer_kib once \
            all are connected and settled (peers_after), per_peer_idle_kib after the idle spell \
            (connected_after_idle).

            --placement spread (the default) gives the clients identities in bins of the node's \
            overlay that it keeps: bins 0, 1, 2… take \(TopologyLimits().binPeersMax) clients each (the \
            node's binPeersMax) and the rest share the next bin, the node's neighbourhood, so no \
            client is pruned. With 100 clients: 20 in each of bins 0–4, depth 4. \
            Drawing an identity in bin b takes about 2^(b+1) key pairs; the deepest bin used is \
            \(PeersBench.spreadDeepestBin). --placement random gives fresh random identities (a \
            real network's shape): with more than about 40 clients the node prunes some \
            (closed_by_node), and the per-peer figures count only those it kept.
            """)

    /// How the clients' identities are chosen.
    enum Placement: String, ExpressibleByArgument, CaseIterable {
        case spread
        case random
    }

    /// The deepest bin `--placement spread` fills (about 2^(b+1) key pairs per client there).
    static let spreadDeepestBin = 6

    @Option(help: "Peer connections to open.") var count: Int = 100
    @Option(help: "Seconds the connected peers stay idle before the last reading.") var idleSeconds: Double = 10
    @Option(help: "Seconds after the last connection before the 'after' reading (subscriptions settle).") var settleSeconds: Double = 3
    @Option(help: "Dials in flight at once.") var dialsInFlight: Int = 8
    @Option(help: "Client identities: spread (in bins the node keeps: none pruned) or random.")
    var placement: Placement = .spread
    @Option(help: "Milliseconds an idle peer holds a live range request before its empty offer (a node's sync server: 15,000).")
    var liveIdleMs: Int = 15_000
    @Option(help: "Give up connecting after this many seconds.") var connectSecondsMax: Double = 120
    @Option(help: "Scratch directory (default: a fresh one, removed at the end).") var dir: String?
    @Option(help: "Path of the shoal executable (default: beside this one).") var shoal: String?
    @Flag(help: "Keep the scratch directory (the node's log is in it).") var keep = false

    func validate() throws {
        guard count > 0, idleSeconds >= 0, settleSeconds >= 0, dialsInFlight > 0, liveIdleMs > 0, connectSecondsMax > 0 else {
            throw ValidationError("--count, --dials-in-flight, --live-idle-ms and --connect-seconds-max must be positive; seconds not negative")
        }
    }

    func run() async throws {
        CleanupOnSignal.shared.install()
        signal(SIGPIPE, SIG_IGN)
        let shoal = self.shoal ?? siblingExecutable("shoal")
        let scratch = try dir ?? Files.makeTemporaryDirectory(in: Files.defaultScratchParent(), prefix: "peers")
        defer { if !keep && dir == nil { Files.removeTree(scratch) } }
        if dir != nil { try Files.makeDirectory(scratch) }
        if !keep && dir == nil { CleanupOnSignal.shared.setScratch(scratch) }
        // Every client comes from 127.0.0.1: the per-address and per-subnet limits must admit them all.
        let limit = "\(count + 16)"
        let node = try NodeProcess.start(
            "node", shoal: shoal, dataDirectory: scratch + "/node", peers: [],
            extra: ["--inbound-max", "\(max(256, count + 16))", "--inbound-per-ip-max", limit, "--inbound-per-subnet-max", limit],
            logPath: scratch + "/node.log")
        let pid = node.child.pid, api = node.apiPort
        CleanupOnSignal.shared.watch(pid)
        defer { if node.child.termination == nil { node.kill() }; CleanupOnSignal.shared.forget(pid) }
        let hex = await onThread { (try? HTTP.getJSONObject(port: api, path: "/status"))?["overlay"] as? String }
        guard let hex, let base = OverlayAddress(hex: hex) else {
            throw BenchError("the node's /status shows no overlay")
        }
        let count = self.count, placement = self.placement
        let identities = await onThread { Self.identities(count: count, placement: placement, base: base) }
        try? await Task.sleep(for: .seconds(1))
        let before = MemoryReading(pid: pid)
        let cpuBefore = node.usage().cpuSeconds

        let stop = IdlePeer.Stop()
        let port = node.listenPort
        let clients = Task {
            await Self.connectAll(identities: identities, port: port, dialsInFlight: dialsInFlight, liveIdleMs: liveIdleMs, stop: stop)
        }
        defer { stop.request() }
        // Connected means the node counts them as peers (its sessions run).
        let connectDeadline = monotonicSeconds() + connectSecondsMax
        var peers = 0
        while monotonicSeconds() < connectDeadline {
            peers = await onThread { (try? HTTP.getJSONObject(port: api, path: "/status"))?["peers"] as? Int ?? 0 }
            if peers >= count { break }
            try? await Task.sleep(for: .milliseconds(200))
        }
        let connectSeconds = monotonicSeconds() - (connectDeadline - connectSecondsMax)
        Output.note("peers: \(peers) of \(count) connected after \(String(format: "%.1f", connectSeconds)) s")
        try? await Task.sleep(for: .seconds(settleSeconds))
        let after = MemoryReading(pid: pid)
        let cpuAfter = node.usage().cpuSeconds
        let peersAfter = await onThread { (try? HTTP.getJSONObject(port: api, path: "/status"))?["peers"] as? Int ?? -1 }
        try? await Task.sleep(for: .seconds(idleSeconds))
        let idle = MemoryReading(pid: pid)
        let cpuIdle = node.usage().cpuSeconds
        let (peersAfterIdle, depth) = await onThread { () -> (Int, Int) in
            let status = try? HTTP.getJSONObject(port: api, path: "/status")
            return (status?["peers"] as? Int ?? -1, status?["depth"] as? Int ?? -1)
        }
        let faults = await onThread {
            ((try? HTTP.getJSONArray(port: api, path: "/peers")) ?? []).reduce(0) { $0 + ($1["faults"] as? Int ?? 0) }
        }
        stop.request()
        let outcome = await clients.value
        let exit = node.stop(timeout: 30)

        var line = ResultLine("peers")
        line.add("count", count)
        line.add("placement", placement.rawValue)
        line.add("depth", depth)
        line.add("connected", peers)
        line.add("peers_after", peersAfter)
        line.add("connected_after_idle", peersAfterIdle)
        line.add("dial_failures", outcome.dialFailures)
        line.add("closed_by_node", outcome.closedByNode)
        line.add("rss_before_kib", before.rssKiB)
        line.add("rss_after_kib", after.rssKiB)
        line.add("rss_idle_kib", idle.rssKiB)
        // Over the peers alive at each reading: a pruned client costs nothing once it is gone.
        line.add("per_peer_kib", Double(after.rssKiB - before.rssKiB) / Double(max(peersAfter, 1)))
        line.add("per_peer_idle_kib", Double(idle.rssKiB - before.rssKiB) / Double(max(peersAfterIdle, 1)))
        line.add("hwm_kib", idle.hwmKiB)
        line.add("threads", idle.threads)
        line.add("connect_s", connectSeconds)
        line.add("idle_s", idleSeconds)
        line.add("idle_cpu_share", (cpuIdle - cpuAfter) / max(idleSeconds, 1e-9))
        line.add("settle_cpu_s", cpuAfter - cpuBefore)
        line.add("pings", outcome.tally.pings)
        line.add("stream_infos", outcome.tally.streamInfos)
        line.add("live_ranges", outcome.tally.liveRanges)
        line.add("history_ranges", outcome.tally.historyRanges)
        line.add("faults", faults)
        line.addLoadAverage()
        line.emit()
        guard peers >= count, exit == .exited(0) else {
            throw BenchError("\(peers) of \(count) peers connected, \(outcome.dialFailures) dials failed; node ended with \(exit)")
        }
    }

    /// What the clients did, together.
    struct Outcome: Sendable {
        var tally = IdlePeer.Tally()
        var dialFailures = 0
        var closedByNode = 0
    }

    /// The clients' identities, `placement` as the type's comment says.
    static func identities(count: Int, placement: Placement, base: OverlayAddress) -> [NodeIdentity] {
        switch placement {
        case .random:
            return (0..<count).map { _ in NodeIdentity.generate(networkID: 7) }
        case .spread:
            return spreadBins(count: count, limits: TopologyLimits()).map { bin in
                while true {
                    let identity = NodeIdentity.generate(networkID: 7)
                    if Proximity.bin(of: identity.overlay, relativeTo: base) == bin { return identity }
                }
            }
        }
    }

    /// The node's bin for each of `count` clients so that the node prunes none: bins 0, 1, 2…
    /// take `binPeersMax` each, the rest share the next bin (at most `spreadDeepestBin`). With
    /// at least `neighbourhoodMin` clients in that last bin, it is the node's depth; with fewer,
    /// the depth is one bin shallower and those clients are neighbours too. Either way every
    /// bin below depth holds at most `binPeersMax` clients.
    static func spreadBins(count: Int, limits: TopologyLimits) -> [Int] {
        let full = min(max(0, count - limits.neighbourhoodMin) / limits.binPeersMax, spreadDeepestBin)
        return (0..<count).map { min($0 / limits.binPeersMax, full) }
    }

    /// Dials a peer per identity (`dialsInFlight` handshakes at a time) and serves each until `stop`.
    static func connectAll(identities: [NodeIdentity], port: Int, dialsInFlight: Int, liveIdleMs: Int, stop: IdlePeer.Stop) async -> Outcome {
        let count = identities.count
        let quiet = Logger(label: "shoal-bench.peers") { _ in SwiftLogNoOpLogHandler() }
        enum Step: Sendable {
            case dialled(EstablishedConnection?)
            case served(IdlePeer.Tally)
        }
        return await withTaskGroup(of: Step.self) { group in
            var outcome = Outcome()
            var started = 0
            func dialNext() {
                guard started < count, !stop.requested else { return }
                let identity = identities[started]
                started += 1
                group.addTask {
                    let transport = Transport(configuration: TransportConfiguration(identity: identity, epoch: IdlePeer.epoch),
                                              group: MultiThreadedEventLoopGroup.singleton, logger: quiet)
                    return .dialled(try? await transport.dial(host: "127.0.0.1", port: port))
                }
            }
            for _ in 0..<min(dialsInFlight, count) { dialNext() }
            for await step in group {
                switch step {
                case .dialled(let connection?):
                    group.addTask { .served(await IdlePeer.serve(connection, liveIdleMs: liveIdleMs, stop: stop)) }
                    dialNext()
                case .dialled(nil):
                    outcome.dialFailures += 1
                    dialNext()
                case .served(let tally):
                    outcome.tally.merge(tally)
                    if tally.closedByNode { outcome.closedByNode += 1 }
                }
            }
            return outcome
        }
    }
}

/// A process's resident set (`VmRSS`), its peak (`VmHWM`) and its threads, from /proc.
struct MemoryReading {
    var rssKiB = 0
    var hwmKiB = 0
    var threads = 0

    init(pid: pid_t) {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return }
        for line in status.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 2, let value = Int(fields[1]) else { continue }
            switch fields[0] {
            case "VmRSS:": rssKiB = value
            case "VmHWM:": hwmKiB = value
            case "Threads:": threads = value
            default: break
            }
        }
    }
}
