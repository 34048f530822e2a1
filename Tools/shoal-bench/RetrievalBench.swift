import ArgumentParser
import Foundation
import ShoalCore

#if canImport(Glibc)
import Glibc
#endif

/// `shoal-bench retrieval`: how long a node takes to fetch a chunk it does not hold, through
/// forwarding Kademlia, in a network of real `shoal start` processes on 127.0.0.1.
struct RetrievalBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retrieval",
        abstract: "Retrieval latency over a loopback network: GET /chunks of chunks the asked node does not hold.",
        discussion: """
            Steps: start N nodes (node i > 0 told only of node 0, as `cluster` does) and wait until \
            each is connected to min(N-1, 20) others and depths and peers stay put for 1 s; \
            POST /chunks C seeded random chunks (4,096-byte payloads), each to a random node; wait \
            until every node holds every chunk of its neighbourhood (PO ≥ its depth, read from the \
            stores) and the holdings stop changing for 1 s. Then, one chunk at a time, pick a node \
            whose store lacks it, confirm with GET /chunks/{address}?local=true → 404, and time \
            GET /chunks/{address} on that node over a keep-alive connection (from sending the \
            request to the last body byte): it must answer 200, Shoal-Source: network, and the \
            exact chunk. Chunks every node holds are skipped and counted. The nodes' retrieval \
            counters (/status) are read before and after the timed phase: hops_mean is the peers \
            asked (attempts, summed over all nodes) per timed retrieval. Prints RESULT \
            name=retrieval nodes chunks seed measured skipped_all_hold failures (not 200) \
            wrong_source wrong_bytes p50_ms p90_ms p99_ms max_ms mean_ms hops_mean ms_per_hop_p99 \
            (p99 ÷ hops_mean) attempts forwarded delivered retrieval_failed timeouts refusals \
            settled discovery_seconds upload_seconds settle_seconds depth_min depth_max peers_min \
            load1 load5 seconds, then RESULT name=retrieval-histogram with cumulative counts \
            le_<edge>ms and over_1000ms, then RESULT name=push: each upload waits for its push to the \
            chunk's neighbourhood (uploads receipted_by_other receipted_by_uploader failed p50_ms p99_ms \
            max_ms of the POSTs, storer_proximity_mean). Latencies include failed requests. Exit status 1 when \
            nothing was timed, a retrieval failed or answered wrongly, or the timeout cut the \
            timed phase short.
            """)

    @Option(help: "Nodes in the network.") var nodes = 12
    @Option(help: "Random chunks to upload and retrieve (4,096-byte payloads).") var chunks = 1000
    @Option(help: "Seed of the chunks, the upload targets and the nodes asked (default: a random one, printed).") var seed: UInt64?
    @Option(help: "Seconds the whole run may take from the first start to the last retrieval.") var timeout: Double = 300
    @Option(help: "Scratch directory (default: a fresh one, removed at the end unless the run fails).") var dir: String?
    @Option(help: "Path of the shoal executable (default: beside this one).") var shoal: String?
    @Option(name: .customLong("log-level"), help: "The nodes' log level (their logs are DIR/node-i.log).") var logLevel = "warning"
    @Flag(help: "Keep the scratch directory.") var keep = false

    /// Seconds depths, peers and holdings must stay unchanged before the next step starts.
    static let steadySeconds = 1.0
    /// Seconds between two looks at the nodes' `/status` and stores.
    static let pollSeconds = 0.25
    /// Of the time left after the start, at most this share goes to waiting for the mesh.
    static let discoveryShareMax = 0.25
    /// Seconds one timed retrieval may take: above the longest an origin can wait (4 attempts,
    /// each at most 1 s + 0.5 s × 8 hops).
    static let retrievalSecondsMax = 30.0

    func validate() throws {
        guard nodes >= 2 && nodes <= 200 else { throw ValidationError("--nodes must be 2…200") }
        guard chunks >= 1 && chunks <= 1_000_000 else { throw ValidationError("--chunks must be 1…1,000,000") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }

    func run() throws {
        let seed = self.seed ?? UInt64.random(in: 1...UInt64(UInt32.max))
        let shoal = self.shoal ?? siblingExecutable("shoal")
        let scratch = try dir ?? Files.makeTemporaryDirectory(in: Files.defaultScratchParent(), prefix: "retrieval")
        if dir != nil { try Files.makeDirectory(scratch) }
        Output.note("# retrieval: \(nodes) nodes, \(chunks) chunks, seed \(seed), timeout \(Int(timeout)) s, in \(scratch)")
        let run = RetrievalRun(nodes: nodes, root: scratch, shoal: shoal, logLevel: logLevel, seed: seed, timeout: timeout)
        defer { run.killAll() }
        let outcome = try run.execute(chunks: chunks)
        var line = ResultLine("retrieval")
        line.add("nodes", nodes)
        line.add("chunks", chunks)
        line.add("seed", seed)
        outcome.add(to: &line)
        line.emit()
        outcome.histogramLine().emit()
        outcome.pushes.line(nodes: nodes, seed: seed).emit()
        if outcome.passed {
            if !keep && dir == nil { Files.removeTree(scratch) }
        } else {
            Output.note("retrieval: seed \(seed) failed; data directories and logs kept in \(scratch)")
            throw ExitCode.failure
        }
    }
}

/// The nodes' retrieval counters (`/status` → `retrieval.counters`), summed or differenced.
struct RetrievalCounterSnapshot {
    static let names = ["requested", "forwarded", "joined", "delivered", "failed", "attempts", "timeouts",
                        "refusals", "lateReplies", "loops", "overloaded"]

    var values: [String: Int] = [:]

    /// From one node's `/status`; nil when it has no retrieval section.
    init?(status: [String: Any]) {
        guard let retrieval = status["retrieval"] as? [String: Any],
              let counters = retrieval["counters"] as? [String: Any] else { return nil }
        for name in Self.names { values[name] = counters[name] as? Int ?? 0 }
    }

    init() {}

    subscript(_ name: String) -> Int { values[name] ?? 0 }

    static func + (a: Self, b: Self) -> Self {
        var sum = Self()
        for name in names { sum.values[name] = a[name] + b[name] }
        return sum
    }

    static func - (a: Self, b: Self) -> Self {
        var difference = Self()
        for name in names { difference.values[name] = a[name] - b[name] }
        return difference
    }
}

/// What a retrieval run measured.
struct RetrievalOutcome {
    var latencies: [Double] = []
    var skippedAllHold = 0
    /// Not 200.
    var failures = 0
    var wrongSource = 0
    var wrongBytes = 0
    /// Nodes whose store lacked the chunk when picked and that held it at the local probe.
    var stalePicks = 0
    var counters = RetrievalCounterSnapshot()
    var settled = false
    var complete = false
    var discoverySeconds = 0.0
    var uploadSeconds = 0.0
    var settleSeconds = 0.0
    var depths: [Int] = []
    var peersMin = 0
    var seconds = 0.0
    /// How the uploads' pushes to their neighbourhoods ended.
    var pushes = PushOutcome()

    var passed: Bool { complete && !latencies.isEmpty && failures == 0 && wrongSource == 0 && wrongBytes == 0 }

    /// Peers asked per timed retrieval.
    var hopsMean: Double { latencies.isEmpty ? 0 : Double(counters["attempts"]) / Double(latencies.count) }

    func add(to line: inout ResultLine) {
        let summary = LatencySummary(latencies)
        line.add("measured", latencies.count)
        line.add("skipped_all_hold", skippedAllHold)
        line.add("failures", failures)
        line.add("wrong_source", wrongSource)
        line.add("wrong_bytes", wrongBytes)
        line.add("stale_picks", stalePicks)
        line.add("p50_ms", summary.percentileMs(0.50))
        line.add("p90_ms", summary.percentileMs(0.90))
        line.add("p99_ms", summary.percentileMs(0.99))
        line.add("max_ms", summary.maxMs)
        line.add("mean_ms", summary.meanMs)
        line.add("hops_mean", hopsMean)
        line.add("ms_per_hop_p99", hopsMean > 0 ? summary.percentileMs(0.99) / hopsMean : 0)
        line.add("attempts", counters["attempts"])
        line.add("forwarded", counters["forwarded"])
        line.add("delivered", counters["delivered"])
        line.add("retrieval_failed", counters["failed"])
        line.add("timeouts", counters["timeouts"])
        line.add("refusals", counters["refusals"])
        line.add("settled", settled ? 1 : 0)
        line.add("discovery_seconds", discoverySeconds)
        line.add("upload_seconds", uploadSeconds)
        line.add("settle_seconds", settleSeconds)
        line.add("depth_min", depths.min() ?? 0)
        line.add("depth_max", depths.max() ?? 0)
        line.add("peers_min", peersMin)
        line.addLoadAverage()
        line.add("seconds", seconds)
    }

    func histogramLine() -> ResultLine {
        var line = ResultLine("retrieval-histogram")
        let (atMost, over) = LatencySummary(latencies).histogram()
        for (edge, count) in atMost {
            let edgeText = edge == edge.rounded() ? String(Int(edge)) : String(edge)
            line.add("le_\(edgeText)ms", count)
        }
        line.add("over_\(Int(LatencySummary.bucketEdgesMs.last ?? 0))ms", over)
        line.add("count", latencies.count)
        return line
    }
}

/// The uploads of a run and their pushes: each `POST /chunks` waits for the push's receipt (or
/// its failure), so its time is the push's, plus one local commit.
struct PushOutcome {
    var latencies: [Double] = []
    /// Receipts signed by another node, by the uploading node itself, and pushes without one.
    var byOther = 0, byUploader = 0, failed = 0
    /// The storers' proximities to their chunks (other nodes' receipts only).
    var proximities: [Int] = []

    mutating func record(_ answer: [UInt8], seconds: Double) {
        latencies.append(seconds)
        guard let json = try? JSONSerialization.jsonObject(with: Data(answer)) as? [String: Any],
              let push = json["push"] as? [String: Any], push["storer"] is String else {
            failed += 1
            return
        }
        if push["thisNode"] as? Bool == true {
            byUploader += 1
        } else {
            byOther += 1
            if let proximity = push["proximity"] as? Int { proximities.append(proximity) }
        }
    }

    /// `RESULT name=push`: uploads, receipts by another node and by the uploader, failures,
    /// the POST's p50/p99 and the storers' mean proximity to their chunks.
    func line(nodes: Int, seed: UInt64) -> ResultLine {
        var line = ResultLine("push")
        let summary = LatencySummary(latencies)
        line.add("nodes", nodes)
        line.add("seed", seed)
        line.add("uploads", latencies.count)
        line.add("receipted_by_other", byOther)
        line.add("receipted_by_uploader", byUploader)
        line.add("failed", failed)
        line.add("p50_ms", summary.percentileMs(0.50))
        line.add("p99_ms", summary.percentileMs(0.99))
        line.add("max_ms", summary.maxMs)
        line.add("storer_proximity_mean", proximities.isEmpty ? 0 : Double(proximities.reduce(0, +)) / Double(proximities.count))
        return line
    }
}

/// One run of the retrieval bench: the members and the steps in order.
struct RetrievalRun {
    let cluster: LocalCluster
    var members: [ClusterMember] { cluster.members }
    var seed: UInt64 { cluster.seed }
    var started: Double { cluster.started }
    var deadline: Double { cluster.deadline }

    init(nodes: Int, root: String, shoal: String, logLevel: String, seed: UInt64, timeout: Double) {
        cluster = LocalCluster(nodes: nodes, root: root, shoal: shoal, logLevel: logLevel, seed: seed, timeout: timeout)
    }

    func killAll() { cluster.killAll() }

    func execute(chunks count: Int) throws -> RetrievalOutcome {
        var outcome = RetrievalOutcome()
        for member in members { try cluster.start(member) }
        Output.note("started \(members.count) nodes in \(ResultLine.format(monotonicSeconds() - started)) s; node 0 at \(members[0].listen)")

        outcome.discoverySeconds = waitForMesh()
        outcome.peersMin = members.map(\.peers).min() ?? 0

        // The chunks, and where each goes.
        var rng = SplitMix64(seed: derivedSeed(seed, 1))
        var uploaded: [Chunk] = []
        let uploadStarted = monotonicSeconds()
        for i in 0..<count {
            guard monotonicSeconds() < deadline else { throw BenchError("uploaded \(i) of \(count) chunks by the timeout") }
            let chunk = try cluster.chunk(i)
            let member = members[Int(rng.next() % UInt64(members.count))]
            guard let port = member.process?.apiPort else { throw BenchError("\(member.name) is not running") }
            let posted = monotonicSeconds()
            let answer = try ClusterRun.post(chunk, port: port)
            outcome.pushes.record(answer, seconds: monotonicSeconds() - posted)
            uploaded.append(chunk)
        }
        outcome.uploadSeconds = monotonicSeconds() - uploadStarted
        Output.note("uploaded \(count) chunks in \(ResultLine.format(outcome.uploadSeconds)) s")

        let settleStarted = monotonicSeconds()
        outcome.settled = waitForSync(uploaded.map(\.address))
        outcome.settleSeconds = monotonicSeconds() - settleStarted
        outcome.depths = members.map(\.depth)

        try measure(uploaded, into: &outcome)

        for member in members { member.closeReader() }
        for member in members { member.beginStop() }
        for member in members {
            if let ended = member.waitStopped(), ended != .exited(0) { Output.note("\(member.name) stopped with \(ended)") }
        }
        outcome.seconds = monotonicSeconds() - started
        return outcome
    }

    /// Waits (bounded) until every node has min(N-1, `binPeersMax`) peers, retrieval knows them,
    /// and depths and peers stayed the same for `steadySeconds`. Returns the seconds it took.
    private func waitForMesh() -> Double {
        let begun = monotonicSeconds()
        let wanted = min(members.count - 1, ClusterBench.connectedWanted)
        let until = begun + (deadline - begun) * RetrievalBench.discoveryShareMax
        var last: [Int] = []
        var steadySince = monotonicSeconds()
        while monotonicSeconds() < until {
            let seen = members.map { member -> [Int] in
                let status = member.process.flatMap { try? $0.getJSON("/status") }
                member.poll()
                let retrievalPeers = (status?["retrieval"] as? [String: Any])?["peers"] as? Int ?? 0
                return [member.peers, member.depth, retrievalPeers]
            }
            let now = monotonicSeconds()
            if seen.flatMap({ $0 }) != last { (last, steadySince) = (seen.flatMap { $0 }, now) }
            if seen.allSatisfy({ $0[0] >= wanted && $0[2] >= wanted }) && now - steadySince >= RetrievalBench.steadySeconds { break }
            usleep(UInt32(RetrievalBench.pollSeconds * 1e6))
        }
        let seconds = monotonicSeconds() - begun
        Output.note("mesh: \(ResultLine.format(seconds)) s, peers per node \(members.map(\.peers)) (wanted \(wanted) each), depths \(members.map(\.depth))")
        return seconds
    }

    /// Waits (bounded by the run's deadline) until every node holds every chunk at PO ≥ its
    /// depth and what the stores hold stayed the same for `steadySeconds`. True if it did.
    private func waitForSync(_ addresses: [ChunkAddress]) -> Bool {
        var lastHeld: [Int] = []
        var steadySince = monotonicSeconds()
        while monotonicSeconds() < deadline {
            for member in members { member.poll() }
            let depths = members.map(\.depth)
            let coverage = ClusterCoverage.check(members, chunks: addresses, depths: depths)
            let now = monotonicSeconds()
            let held = (coverage?.held ?? []) + depths
            if held != lastHeld { (lastHeld, steadySince) = (held, now) }
            if let coverage, coverage.converged, now - steadySince >= RetrievalBench.steadySeconds {
                Output.note("synced: chunks per node \(coverage.held), depths \(depths)")
                return true
            }
            if coverage == nil { lastHeld = [] }
            usleep(UInt32(RetrievalBench.pollSeconds * 1e6))
        }
        if let coverage = ClusterCoverage.check(members, chunks: addresses, depths: members.map(\.depth)) {
            Output.note("sync not settled by the timeout; measuring anyway: "
                        + coverage.describeGaps(members, depths: members.map(\.depth), uploadedTo: [:]))
        }
        return false
    }

    /// The timed phase: each chunk from a node that lacks it, one at a time.
    private func measure(_ chunks: [Chunk], into outcome: inout RetrievalOutcome) throws {
        var rng = SplitMix64(seed: derivedSeed(seed, 3))
        // Who holds what, from the stores; the local probe confirms it just before each timing.
        var holds: [[Bool]] = []
        for member in members {
            guard let has = member.holds(chunks.map(\.address)) else { throw BenchError("\(member.name): store not readable") }
            holds.append(has)
        }
        let apis = try members.map { member -> KeepAliveAPI in
            guard let port = member.process?.apiPort else { throw BenchError("\(member.name) is not running") }
            let api = KeepAliveAPI(port: port)
            try api.open()
            return api
        }
        var before = RetrievalCounterSnapshot()
        for member in members { before = before + (try counters(member)) }
        var reported = 0
        outcome.complete = true
        for (i, chunk) in chunks.enumerated() {
            guard monotonicSeconds() < deadline else {
                Output.note("timeout: timed \(outcome.latencies.count), skipped \(outcome.skippedAllHold) of \(chunks.count) chunks")
                outcome.complete = false
                break
            }
            var lacking = members.indices.filter { !holds[$0][i] }
            lacking.shuffle(using: &rng)
            var origin: Int?
            for candidate in lacking {
                let path = "/chunks/\(chunk.address.hex)?local=true"
                let probe = try apis[candidate].requestRetrying("GET", path, deadline: min(deadline, monotonicSeconds() + 10))
                if probe.head.status == 404 { origin = candidate; break }
                guard probe.head.status == 200 else {
                    throw BenchError("node \(candidate) GET \(path): status \(probe.head.status): \(String(decoding: probe.body.prefix(300), as: UTF8.self))")
                }
                outcome.stalePicks += 1
            }
            guard let origin else {
                outcome.skippedAllHold += 1
                continue
            }
            let path = "/chunks/\(chunk.address.hex)"
            let begun = monotonicSeconds()
            let answer: KeepAliveAPI.Answer
            do {
                answer = try apis[origin].request("GET", path, deadline: min(deadline, begun + RetrievalBench.retrievalSecondsMax))
            } catch {
                outcome.latencies.append(monotonicSeconds() - begun)
                outcome.failures += 1
                if reported < Self.reportsMax { Output.note("node \(origin) GET \(path): \(error)"); reported += 1 }
                continue
            }
            outcome.latencies.append(monotonicSeconds() - begun)
            if answer.head.status != 200 {
                outcome.failures += 1
                if reported < Self.reportsMax {
                    Output.note("node \(origin) GET \(path): status \(answer.head.status) after \(ResultLine.format((monotonicSeconds() - begun) * 1000)) ms: "
                                + String(decoding: answer.body.prefix(300), as: UTF8.self))
                    reported += 1
                }
            } else if answer.head.header("shoal-source") != "network" {
                outcome.wrongSource += 1
                if reported < Self.reportsMax {
                    Output.note("node \(origin) GET \(path): Shoal-Source \(answer.head.header("shoal-source") ?? "absent"), want network")
                    reported += 1
                }
            } else if answer.body != chunk.serialized {
                outcome.wrongBytes += 1
                if reported < Self.reportsMax {
                    Output.note("node \(origin) GET \(path): \(answer.body.count) bytes, not the \(chunk.serialized.count) uploaded")
                    reported += 1
                }
            }
        }
        if outcome.latencies.isEmpty && outcome.skippedAllHold == chunks.count {
            // Depth 0 (fewer than 4 peers on a node's side of the first bit, or none on the
            // other side) makes a node's neighbourhood everything. In a full mesh of 10 or more
            // nodes one side has 5, so some node has depth ≥ 1 unless all share the first bit.
            Output.note("every node holds every chunk (depths \(outcome.depths)): nothing to retrieve; "
                        + "with 10 or more nodes some node almost always has depth ≥ 1")
        }
        var after = RetrievalCounterSnapshot()
        for member in members { after = after + (try counters(member)) }
        outcome.counters = after - before
        Output.note("timed \(outcome.latencies.count) retrievals (skipped \(outcome.skippedAllHold) held everywhere, "
                    + "\(outcome.stalePicks) picks held meanwhile); counters over the phase: "
                    + RetrievalCounterSnapshot.names.map { "\($0) \(outcome.counters[$0])" }.joined(separator: ", "))
    }

    /// At most this many failed retrievals are described on stderr.
    static let reportsMax = 10

    private func counters(_ member: ClusterMember) throws -> RetrievalCounterSnapshot {
        guard let process = member.process else { throw BenchError("\(member.name) is not running") }
        let status = try process.getJSON("/status")
        guard let snapshot = RetrievalCounterSnapshot(status: status) else {
            throw BenchError("\(member.name): /status has no retrieval counters")
        }
        return snapshot
    }
}
