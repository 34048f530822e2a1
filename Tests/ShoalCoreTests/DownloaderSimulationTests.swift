import ShoalCore
import Testing

extension DownloaderTests {
    /// Random worlds: peers that hold some chunks, some silent, some unreachable; downloads
    /// started, extended and cancelled at random; connections that come and go; offers,
    /// presence answers, chunks that pull sync stores, stores that fail. The machine's
    /// invariants are checked after every event, and every download must end — completed with
    /// every chunk stored, or failed naming chunks that are not — within bounded simulated time.
    struct Simulation {
        @Test func everyDownloadCompletesOrFailsWithAReasonInBoundedTime() {
            var slowest: (seed: UInt64, endedAt: UInt64) = (0, 0)
            var outcomes = (completed: 0, failed: 0, cancelled: 0)
            var presence = DownloadCounters()
            for seed in UInt64(0)..<300 {
                let run = DownloadSimulation.run(seed: seed)
                if run.endedAt > slowest.endedAt { slowest = (seed, run.endedAt) }
                outcomes.completed += run.completed
                outcomes.failed += run.failed
                outcomes.cancelled += run.cancelled
                presence.presenceQueries += run.counters.presenceQueries
                presence.presenceTimeouts += run.counters.presenceTimeouts
                presence.presenceMalformed += run.counters.presenceMalformed
                presence.falseClaims += run.counters.falseClaims
                presence.peersDistrusted += run.counters.peersDistrusted
            }
            // The worlds are meant to exercise every ending, and presence queries with every
            // kind of answer.
            #expect(outcomes.completed > 50 && outcomes.failed > 50 && outcomes.cancelled > 20, "\(outcomes)")
            #expect(presence.presenceQueries > 100 && presence.presenceTimeouts > 0 && presence.presenceMalformed > 0
                    && presence.falseClaims > 0 && presence.peersDistrusted > 0, "\(presence)")
            #expect(slowest.endedAt <= DownloadSimulation.timeBoundMs, "seed \(slowest.seed) ended at \(slowest.endedAt) ms")
        }

        /// The machine's tables may be laid out differently (here: grown by an unrelated
        /// download, requests and peers first), but no set or dictionary order may change what
        /// it does. Best effort: within one process equal tables are often laid out alike, so
        /// the rule itself is kept by construction (every loop that emits actions walks an
        /// array, a sorted list or a heap with a total order).
        @Test(arguments: [UInt64(3), 17, 42])
        func theSameEventsGiveTheSameActionsWhateverTheTablesLookLike(seed: UInt64) {
            let plain = DownloadSimulation.run(seed: seed)
            let again = DownloadSimulation.run(seed: seed)
            var warm = DownloadSimulation(seed: seed)
            warm.warmUp()
            let warmed = warm.run()
            #expect(plain.log.count > 100)
            #expect(plain.log == again.log)
            #expect(renumbered(plain.log) == renumbered(warmed.log))
        }

        /// The log with request and presence query IDs numbered by first appearance (a warmed-up machine has used some).
        func renumbered(_ log: [DownloadAction]) -> [DownloadAction] {
            var numbers: [UInt64: UInt64] = [:]
            func number(_ r: FetchRequest) -> FetchRequest {
                var r = r
                if numbers[r.id] == nil { numbers[r.id] = UInt64(numbers.count) }
                r.id = numbers[r.id]!
                return r
            }
            func number(_ q: PresenceQuery) -> PresenceQuery {
                var q = q
                if numbers[q.id] == nil { numbers[q.id] = UInt64(numbers.count) }
                q.id = numbers[q.id]!
                return q
            }
            return log.map { action in
                switch action {
                case .request(let r): return .request(number(r))
                case .cancelRequest(let r): return .cancelRequest(number(r))
                case .askPresence(let q): return .askPresence(number(q))
                case .cancelPresence(let q): return .cancelPresence(number(q))
                default: return action
                }
            }
        }
    }
}

/// One random world around one `DownloadMachine`, on a virtual clock.
struct DownloadSimulation {
    /// Runs the world of `seed` to its end.
    static func run(seed: UInt64) -> Result {
        var simulation = DownloadSimulation(seed: seed)
        return simulation.run()
    }

    /// How long a world may take to end all its downloads. The chaos lasts 10 minutes; after
    /// it, the slowest chunk is one whose peers are connected but silent: each climbs the
    /// back-off steps (20 s … 10 min, about 15 minutes), is dropped for `droppedHoldMs` (1 h),
    /// and climbs them again, until the chunk's attempts of it are spent (8). Then the chunk
    /// gives up after `providerWaitMaxMs`. About 2 h; 4,000 seeds took at most 1 h 42 min.
    static let timeBoundMs: UInt64 = 3 * 3_600_000
    static let eventsMax = 400_000

    enum Event {
        case answer(FetchRequest)
        case presenceAnswer(PresenceQuery)
        case dialResult(OverlayAddress)
        case commit(ChunkAddress)
        case chaos
    }

    struct Scheduled {
        var at: UInt64
        var sequence: Int
        var event: Event
    }

    let seed: UInt64
    var rng: SplitMix64
    var machine: DownloadMachine
    var now: UInt64 = 0
    var queue: [Scheduled] = []
    var sequence = 0

    let peers: [OverlayAddress]
    let pool: [ChunkAddress]
    var holds: [OverlayAddress: Set<ChunkAddress>] = [:]
    var silent: Set<OverlayAddress> = []
    var unreachable: Set<OverlayAddress> = []
    /// Say in presence answers that they have everything.
    var liars: Set<OverlayAddress> = []
    var connected: Set<OverlayAddress> = []
    var stored: Set<ChunkAddress> = []

    var wanted: [DownloadID: Set<ChunkAddress>] = [:]
    var outcomes: [DownloadID: DownloadOutcome] = [:]
    var nextDownload = 0
    var log: [DownloadAction] = []

    init(seed: UInt64) {
        self.seed = seed
        rng = SplitMix64(seed: seed ^ 0x5EED)
        var limits = DownloadLimits()
        if seed % 2 == 1 {
            // Tight limits, so that every bound is reached often.
            limits.requestsInFlightMax = 6
            limits.requestsPerPeerMax = 2
            limits.dialsInFlightMax = 2
            limits.hintsPerChunkMax = 3
            limits.hintsPerDownloadMax = 2
            limits.closestPeersPerChunk = 2
            limits.groupPeersMax = 1
            limits.peersTriedPerChunkMax = 3
            limits.attemptsPerChunkMax = 10
            limits.attemptsPerPeerMax = 3
            limits.missingReportedMax = 2
            limits.scheduleScanMax = 4
            limits.downloadsMax = 4
            limits.fetchSetMax = 30
            limits.presenceQueriesInFlightMax = 2
            limits.presenceBatchMax = 3
            limits.presencePeersPerChunkMax = 2
            limits.falseClaimsMax = 2
        }
        machine = DownloadMachine(limits: limits, seed: seed)
        let base = Int(seed)
        let peerCount = 3 + Int(rng.next() % 6)
        peers = (0..<peerCount).map { peer(base * 100 + $0) }
        pool = (0..<40).map { chunk(base * 1000 + $0) }
        for p in peers {
            holds[p] = Set(pool.filter { _ in rng.next() % 3 != 0 })
            if rng.next() % 4 == 0 { silent.insert(p) }
            if rng.next() % 4 == 0 { unreachable.insert(p) }
            if rng.next() % 4 == 0 { liars.insert(p) }
        }
        // Some chunks nobody has: downloads that want them cannot complete.
        for address in pool.prefix(4) { for p in peers { holds[p]!.remove(address) } }
    }

    /// Grows the machine's tables (downloads, fetch set, requests, peers) with an unrelated
    /// download and peers, and leaves nothing of them but used request IDs.
    mutating func warmUp() {
        let other = DownloadID(chunk(9_999_999))
        let helpers = (0..<10).map { peer(10_000_000 + $0) }
        for p in helpers { _ = machine.peerConnected(p, now: 0) }
        _ = try? machine.start(other, addresses: (0..<200).map { chunk(10_000_000 + $0) }, policy: .eagerPin,
                               hints: helpers, now: 0)
        _ = machine.cancel(other, now: 0)
        for p in helpers { _ = machine.peerDisconnected(p, now: 0) }
        for i in 0..<100 {
            _ = machine.peerConnected(peer(20_000_000 + i), now: 0)
            _ = machine.peerDisconnected(peer(20_000_000 + i), now: 0)
        }
        machine.checkInvariants()
    }

    mutating func schedule(_ event: Event, after delay: UInt64) {
        sequence += 1
        queue.append(Scheduled(at: now + delay, sequence: sequence, event: event))
    }

    mutating func random(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }

    struct Result {
        var endedAt: UInt64
        var completed = 0, failed = 0, cancelled = 0
        var log: [DownloadAction]
        var counters = DownloadCounters()
    }

    mutating func run() -> Result {
        // Some peers are connected from the start; the rest connect, or are dialled, later.
        for p in peers where random(2) == 0 && !unreachable.contains(p) { connect(p) }
        for _ in 0..<(1 + random(3)) { startDownload() }
        for i in 0..<60 { schedule(.chaos, after: UInt64(i) * 10_000 + UInt64(random(10_000))) }

        var events = 0
        while events < Self.eventsMax {
            events += 1
            let next = queue.indices.min { (queue[$0].at, queue[$0].sequence) < (queue[$1].at, queue[$1].sequence) }
            let chaosLeft = queue.contains { if case .chaos = $0.event { true } else { false } }
            if machine.downloadIDs.isEmpty && !chaosLeft { break }
            let machineAt = machine.nextDeadline
            if let machineAt, next == nil || machineAt <= queue[next!].at {
                now = max(now, machineAt)
                apply(machine.tick(now: now))
                continue
            }
            guard let next else {
                Issue.record("seed \(seed): downloads \(machine.downloadIDs) wait for nothing at \(now) ms")
                break
            }
            let scheduled = queue.remove(at: next)
            now = max(now, scheduled.at)
            handle(scheduled.event)
            if now > Self.timeBoundMs {
                Issue.record("seed \(seed): still running at \(now) ms")
                break
            }
        }
        #expect(events < Self.eventsMax, "seed \(seed): \(events) events")
        #expect(machine.downloadIDs.isEmpty && machine.fetchSetCount == 0 && machine.requestsInFlight.isEmpty,
                "seed \(seed): \(machine.downloadIDs.count) downloads, \(machine.fetchSetCount) chunks left")
        for id in wanted.keys.sorted() {
            #expect(outcomes[id] != nil, "seed \(seed): \(id) never ended")
        }
        var result = Result(endedAt: now, log: log, counters: machine.counters)
        for outcome in outcomes.values {
            switch outcome {
            case .completed: result.completed += 1
            case .failed: result.failed += 1
            case .cancelled: result.cancelled += 1
            }
        }
        return result
    }

    mutating func handle(_ event: Event) {
        switch event {
        case .answer(let request):
            guard connected.contains(request.peer) else { return }  // the connection went with its requests
            if random(20) == 0 {
                apply(machine.requestFailed(request.address, peer: request.peer, now: now))
            } else if holds[request.peer]!.contains(request.address) {
                apply(machine.delivered(request.address, from: request.peer, now: now))
            } else {
                apply(machine.notFound(request.address, from: request.peer, now: now))
            }
        case .presenceAnswer(let query):
            guard connected.contains(query.peer) else { return }
            // Mostly the truth (a liar says yes to everything); sometimes a false yes (it is
            // then asked, and says not-found), sometimes an answer no honest peer sends.
            var present = query.addresses.map { holds[query.peer]!.contains($0) || liars.contains(query.peer) || random(8) == 0 }
            if random(25) == 0 { present.append(true) }
            apply(machine.presence(id: query.id, from: query.peer, bitvector: Presence(ruid: 0, present: present).bitvector, now: now))
        case .dialResult(let p):
            if unreachable.contains(p) {
                if random(2) == 0 { apply(machine.dialFailed(p, now: now)) }  // or never heard of again
            } else if !connected.contains(p) {
                connect(p)
            }
        case .commit(let address):
            if random(15) == 0 {
                apply(machine.storeFailed(address, now: now))
            } else {
                stored.insert(address)
                apply(machine.stored(address, now: now))
            }
        case .chaos:
            chaos()
        }
    }

    mutating func chaos() {
        let live = machine.downloadIDs
        switch random(9) {
        case 0:
            let candidates = peers.filter { !connected.contains($0) && !unreachable.contains($0) }
            if let p = candidates.randomElement(using: &rng) { connect(p) }
        case 1:
            if let p = connected.sorted().randomElement(using: &rng) {
                connected.remove(p)
                apply(machine.peerDisconnected(p, now: now))
            }
        case 2:
            if let id = live.randomElement(using: &rng) { apply(machine.cancel(id, now: now)) }
        case 3:
            startDownload()
        case 4:
            if let id = live.randomElement(using: &rng) {
                let more = (0..<(1 + random(6))).map { _ in pool[random(pool.count)] }
                if let actions = try? machine.add(more, to: id, hints: [peers[random(peers.count)]], now: now,
                                                   isStored: { stored.contains($0) }) {
                    wanted[id]!.formUnion(more)
                    apply(actions)
                }
            }
        case 5:
            // A peer offers chunks it has (pull sync).
            let p = peers[random(peers.count)]
            let offered = holds[p]!.sorted().filter { _ in random(4) == 0 }
            apply(machine.hinted(offered, by: p, now: now))
        case 6:
            let p = peers[random(peers.count)]
            guard connected.contains(p), !silent.contains(p) else { return }
            let asked = (0..<(1 + random(5))).map { _ in pool[random(pool.count)] }
            apply(machine.presence(p, addresses: asked, bits: asked.map { holds[p]!.contains($0) }, now: now))
        case 7:
            // Pull sync stores a chunk.
            let address = pool[random(pool.count)]
            stored.insert(address)
            apply(machine.stored(address, now: now))
        default:
            break
        }
    }

    mutating func connect(_ p: OverlayAddress) {
        connected.insert(p)
        apply(machine.peerConnected(p, now: now))
    }

    mutating func startDownload() {
        let id = download(Int(seed) * 100 + nextDownload)
        nextDownload += 1
        let chunks = (0..<(1 + random(12))).map { _ in pool[random(pool.count)] }
        let hints = peers.filter { _ in random(3) == 0 }
        let policy: DownloadPolicy = random(2) == 0 ? .eagerPin : .onRead
        let delay = random(3) == 0 ? UInt64(random(10_000)) : 0
        do {
            let actions = try machine.start(id, addresses: chunks, policy: policy, hints: hints, initialDelayMs: delay,
                                            now: now, isStored: { stored.contains($0) })
            wanted[id] = Set(chunks)
            apply(actions)
        } catch {
            // Over a budget: refused, nothing changed.
            machine.checkInvariants()
        }
    }

    mutating func apply(_ actions: [DownloadAction]) {
        machine.checkInvariants()
        machine.checkKeepsPeersBusy()
        log += actions
        for action in actions {
            switch action {
            case .request(let r):
                #expect(connected.contains(r.peer), "seed \(seed): \(r) to a peer that is not connected")
                if silent.contains(r.peer) {
                    if random(10) == 0 { schedule(.answer(r), after: 15_000) }  // far too late
                } else {
                    schedule(.answer(r), after: 1 + UInt64(random(400)))
                }
            case .askPresence(let q):
                #expect(connected.contains(q.peer), "seed \(seed): \(q) to a peer that is not connected")
                #expect((1...machine.limits.presenceBatchMax).contains(q.addresses.count), "seed \(seed): \(q)")
                if silent.contains(q.peer) {
                    if random(10) == 0 { schedule(.presenceAnswer(q), after: 15_000) }  // far too late
                } else {
                    schedule(.presenceAnswer(q), after: 1 + UInt64(random(400)))
                }
            case .dial(let p):
                #expect(!connected.contains(p), "seed \(seed): dialling \(p), which is connected")
                if !unreachable.contains(p) || random(2) == 0 { schedule(.dialResult(p), after: 1 + UInt64(random(3_000))) }
            case .storeChunk(let address):
                schedule(.commit(address), after: UInt64(random(30)))
            case .finished(let id, let outcome):
                #expect(outcomes[id] == nil, "seed \(seed): \(id) ended twice")
                outcomes[id] = outcome
                switch outcome {
                case .completed:
                    #expect(wanted[id]!.isSubset(of: stored), "seed \(seed): \(id) completed with chunks missing")
                case .failed(let missing, let count):
                    #expect(count >= 1 && missing.count == min(count, machine.limits.missingReportedMax), "seed \(seed): \(outcome)")
                    for m in missing {
                        #expect(wanted[id]!.contains(m.address) && !stored.contains(m.address),
                                "seed \(seed): \(id) names \(m.address) missing (\(m.reason))")
                    }
                case .cancelled:
                    break
                }
            default:
                break
            }
        }
        // Every entry saved names downloads that were live during the event.
        for case .saveFetch(let address, let entry) in actions {
            #expect(!entry.groups.isEmpty && entry.groups.allSatisfy { machine.progress(of: $0) != nil || outcomes[$0] != nil },
                    "seed \(seed): \(address) saved for \(entry.groups)")
        }
    }
}
