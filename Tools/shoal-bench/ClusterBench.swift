import ArgumentParser
import Foundation
import ShoalCore

#if canImport(Glibc)
import Glibc
#endif

/// `shoal-bench cluster`: a network of real `shoal start` processes on 127.0.0.1, each told only
/// of node 0, that must find each other through hive, take chunks uploaded to random nodes,
/// survive SIGKILLs with restarts, and end with every chunk on every node whose neighbourhood
/// holds it, checked in the stores themselves.
struct ClusterBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "N nodes that know only node 0; uploads, kills and restarts; checks from the stores that every neighbourhood converged.",
        discussion: """
            Steps: start the nodes (node i > 0 with --peer node 0 only); wait until each is \
            connected to min(N-1, 16) others; POST /chunks C seeded random chunks, each to a random \
            running node; SIGKILL K distinct nodes at random moments of the upload and restart \
            each 0.3…3 s later on its data directory and ports; wait until every node holds \
            every chunk at PO ≥ its depth (its /status), read from the stores while the nodes run; \
            stop all with SIGTERM and run lmdb-inspect verify on every store. Prints \
            RESULT name=cluster nodes=N chunks=C kills=K seed=S converged=0|1 \
            seconds_to_converge=<from the last upload> discovery_seconds upload_seconds \
            bytes_per_node_median bytes_per_node_max (store files on disk) chunks_per_node_median \
            chunks_per_node_max beyond_neighbourhood_median beyond_neighbourhood_max \
            chunks_delivered_twice (chunksDuplicate summed over nodes and lives) chunks_received \
            depth_min depth_max peers_min verify_failures unclean_stops seconds. \
            Exit status 1 when it did not converge by the timeout, a store failed verify or a node \
            did not stop cleanly; what is missing where goes to stderr first.
            """)

    @Option(help: "Nodes in the network.") var nodes = 12
    @Option(help: "Random chunks to upload (4,096-byte payloads).") var chunks = 600
    @Option(help: "Distinct nodes to SIGKILL during the upload, each restarted.") var kills = 0
    @Option(help: "Seed of the chunks, the upload targets and the kills (default: a random one, printed).") var seed: UInt64?
    @Option(help: "Seconds the whole run may take from the first start until converged.") var timeout: Double = 240
    @Option(help: "Scratch directory (default: a fresh one, removed at the end unless the run fails).") var dir: String?
    @Option(help: "Path of the shoal executable (default: beside this one).") var shoal: String?
    @Option(name: .customLong("log-level"), help: "The nodes' log level (their logs are DIR/node-i.log).") var logLevel = "info"
    @Flag(help: "Keep the scratch directory.") var keep = false

    /// A node's peers: min(N-1, this) connected before the upload starts (a bin holds at most
    /// `binPeersMax` peers, so a larger network is not a full mesh).
    static let connectedWanted = TopologyLimits().binPeersMax
    /// Downtime of a killed node before its restart, in seconds.
    static let downtime = 0.3...3.0
    /// Of the time left after the start, at most this share goes to waiting for the mesh.
    static let discoveryShareMax = 0.25
    /// Seconds between two looks at the nodes' `/status` and stores.
    static let pollSeconds = 0.5

    func validate() throws {
        guard nodes >= 2 && nodes <= 200 else { throw ValidationError("--nodes must be 2…200") }
        guard chunks >= 1 else { throw ValidationError("--chunks must be at least 1") }
        guard kills >= 0 && kills <= min(nodes, chunks) else { throw ValidationError("--kills must be 0…min(--nodes, --chunks)") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }

    func run() throws {
        let seed = self.seed ?? UInt64.random(in: 1...UInt64(UInt32.max))
        let shoal = self.shoal ?? siblingExecutable("shoal")
        let scratch = try dir ?? Files.makeTemporaryDirectory(in: Files.defaultScratchParent(), prefix: "cluster")
        if dir != nil { try Files.makeDirectory(scratch) }
        Output.note("# cluster: \(nodes) nodes, \(chunks) chunks, \(kills) kills, seed \(seed), timeout \(Int(timeout)) s, in \(scratch)")
        var run = ClusterRun(nodes: nodes, root: scratch, shoal: shoal, logLevel: logLevel, seed: seed, timeout: timeout)
        defer { run.killAll() }
        let outcome = try run.execute(chunks: chunks, kills: kills)
        var line = ResultLine("cluster")
        line.add("nodes", nodes)
        line.add("chunks", chunks)
        line.add("kills", kills)
        line.add("seed", seed)
        outcome.add(to: &line)
        line.emit()
        if outcome.passed {
            if !keep && dir == nil { Files.removeTree(scratch) }
        } else {
            Output.note("cluster: seed \(seed) failed; data directories and logs kept in \(scratch)")
            throw ExitCode.failure
        }
    }
}

/// What a cluster run measured.
struct ClusterOutcome {
    var converged = false
    var secondsToConverge = 0.0
    var discoverySeconds = 0.0
    var uploadSeconds = 0.0
    var diskBytes: [Int] = []
    var held: [Int] = []
    var beyond: [Int] = []
    var duplicates = 0
    var received = 0
    var depths: [Int] = []
    var peersMin = 0
    var verifyFailures = 0
    var uncleanStops = 0
    var seconds = 0.0

    var passed: Bool { converged && verifyFailures == 0 && uncleanStops == 0 }

    func add(to line: inout ResultLine) {
        func medianInt(_ values: [Int]) -> Double { values.isEmpty ? 0 : median(values.map(Double.init)) }
        line.add("converged", converged ? 1 : 0)
        line.add("seconds_to_converge", secondsToConverge)
        line.add("discovery_seconds", discoverySeconds)
        line.add("upload_seconds", uploadSeconds)
        line.add("bytes_per_node_median", Int(medianInt(diskBytes)))
        line.add("bytes_per_node_max", diskBytes.max() ?? 0)
        line.add("chunks_per_node_median", Int(medianInt(held)))
        line.add("chunks_per_node_max", held.max() ?? 0)
        line.add("beyond_neighbourhood_median", Int(medianInt(beyond)))
        line.add("beyond_neighbourhood_max", beyond.max() ?? 0)
        line.add("chunks_delivered_twice", duplicates)
        line.add("chunks_received", received)
        line.add("depth_min", depths.min() ?? 0)
        line.add("depth_max", depths.max() ?? 0)
        line.add("peers_min", peersMin)
        line.add("verify_failures", verifyFailures)
        line.add("unclean_stops", uncleanStops)
        line.add("seconds", seconds)
    }
}

/// One run of the cluster bench: the members, the seeded plan, and the steps in order.
struct ClusterRun {
    let cluster: LocalCluster
    var members: [ClusterMember] { cluster.members }
    var seed: UInt64 { cluster.seed }
    var started: Double { cluster.started }
    var deadline: Double { cluster.deadline }
    /// Restarts due: member index → moment.
    private var restartsDue: [Int: Double] = [:]
    private var lastPoll = 0.0

    init(nodes: Int, root: String, shoal: String, logLevel: String, seed: UInt64, timeout: Double) {
        cluster = LocalCluster(nodes: nodes, root: root, shoal: shoal, logLevel: logLevel, seed: seed, timeout: timeout)
    }

    private func start(_ member: ClusterMember) throws { try cluster.start(member) }

    func killAll() { cluster.killAll() }

    mutating func execute(chunks count: Int, kills: Int) throws -> ClusterOutcome {
        var outcome = ClusterOutcome()
        for member in members { try start(member) }
        Output.note("started \(members.count) nodes in \(ResultLine.format(monotonicSeconds() - started)) s; node 0 at \(members[0].listen)")

        let discoveryStarted = monotonicSeconds()
        let wanted = min(members.count - 1, ClusterBench.connectedWanted)
        // Bounded to a share of the run: a network that does not mesh still gets the chunks,
        // and the end says what is missing where.
        let discoveryDeadline = discoveryStarted + (deadline - discoveryStarted) * ClusterBench.discoveryShareMax
        while monotonicSeconds() < discoveryDeadline {
            pollAll()
            if members.allSatisfy({ $0.peers >= wanted }) { break }
            usleep(UInt32(ClusterBench.pollSeconds * 1e6))
        }
        outcome.discoverySeconds = monotonicSeconds() - discoveryStarted
        outcome.peersMin = members.map(\.peers).min() ?? 0
        Output.note("discovery: \(ResultLine.format(outcome.discoverySeconds)) s, peers per node \(members.map(\.peers)) (wanted \(wanted) each)")

        // The plan: which chunk, which node it goes to, and after which upload which node dies.
        var rng = SplitMix64(seed: derivedSeed(seed, 1))
        var killAt: [Int: Int] = [:]  // upload index → member index
        var victims = Array(members.indices)
        for _ in 0..<kills {
            let victim = victims.remove(at: Int(rng.next() % UInt64(victims.count)))
            var at = Int(rng.next() % UInt64(count))
            while killAt[at] != nil { at = (at + 1) % count }  // kills ≤ chunks (validate)
            killAt[at] = victim
        }

        var uploaded: [ChunkAddress] = []
        var uploadedTo: [ChunkAddress: Int] = [:]
        let uploadStarted = monotonicSeconds()
        for i in 0..<count {
            guard monotonicSeconds() < deadline else { throw BenchError("uploaded \(i) of \(count) chunks by the timeout") }
            let chunk = try cluster.chunk(i)
            let target = try upload(chunk, rng: &rng)
            uploaded.append(chunk.address)
            uploadedTo[chunk.address] = target
            if let victim = killAt[i] {
                members[victim].kill()
                let down = ClusterBench.downtime.lowerBound
                    + Double(rng.next() % 1000) / 1000 * (ClusterBench.downtime.upperBound - ClusterBench.downtime.lowerBound)
                restartsDue[victim] = monotonicSeconds() + down
                Output.note("killed node \(victim) after upload \(i + 1); restart in \(ResultLine.format(down)) s")
            }
            try tend()
        }
        let uploadEnded = monotonicSeconds()
        outcome.uploadSeconds = uploadEnded - uploadStarted
        Output.note("uploaded \(count) chunks in \(ResultLine.format(outcome.uploadSeconds)) s")

        var depths = members.map(\.depth)
        var coverage: ClusterCoverage?
        while monotonicSeconds() < deadline {
            try tend(pollingAll: false)
            // Counted once the nodes are back as connected as before the upload: depth is
            // settled, and a node that cannot find its peers again is no success.
            if restartsDue.isEmpty {
                pollAll()
                depths = members.map(\.depth)
                coverage = ClusterCoverage.check(members, chunks: uploaded, depths: depths)
                if coverage?.converged == true && members.allSatisfy({ $0.peers >= outcome.peersMin }) {
                    outcome.converged = true
                    outcome.secondsToConverge = monotonicSeconds() - uploadEnded
                    break
                }
            }
            usleep(UInt32(ClusterBench.pollSeconds * 1e6))
        }
        if outcome.converged {
            Output.note("converged \(ResultLine.format(outcome.secondsToConverge)) s after the last upload; depths \(depths), peers \(members.map(\.peers))")
        } else if let coverage {
            Output.note("not converged after \(ResultLine.format(monotonicSeconds() - started)) s "
                        + "(peers per node \(members.map(\.peers)), wanted ≥ \(outcome.peersMin) each as before the upload): "
                        + coverage.describeGaps(members, depths: depths, uploadedTo: uploadedTo))
        } else {
            Output.note("not converged: nodes still down \(restartsDue.keys.sorted()) or a store unreadable")
        }
        pollAll()
        // What each node holds now, beside its neighbourhood: after the stop would count what it
        // synced while the network went down.
        if let coverage {
            outcome.held = coverage.held
            outcome.beyond = coverage.beyond
        }
        outcome.diskBytes = members.map(\.storeDiskBytes)
        outcome.duplicates = members.reduce(0) { $0 + $1.duplicates }
        outcome.received = members.reduce(0) { $0 + $1.received }
        outcome.depths = depths

        // Stop, verify, and look at the stores once more, closed: nothing may have gone.
        for member in members { member.beginStop() }
        for member in members {
            if let ended = member.waitStopped(), ended != .exited(0) {
                outcome.uncleanStops += 1
                Output.note("node \(member.index) stopped with \(ended)")
            }
        }
        for member in members where !verifyWithInspector(member.dataDirectory) { outcome.verifyFailures += 1 }
        if let final = ClusterCoverage.check(members, chunks: uploaded, depths: depths) {
            if outcome.converged && !final.converged {
                Output.note("after the stop: " + final.describeGaps(members, depths: depths, uploadedTo: uploadedTo))
                outcome.converged = false
            }
            for member in members where outcome.held.indices.contains(member.index) {
                let i = member.index
                Output.note("node \(i) \(member.overlayPrefix)… depth \(depths[i]) peers \(member.peers) holds \(outcome.held[i]) "
                            + "(\(outcome.beyond[i]) beyond its neighbourhood, \(final.held[i]) after the stop), "
                            + "missing \(final.missing[i]), lives \(member.starts), \(outcome.diskBytes[i]) bytes on disk")
            }
        }
        for member in members { member.closeReader() }
        outcome.seconds = monotonicSeconds() - started
        return outcome
    }

    /// Posts `chunk` to a random running node (another one if that fails); its index.
    private mutating func upload(_ chunk: Chunk, rng: inout SplitMix64) throws -> Int {
        let running = members.filter(\.isRunning)
        guard !running.isEmpty else { throw BenchError("no node is running") }
        var failures: [String] = []
        for attempt in 0..<3 {
            let member = running[Int((rng.next() &+ UInt64(attempt)) % UInt64(running.count))]
            guard let port = member.process?.apiPort else { continue }
            do {
                try ClusterRun.post(chunk, port: port)
                return member.index
            } catch {
                failures.append("node \(member.index): \(error)")
            }
        }
        throw BenchError("POST /chunks failed: \(failures.joined(separator: "; "))")
    }

    /// `POST /chunks` with span ‖ payload; 201 (stored) or 200 (already stored). The answer's
    /// body (`UploadResponse`, with how the push to the chunk's neighbourhood ended).
    @discardableResult
    static func post(_ chunk: Chunk, port: Int) throws -> [UInt8] {
        let deadline = monotonicSeconds() + 30
        let exchange = try HTTPExchange(port: port, ioTimeoutSeconds: 30)
        let body = chunk.serialized
        try exchange.send("POST /chunks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                          + "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n")
        try body.withUnsafeBytes { try exchange.send($0) }
        let head = try exchange.readHead(deadline: deadline)
        let answer = try exchange.readSmallBody(head, deadline: deadline)
        guard head.status == 201 || head.status == 200 else {
            throw BenchError("status \(head.status): \(String(decoding: answer.prefix(300), as: UTF8.self))")
        }
        return Array(answer)
    }

    /// Restarts the nodes whose downtime is over and, every `pollSeconds`, reads every node's
    /// `/status` (so that a node killed later has its counters counted).
    private mutating func tend(pollingAll: Bool = true) throws {
        let now = monotonicSeconds()
        for (index, due) in restartsDue.sorted(by: { $0.key < $1.key }) where due <= now {
            try start(members[index])
            restartsDue[index] = nil
            Output.note("restarted node \(index) at \(members[index].listen)")
        }
        if pollingAll && now - lastPoll >= ClusterBench.pollSeconds { pollAll() }
    }

    private mutating func pollAll() {
        lastPoll = monotonicSeconds()
        for member in members { member.poll() }
    }
}
