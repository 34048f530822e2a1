import ShoalCore

/// A deterministic simulation of retrieval and downloads over hundreds of nodes. Every node
/// runs the `Retrieval` machine the real node runs; a few also run a `DownloadMachine`. The
/// shells here do what `RetrievalService` and `DownloadService` do, over a simulated network
/// of honest, slow, lossy, lying and vanishing peers (`FetchSimulationConfig.PeerKind`) with
/// a virtual millisecond clock. A `FetchLedger` records every request put on the wire and what
/// ended it, and checks (a)–(e) of Docs/Simulation-Fetch.md as the run goes.
///
/// Everything random comes from the seed; nothing is decided by the iteration order of a
/// `Set` or `Dictionary`; so a seed replays a run exactly. No I/O, no clock, no threads.
public final class FetchSimulator {
    public let config: FetchSimulationConfig
    private(set) var now: UInt64 = 0
    private var queue = EventQueue<Event>()
    /// Run-time choices (losses, lies, slow factors, commit delays); setup has its own generator.
    private var random: SplitMix64
    let overlays: [OverlayAddress]
    private var indexOf: [OverlayAddress: Int] = [:]
    public let kinds: [FetchSimulationConfig.PeerKind]
    private var retrieval: [Retrieval]
    private var stores: [Set<ChunkAddress>]
    /// Whether the node is on the network (vanishing nodes leave, some come back).
    private var present: [Bool]
    let chunks: [Chunk]
    private var links: [FetchLink] = []
    private var linkIndex: [Int: Int] = [:]
    private var adjacency: [[Int]]
    private var downloaders: [Downloader] = []
    private var downloaderAt: [Int: Int] = [:]
    private var records: [RetrievalRecord] = []
    private var recordOfCaller: [UInt64: Int] = [:]
    private var nextCaller: UInt64 = 0
    /// Per node and address being fetched: the paths of the requests waiting on the fetch.
    private var paths: [[ChunkAddress: [WaiterPath]]]
    private var retrievalTickAt: [UInt64?]
    var ledger = FetchLedger()
    var counters = FetchCounters()
    /// Hops from the nearest origin of requests answered with the chunk from a store.
    private var hitHops: [Int] = []
    private var lastReport: FetchSimulationReport?

    enum Event {
        case retrieve(record: Int)
        case message(link: Int, generation: Int, to: Int, Wire)
        case retrievalTick(Int)
        case downloadStart(Int)
        case downloadTick(Int)
        case dialDone(downloader: Int, peer: Int)
        case commit(downloader: Int, address: ChunkAddress)
        case vanish(Int)
        case reappear(Int)
        case dropLink(Int)
    }

    /// What goes over a link. Retrieval requests carry, besides the hops left that the real
    /// message carries, the path they came by (for check (d); the real node cannot know it).
    enum Wire {
        case ask(ruid: UInt32, address: ChunkAddress, hops: UInt8, visited: [Int], hopsFromOrigin: Int, climbed: Bool)
        case reply(ruid: UInt32, chunk: Chunk?)
        /// The downloader's request (hops 0 on the wire: answered from the store or refused).
        case downloadAsk(id: UInt64, address: ChunkAddress)
        case downloadReply(id: UInt64, address: ChunkAddress, chunk: Chunk?)
    }

    public init(_ config: FetchSimulationConfig) {
        if let problem = config.problem { preconditionFailure("fetch simulation: \(problem)") }
        self.config = config
        var setup = SplitMix64(seed: config.seed)
        random = SplitMix64(seed: setup.next())
        let n = config.nodes
        let overlays = (0..<n).map { _ in OverlayAddress(bytes: setup.bytes(32))! }
        var indexOf: [OverlayAddress: Int] = [:]
        for (i, o) in overlays.enumerated() { indexOf[o] = i }

        // Kinds: downloaders first (honest), then each faulty kind's share, from one shuffle.
        var order = Array(0..<n)
        Self.shuffle(&order, &setup)
        var kinds = Array(repeating: FetchSimulationConfig.PeerKind.honest, count: n)
        var next = config.downloaders
        for (kind, share) in [(FetchSimulationConfig.PeerKind.slow, config.slowFraction), (.lossy, config.lossyFraction),
                              (.lying, config.lyingFraction), (.vanishing, config.vanishingFraction)] {
            let count = min(n - next, Int((Double(n) * share).rounded()))
            for i in next..<(next + count) { kinds[order[i]] = kind }
            next += count
        }

        // Chunks, each held by the nodes closest to it.
        var stores = Array(repeating: Set<ChunkAddress>(), count: n)
        var made: [Chunk] = []
        var holders: [[Int]] = []
        for _ in 0..<config.chunks {
            let chunk = try! Chunk(payload: setup.bytes(32))
            made.append(chunk)
            let held = Self.closest(config.replication, to: chunk.address, among: overlays)
            holders.append(held)
            for h in held { stores[h].insert(chunk.address) }
        }

        // Links: per node and bin up to `peersPerBin` (in a random order), and its neighbourhood.
        var pairs: [Int] = []
        for i in 0..<n {
            var others = Array(0..<n).filter { $0 != i }
            Self.shuffle(&others, &setup)
            var perBin = [Int](repeating: 0, count: Proximity.binCount)
            for j in others {
                let bin = Proximity.bin(of: overlays[j], relativeTo: overlays[i])
                if perBin[bin] < config.peersPerBin {
                    perBin[bin] += 1
                    pairs.append(min(i, j) * n + max(i, j))
                }
            }
            for j in Self.closest(config.neighbourhood + 1, to: overlays[i], among: overlays) where j != i {
                pairs.append(min(i, j) * n + max(i, j))
            }
        }
        pairs.sort()
        var links: [FetchLink] = []
        var linkIndex: [Int: Int] = [:]
        var adjacency = Array(repeating: [Int](), count: n)
        var retrieval = overlays.map { Retrieval(base: $0, limits: config.retrieval) }
        var last = -1
        for pair in pairs where pair != last {
            last = pair
            let (a, b) = (pair / n, pair % n)
            linkIndex[pair] = links.count
            adjacency[a].append(links.count)
            adjacency[b].append(links.count)
            links.append(FetchLink(a: a, b: b, latencyMs: Self.draw(config.latencyMs, &setup)))
            retrieval[a].peerConnected(overlays[b])
            retrieval[b].peerConnected(overlays[a])
        }

        // Vanishing nodes: when they leave, whether and when they come back.
        var events: [(Event, UInt64)] = []
        for i in 0..<n where kinds[i] == .vanishing {
            let at = Self.draw(config.vanishMs, &setup)
            events.append((.vanish(i), at))
            if Self.chance(config.reconnectFraction, &setup) {
                events.append((.reappear(i), at + Self.draw(config.reconnectAfterMs, &setup)))
            }
        }

        // Retrievals: random (node, chunk) at random times; some in bursts at one node.
        var records: [RetrievalRecord] = []
        while records.count < config.retrievals {
            let origin = Int(setup.next() % UInt64(n))
            let chunk = Int(setup.next() % UInt64(made.count))
            let at = Self.draw(config.retrievalWindowMs, &setup)
            let callers = Self.chance(config.concurrentShare, &setup) ? 2 + Int(setup.next() % 3) : 1
            for c in 0..<min(callers, config.retrievals - records.count) {
                let issued = at + (c == 0 ? 0 : setup.next() % 4)
                records.append(RetrievalRecord(origin: origin, chunk: chunk, issuedMs: issued, concurrent: callers > 1))
                events.append((.retrieve(record: records.count - 1), issued))
            }
        }

        // Downloads: chunks the node lacks, all held by its hinted peers.
        var downloaders: [Downloader] = []
        var downloaderAt: [Int: Int] = [:]
        for i in 0..<config.downloaders {
            let node = order[i]
            var candidates = Array(0..<n).filter { $0 != node }
            Self.shuffle(&candidates, &setup)
            let hints = Array(candidates.prefix(config.hintsPerDownload)).sorted()
            var wanted = (0..<made.count).filter { c in
                !stores[node].contains(made[c].address) && holders[c].contains { hints.contains($0) }
            }
            Self.shuffle(&wanted, &setup)
            let chosen = Array(wanted.prefix(config.chunksPerDownload))
            let addresses = chosen.map { made[$0].address }
            let honestlyHinted = chosen.filter { c in holders[c].contains { hints.contains($0) && kinds[$0] == .honest } }.map { made[$0].address }
            var machine = DownloadMachine(limits: config.download, seed: setup.next())
            for l in adjacency[node] { _ = machine.peerConnected(overlays[links[l].other(node)], now: 0) }
            let id = DownloadID(Chunk.address(span: UInt64(i), payload: overlays[node].bytes))
            let startMs = Self.draw(config.retrievalWindowMs, &setup)
            var downloader = Downloader(node: node, machine: machine, id: id, addresses: addresses, hints: hints, startMs: startMs)
            downloader.honestlyHinted = Set(honestlyHinted)
            downloaders.append(downloader)
            downloaderAt[node] = i
            events.append((.downloadStart(i), startMs))
        }

        self.overlays = overlays
        self.indexOf = indexOf
        self.kinds = kinds
        self.retrieval = retrieval
        self.stores = stores
        present = Array(repeating: true, count: n)
        chunks = made
        self.links = links
        self.linkIndex = linkIndex
        self.adjacency = adjacency
        self.downloaders = downloaders
        self.downloaderAt = downloaderAt
        self.records = records
        paths = Array(repeating: [:], count: n)
        retrievalTickAt = Array(repeating: nil, count: n)
        for (event, at) in events { queue.push(event, at: at) }
    }

    // MARK: Setup helpers

    /// The `count` addresses of `among` closest to `target` (XOR), by index, closest first.
    static func closest(_ count: Int, to target: Address32, among: [Address32]) -> [Int] {
        var best: [(distance: Address32, index: Int)] = []
        for (i, a) in among.enumerated() {
            let d = Retrieval.distance(a, target)
            if best.count == count, let worst = best.last, !(d < worst.distance) { continue }
            let at = best.partitionPoint { d < $0.distance }
            best.insert((d, i), at: at)
            if best.count > count { best.removeLast() }
        }
        return best.map(\.index)
    }

    static func shuffle(_ array: inout [Int], _ g: inout SplitMix64) {
        guard array.count > 1 else { return }
        for i in stride(from: array.count - 1, to: 0, by: -1) { array.swapAt(i, Int(g.next() % UInt64(i + 1))) }
    }

    static func draw(_ range: ClosedRange<UInt64>, _ g: inout SplitMix64) -> UInt64 {
        range.lowerBound + g.next() % (range.upperBound - range.lowerBound + 1)
    }

    static func chance(_ p: Double, _ g: inout SplitMix64) -> Bool {
        Double(g.next() >> 11) / Double(UInt64(1) << 53) < p
    }

    // MARK: Running

    /// Runs until nothing is left to happen or `stopMs`; then checks what never ended.
    public func run() -> FetchSimulationReport {
        if let lastReport { return lastReport }
        let stop = config.stopMs
        while let (time, event) = queue.pop() {
            if time > stop { break }
            now = time
            counters.events += 1
            handle(event)
        }
        for record in records where record.outcome == .pending {
            ledger.retrievalNeverEnded(origin: record.origin, address: chunks[record.chunk].address, issuedMs: record.issuedMs)
        }
        for d in downloaders {
            // `now`: when the run stopped (at `stop`, or earlier when nothing was left to happen).
            ledger.downloadEnded(node: d.node, startedMs: d.startMs, endedMs: d.endedMs, boundMs: config.endBoundMs, stopMs: now)
        }
        let report = makeReport()
        lastReport = report
        return report
    }

    private func handle(_ event: Event) {
        switch event {
        case .retrieve(let r): retrieve(r)
        case .message(let l, let generation, let to, let wire):
            guard links[l].up && links[l].generation == generation else {
                counters.messagesLost += 1
                return
            }
            received(wire, at: to, from: links[l].other(to))
        case .retrievalTick(let n):
            guard retrievalTickAt[n] == now else { return }
            retrievalTickAt[n] = nil
            performRetrieval(retrieval[n].tick(now: now), at: n)
        case .downloadStart(let d): startDownload(d)
        case .downloadTick(let d):
            guard downloaders[d].tickAt == now else { return }
            downloaders[d].tickAt = nil
            performDownload(downloaders[d].machine.tick(now: now), downloader: d)
        case .dialDone(let d, let peer): dialDone(d, peer)
        case .commit(let d, let address): commit(d, address)
        case .vanish(let n):
            counters.vanished += 1
            present[n] = false
            for l in adjacency[n] { linkDown(l) }
        case .reappear(let n):
            counters.reappeared += 1
            present[n] = true
            for l in adjacency[n] where present[links[l].other(n)] && !links[l].dropped { linkUp(l) }
        case .dropLink(let l):
            if links[l].up { counters.linksDroppedForFaults += 1 }
            links[l].dropped = true
            linkDown(l)
        }
    }

    // MARK: The network

    private func link(_ a: Int, _ b: Int) -> Int? { linkIndex[min(a, b) * config.nodes + max(a, b)] }

    /// Sends over the link between `from` and `to`: false when there is none up. A lossy end
    /// may lose it; a slow end makes it slow; a link delivers in order each way.
    @discardableResult
    private func send(_ wire: Wire, from: Int, to: Int) -> Bool {
        guard let l = link(from, to), links[l].up else { return false }
        counters.messages += 1
        if (kinds[from] == .lossy || kinds[to] == .lossy) && Self.chance(config.lossRate, &random) {
            counters.messagesLost += 1
            return true
        }
        var delay = links[l].latencyMs
        if kinds[from] == .slow || kinds[to] == .slow { delay *= Self.draw(config.slowFactor, &random) }
        let k = from == links[l].a ? 0 : 1
        let arrival = max(now + delay, links[l].lastArrival[k])
        links[l].lastArrival[k] = arrival
        queue.push(.message(link: l, generation: links[l].generation, to: to, wire), at: arrival)
        return true
    }

    private func received(_ wire: Wire, at n: Int, from p: Int) {
        switch wire {
        case .ask(let ruid, let address, let hops, let visited, let hopsFromOrigin, let climbed):
            peerAsked(n, by: p, ruid: ruid, address: address, hops: hops, visited: visited, hopsFromOrigin: hopsFromOrigin, climbed: climbed)
        case .reply(let ruid, let chunk):
            ledger.retrievalReplied(node: n, ruid: ruid, peer: p)
            if let chunk {
                performRetrieval(retrieval[n].delivered(chunk, from: overlays[p], ruid: ruid, now: now), at: n)
            } else {
                performRetrieval(retrieval[n].refused(by: overlays[p], ruid: ruid, now: now), at: n)
            }
        case .downloadAsk(let id, let address):
            send(.downloadReply(id: id, address: address, chunk: answer(address, at: n)), from: n, to: p)
        case .downloadReply(let id, let address, let chunk):
            downloadAnswered(id, address: address, chunk: chunk, at: n, from: p)
        }
    }

    /// What node `n` answers from its store when asked for `address`: the chunk, nil (not
    /// found), or — a liar — a wrong chunk or a false "not found".
    private func answer(_ address: ChunkAddress, at n: Int) -> Chunk? {
        let holds = stores[n].contains(address)
        if kinds[n] == .lying {
            counters.lies += 1
            if holds && Self.chance(config.lieNotFoundRate, &random) { return nil }
            return wrongChunk(address)
        }
        guard holds, let c = chunkIndex(address) else { return nil }
        return chunks[c]
    }

    private func wrongChunk(_ address: ChunkAddress) -> Chunk {
        let c = Int(random.next() % UInt64(chunks.count))
        return chunks[chunks[c].address == address ? (c + 1) % chunks.count : c]
    }

    private var chunkIndexCache: [ChunkAddress: Int]?

    private func chunkIndex(_ address: ChunkAddress) -> Int? {
        if chunkIndexCache == nil {
            var index: [ChunkAddress: Int] = [:]
            for (i, c) in chunks.enumerated() { index[c.address] = i }
            chunkIndexCache = index
        }
        return chunkIndexCache![address]
    }

    private func linkDown(_ l: Int) {
        guard links[l].up else { return }
        links[l].up = false
        links[l].generation += 1
        counters.disconnects += 1
        for (me, peer) in [(links[l].a, links[l].b), (links[l].b, links[l].a)] {
            ledger.retrievalPeerGone(node: me, peer: peer)
            let gone = overlays[peer]
            for address in paths[me].keys.sorted() {
                paths[me][address]!.removeAll { if case .peer(let q, _) = $0.waiter { return q == gone } else { return false } }
            }
            performRetrieval(retrieval[me].peerDisconnected(gone, now: now), at: me)
            for address in ledger.retrievalOpenAddresses(node: me) where !retrieval[me].isFetching(address) {
                ledger.retrievalFetchDropped(node: me, address: address)
            }
            if let d = downloaderAt[me] {
                ledger.downloadPeerGone(node: me, peer: peer)
                downloaders[d].requests = downloaders[d].requests.filter { $0.value.peer != gone }
                performDownload(downloaders[d].machine.peerDisconnected(gone, now: now), downloader: d)
            }
        }
    }

    private func linkUp(_ l: Int) {
        guard !links[l].up else { return }
        links[l].up = true
        for (me, peer) in [(links[l].a, links[l].b), (links[l].b, links[l].a)] {
            retrieval[me].peerConnected(overlays[peer])
            if config.checkInvariants { retrieval[me].checkInvariants() }
            if let d = downloaderAt[me] { performDownload(downloaders[d].machine.peerConnected(overlays[peer], now: now), downloader: d) }
        }
    }

    // MARK: Retrieval (as RetrievalService does)

    /// A caller on the origin wants the chunk: from its store, or through its machine.
    private func retrieve(_ r: Int) {
        let origin = records[r].origin, address = chunks[records[r].chunk].address
        if stores[origin].contains(address) {
            records[r].outcome = .local
            records[r].endedMs = now
            return
        }
        let way = self.route(from: origin, to: address)
        records[r].retrievable = way.reaches
        records[r].route = way.path
        nextCaller += 1
        recordOfCaller[nextCaller] = r
        waitOn(address, at: origin, WaiterPath(waiter: .local(nextCaller), visited: [], hops: 0, climbed: false))
        performRetrieval(retrieval[origin].request(address, for: .local(nextCaller), now: now), at: origin)
    }

    /// Notes a waiter's path before its request goes to the machine (which may ask at once).
    private func waitOn(_ address: ChunkAddress, at n: Int, _ path: WaiterPath) {
        if !retrieval[n].isFetching(address) {
            paths[n][address] = []
            ledger.retrievalFetchStarted(node: n, address: address)
        }
        paths[n][address, default: []].append(path)
    }

    /// A peer's request: answered from the store (a session does that before the machine sees
    /// it), or taken by the machine.
    private func peerAsked(_ n: Int, by p: Int, ruid: UInt32, address: ChunkAddress, hops: UInt8, visited: [Int], hopsFromOrigin: Int,
                           climbed: Bool) {
        counters.asksReceived += 1
        if kinds[n] == .lying {
            send(.reply(ruid: ruid, chunk: answer(address, at: n)), from: n, to: p)
            return
        }
        if stores[n].contains(address) {
            if config.breakage == .holdersRefuseRetrieval {
                send(.reply(ruid: ruid, chunk: nil), from: n, to: p)
                return
            }
            hitHops.append(hopsFromOrigin)
            send(.reply(ruid: ruid, chunk: answer(address, at: n)), from: n, to: p)
            return
        }
        let waiter = Retrieval.Waiter.peer(overlays[p], ruid: ruid)
        waitOn(address, at: n, WaiterPath(waiter: waiter, visited: visited, hops: hopsFromOrigin, climbed: climbed))
        let actions = retrieval[n].request(address, for: waiter, hops: hops, now: now)
        // Refused at once (no hop left, a loop, overloaded, nobody to ask): it never waited.
        let refusedAtOnce = actions.contains { if case .refuse(let q, let r, _) = $0 { return q == overlays[p] && r == ruid } else { return false } }
        if refusedAtOnce { paths[n][address]?.removeAll { $0.waiter == waiter } }
        ledger.retrievalPeerRequestOpened(node: n, peer: p, limits: retrieval[n].limits, refusedAtOnce: refusedAtOnce, now: now)
        performRetrieval(actions, at: n)
    }

    private func performRetrieval(_ actions: [Retrieval.Action], at n: Int) {
        var pending = actions[...]
        while let action = pending.popFirst() {
            switch action {
            case .ask(let peer, let ruid, let address, let hops):
                let p = indexOf[peer]!
                let waiting = paths[n][address] ?? []
                var visited = [n]
                var nearest = Int.max
                var local = false
                var climbed = false
                var servesPeer = false
                for w in waiting {
                    visited += w.visited
                    nearest = min(nearest, w.hops)
                    climbed = climbed || w.climbed
                    if case .local = w.waiter { local = true } else { servesPeer = true }
                }
                // A peer's request sent farther from the address: only a widened fetch does that.
                if servesPeer && !(Retrieval.distance(peer, address) < Retrieval.distance(overlays[n], address)) { climbed = true }
                visited = Array(Set(visited)).sorted()
                let hopsFromOrigin = (nearest == Int.max ? 0 : nearest) + 1
                let limits = retrieval[n].limits
                ledger.retrievalForwarded(from: n, to: p, address: address, visited: visited, hopsFromOrigin: hopsFromOrigin,
                                          wireHops: hops, hopsMax: limits.hopsMax, climbed: climbed, now: now)
                ledger.retrievalAsked(node: n, peer: p, ruid: ruid, address: address, deadline: now + limits.attemptTimeoutMs(hops: hops),
                                      local: local, limits: limits, now: now)
                counters.asks += 1
                let wire = Wire.ask(ruid: ruid, address: address, hops: hops, visited: visited, hopsFromOrigin: hopsFromOrigin,
                                    climbed: climbed)
                if !send(wire, from: n, to: p) {
                    // No connection (as `RetrievalService`): as good as a refusal.
                    ledger.retrievalReplied(node: n, ruid: ruid, peer: p)
                    pending += retrieval[n].refused(by: peer, ruid: ruid, now: now)
                }
            case .answer(let peer, let ruid, let chunk):
                let p = indexOf[peer]!
                ledger.retrievalPeerRequestClosed(node: n, peer: p)
                send(.reply(ruid: ruid, chunk: chunk), from: n, to: p)
            case .refuse(let peer, let ruid, _):
                let p = indexOf[peer]!
                ledger.retrievalPeerRequestClosed(node: n, peer: p)
                send(.reply(ruid: ruid, chunk: nil), from: n, to: p)
            case .resolve(let id, let result):
                guard let r = recordOfCaller.removeValue(forKey: id) else { preconditionFailure("caller \(id) resolved twice") }
                resolved(r, result)
            case .keep(let chunk):
                counters.kept += stores[n].insert(chunk.address).inserted ? 1 : 0
                if let d = downloaderAt[n], downloaders[d].machine.fetchEntry(chunk.address) != nil {
                    performDownload(downloaders[d].machine.stored(chunk.address, now: now), downloader: d)
                }
            case .fault(let peer, _):
                counters.retrievalFaults += 1
                if config.dropOnFault, let l = link(n, indexOf[peer]!) { queue.push(.dropLink(l), at: now) }
            }
        }
        if config.checkInvariants { retrieval[n].checkInvariants() }
        if retrieval[n].openFetches > retrieval[n].limits.fetchesMax {
            ledger.violations.budgets.record("at \(now) ms node \(n) had \(retrieval[n].openFetches) fetches open, at most \(retrieval[n].limits.fetchesMax)")
        }
        scheduleRetrievalTick(n)
    }

    private func resolved(_ r: Int, _ result: Result<Chunk, RetrievalFailure>) {
        records[r].endedMs = now
        switch result {
        case .success: records[r].outcome = .retrieved
        case .failure(let failure): records[r].outcome = .failed(failure)
        }
        let address = chunks[records[r].chunk].address
        ledger.retrievalEnded(origin: records[r].origin, address: address, result: result, retrievable: records[r].retrievable,
                              route: records[r].route, now: now)
    }

    private func scheduleRetrievalTick(_ n: Int) {
        guard let deadline = retrieval[n].nextDeadline else { return }
        let at = max(deadline, now)
        if let scheduled = retrievalTickAt[n], scheduled <= at && scheduled >= now { return }
        retrievalTickAt[n] = at
        queue.push(.retrievalTick(n), at: at)
    }

    /// The route a request takes if every peer on it is honest: the origin asks its connected
    /// peer closest to the address, each forwarder its closest connected peer closer than
    /// itself (not the one that asked), until a holder or `hopsMax + 1` hops. `reaches`: it
    /// ends at a holder and every node on it (origin included) is honest — the retrieval is
    /// then *retrievable* (check (a)).
    func route(from origin: Int, to address: ChunkAddress) -> (reaches: Bool, path: [Int]) {
        var path = [origin]
        guard kinds[origin] == .honest && present[origin] else { return (false, path) }
        var current = origin
        var previous: OverlayAddress?
        for hop in 0...Int(retrieval[origin].limits.hopsMax) {
            var best: OverlayAddress?
            let here = overlays[current]
            for peer in retrieval[current].peers where peer != previous {
                if previous != nil && !(Retrieval.distance(peer, address) < Retrieval.distance(here, address)) { continue }
                if best.map({ Retrieval.distance(peer, address) < Retrieval.distance($0, address) }) ?? true { best = peer }
            }
            guard let best, let next = indexOf[best] else { return (false, path) }
            path.append(next)
            guard kinds[next] == .honest && present[next] else { return (false, path) }
            if stores[next].contains(address) { return (true, path) }
            if hop == Int(retrieval[origin].limits.hopsMax) { break }
            previous = here
            current = next
        }
        return (false, path)
    }

    // MARK: Downloads (as DownloadService does)

    private func startDownload(_ d: Int) {
        let node = downloaders[d].node
        let store = stores[node]
        do {
            let actions = try downloaders[d].machine.start(downloaders[d].id, addresses: downloaders[d].addresses, policy: .eagerPin,
                                                           hints: downloaders[d].hints.map { overlays[$0] }, now: now) { store.contains($0) }
            performDownload(actions, downloader: d)
        } catch {
            preconditionFailure("node \(node)'s download was refused: \(error)")
        }
    }

    private func downloadAnswered(_ id: UInt64, address: ChunkAddress, chunk: Chunk?, at n: Int, from p: Int) {
        guard let d = downloaderAt[n], let request = downloaders[d].requests[id], request.peer == overlays[p] else {
            counters.lateDownloadAnswers += 1
            return
        }
        downloaders[d].requests[id] = nil
        ledger.downloadRequestEnded(node: n, id: id)
        let peer = overlays[p]
        guard let chunk else {
            performDownload(downloaders[d].machine.notFound(address, from: peer, now: now), downloader: d)
            return
        }
        guard chunk.address == address else {
            performDownload(downloaders[d].machine.wrongChunk(address, from: peer, got: chunk.address, now: now), downloader: d)
            return
        }
        downloaders[d].delivered[address] = chunk
        performDownload(downloaders[d].machine.delivered(address, from: peer, now: now), downloader: d)
        if downloaders[d].delivered[address] != nil && downloaders[d].machine.fetchEntry(address) == nil {
            downloaders[d].delivered[address] = nil
        }
    }

    private func performDownload(_ actions: [DownloadAction], downloader d: Int) {
        let node = downloaders[d].node
        var pending = actions[...]
        while let action = pending.popFirst() {
            switch action {
            case .request(let request):
                let p = indexOf[request.peer]!
                downloaders[d].requests[request.id] = request
                ledger.downloadRequestSent(node: node, id: request.id, address: request.address, peer: p, limits: config.download, now: now)
                counters.downloadRequests += 1
                if !send(.downloadAsk(id: request.id, address: request.address), from: node, to: p) {
                    downloaders[d].requests[request.id] = nil
                    ledger.downloadRequestEnded(node: node, id: request.id)
                    pending += downloaders[d].machine.requestFailed(request.address, peer: request.peer, now: now)
                }
            case .cancelRequest(let request):
                downloaders[d].requests[request.id] = nil
                ledger.downloadRequestEnded(node: node, id: request.id)
            case .dial(let peer):
                let p = indexOf[peer]!
                counters.dials += 1
                ledger.dialStarted(node: node, peer: p, limits: config.download, now: now)
                // TCP, TLS and the hello: about three one-way trips (slow peers slower).
                var trip = link(node, p).map { links[$0].latencyMs } ?? Self.draw(config.latencyMs, &random)
                if kinds[p] == .slow { trip *= config.slowFactor.lowerBound }
                queue.push(.dialDone(downloader: d, peer: p), at: now + 3 * trip)
            case .storeChunk(let address):
                if downloaders[d].delivered[address] != nil {
                    queue.push(.commit(downloader: d, address: address), at: now + Self.draw(config.commitDelayMs, &random))
                } else {
                    pending += downloaders[d].machine.storeFailed(address, now: now)
                }
            case .saveFetch, .removeFetch, .saveDownload, .removeDownload, .progress:
                break
            case .chunkFailed(_, let missing):
                counters.downloadChunkFailures[Self.reasonName(missing.reason), default: 0] += 1
            case .finished(_, let outcome):
                downloaders[d].endedMs = now
                downloaders[d].outcome = outcome
            case .fault(let peer, _):
                counters.downloadFaults += 1
                if config.dropOnFault, let l = link(node, indexOf[peer]!) { queue.push(.dropLink(l), at: now) }
            case .peerDropped:
                counters.downloadPeersDropped += 1
            }
        }
        if config.checkInvariants { downloaders[d].machine.checkInvariants() }
        scheduleDownloadTick(d)
    }

    static func failureName(_ failure: RetrievalFailure) -> String {
        switch failure {
        case .notFound(let asked): asked == 0 ? "no_peer" : "not_found"
        case .hopLimit: "hop_limit"
        case .overloaded: "overloaded"
        case .loop: "loop"
        case .cancelled: "cancelled"
        }
    }

    static func reasonName(_ reason: FetchFailure) -> String {
        switch reason {
        case .notFound: "not_found"
        case .attemptsExhausted: "attempts_exhausted"
        case .noProvider: "no_provider"
        case .overBudget: "over_budget"
        }
    }

    private func scheduleDownloadTick(_ d: Int) {
        guard let deadline = downloaders[d].machine.nextDeadline else { return }
        // A deadline already past comes back at the service's tick step.
        let at = deadline > now ? deadline : now + 100
        if let scheduled = downloaders[d].tickAt, scheduled <= at && scheduled >= now { return }
        downloaders[d].tickAt = at
        queue.push(.downloadTick(d), at: at)
    }

    private func dialDone(_ d: Int, _ p: Int) {
        let node = downloaders[d].node
        ledger.dialEnded(node: node, peer: p)
        let existing = link(node, p)
        guard present[node] && present[p] && !(existing.map { links[$0].dropped } ?? false) else {
            counters.dialsFailed += 1
            performDownload(downloaders[d].machine.dialFailed(overlays[p], now: now), downloader: d)
            return
        }
        if let existing, links[existing].up {
            // Connected meanwhile: the machine hears of it again (it ends its dial).
            performDownload(downloaders[d].machine.peerConnected(overlays[p], now: now), downloader: d)
            return
        }
        let l: Int
        if let existing {
            l = existing
        } else {
            l = links.count
            links.append(FetchLink(a: min(node, p), b: max(node, p), latencyMs: Self.draw(config.latencyMs, &random), up: false))
            linkIndex[min(node, p) * config.nodes + max(node, p)] = l
            adjacency[node].append(l)
            adjacency[p].append(l)
        }
        counters.dialled += 1
        linkUp(l)
    }

    private func commit(_ d: Int, _ address: ChunkAddress) {
        let node = downloaders[d].node
        guard downloaders[d].delivered.removeValue(forKey: address) != nil else { return }
        stores[node].insert(address)
        performDownload(downloaders[d].machine.stored(address, now: now), downloader: d)
    }

    // MARK: The report

    private func makeReport() -> FetchSimulationReport {
        var r = FetchSimulationReport(config: config, simMs: now, counters: counters, violations: ledger.violations)
        r.widenedLoops = ledger.widenedLoops
        for kind in FetchSimulationConfig.PeerKind.allCases { r.kinds.append((kind.description, kinds.filter { $0 == kind }.count)) }
        r.retrievals = records.count
        var failures: [String: Int] = [:]
        for record in records {
            switch record.outcome {
            case .local: r.local += 1
            case .retrieved: r.retrieved += 1
            case .failed(let why):
                r.failed += 1
                failures[Self.failureName(why), default: 0] += 1
            case .pending: r.pending += 1
            }
            if record.retrievable {
                r.retrievable += 1
                if record.outcome == .retrieved { r.retrievableRetrieved += 1 }
            }
            if record.concurrent { r.concurrent += 1 }
        }
        r.failureReasons = failures.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        let hops = hitHops.sorted()
        r.hopsP50 = hops.isEmpty ? 0 : hops[hops.count / 2]
        r.hopsMax = hops.last ?? 0
        r.downloads = downloaders.count
        for d in downloaders {
            switch d.outcome {
            case .completed?: r.downloadsCompleted += 1
            case .failed(_, let count)?:
                r.downloadsFailed += 1
                r.downloadChunksMissing += count
            case .cancelled?, nil: break
            }
            r.downloadChunks += d.addresses.count
            for address in d.addresses where !stores[d.node].contains(address) && d.honestlyHinted.contains(address) {
                r.downloadChunksMissingHonestHint += 1
            }
            if let ended = d.endedMs { r.downloadLongestMs = max(r.downloadLongestMs, ended - d.startMs) }
        }
        r.downloadRequestsPeak = ledger.downloadRequestsPeak
        r.downloadPerPeerPeak = ledger.downloadPerPeerPeak
        r.digest = digest()
        return r
    }

    /// SHA-256 (ShoalCore's chunk hash) over every retrieval's outcome and end time, every
    /// download's, and the counters that say how the run went. Hex.
    private func digest() -> String {
        var bytes: [UInt8] = []
        func put(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        for record in records {
            put(record.outcome.code)
            put(record.endedMs ?? .max)
        }
        for d in downloaders {
            put(d.endedMs ?? .max)
            put(UInt64(d.machine.counters.requests))
            put(UInt64(d.machine.counters.stored))
        }
        for v in [counters.events, UInt64(counters.messages), UInt64(counters.messagesLost), UInt64(counters.asks)] { put(v) }
        return Chunk.address(span: UInt64(bytes.count), payload: bytes).hex
    }
}


/// A link between two nodes; `a < b`. Down while either end has vanished; `dropped` for good
/// after a fault. Messages sent before it went down are lost (their generation is old).
struct FetchLink {
    let a: Int
    let b: Int
    let latencyMs: UInt64
    var up = true
    var dropped = false
    var generation = 0
    /// Per direction (from `a`, from `b`): when the last message arrives (order).
    var lastArrival: [UInt64] = [0, 0]

    func other(_ n: Int) -> Int { n == a ? b : a }
}

/// A request waiting on a node's fetch, and how it came: the nodes it passed and the hops from
/// its origin (a local caller: none).
struct WaiterPath {
    var waiter: Retrieval.Waiter
    var visited: [Int]
    var hops: Int
    /// A node on the way sent a peer's request farther from the address (a widened fetch).
    var climbed: Bool
}

struct RetrievalRecord {
    enum Outcome: Equatable {
        case pending
        /// The origin held the chunk already.
        case local
        case retrieved
        case failed(RetrievalFailure)

        var code: UInt64 {
            switch self {
            case .pending: 0
            case .local: 1
            case .retrieved: 2
            case .failed: 3
            }
        }
    }

    var origin: Int
    var chunk: Int
    var issuedMs: UInt64
    var concurrent: Bool
    var retrievable = false
    var route: [Int] = []
    var outcome = Outcome.pending
    var endedMs: UInt64?

    init(origin: Int, chunk: Int, issuedMs: UInt64, concurrent: Bool) {
        (self.origin, self.chunk, self.issuedMs, self.concurrent) = (origin, chunk, issuedMs, concurrent)
    }
}

/// One node's downloader: the machine and what its shell keeps (requests out by ID, chunks
/// delivered and waiting for their commit).
struct Downloader {
    let node: Int
    var machine: DownloadMachine
    let id: DownloadID
    let addresses: [ChunkAddress]
    let hints: [Int]
    let startMs: UInt64
    /// Its chunks an honest hinted peer held from the start.
    var honestlyHinted: Set<ChunkAddress> = []
    var requests: [UInt64: FetchRequest] = [:]
    var delivered: [ChunkAddress: Chunk] = [:]
    var tickAt: UInt64?
    var endedMs: UInt64?
    var outcome: DownloadOutcome?

    init(node: Int, machine: DownloadMachine, id: DownloadID, addresses: [ChunkAddress], hints: [Int], startMs: UInt64) {
        (self.node, self.machine, self.id, self.addresses, self.hints, self.startMs) = (node, machine, id, addresses, hints, startMs)
    }
}

/// What happened in a fetch run.
public struct FetchCounters: Sendable, Equatable {
    public var events: UInt64 = 0
    public var messages = 0, messagesLost = 0
    /// Retrieval requests sent, and received.
    public var asks = 0, asksReceived = 0
    /// Chunks forwarders kept (`keep`), new to their stores.
    public var kept = 0
    /// Answers a liar gave (asked by retrieval or a downloader).
    public var lies = 0
    public var retrievalFaults = 0, downloadFaults = 0
    public var linksDroppedForFaults = 0
    public var disconnects = 0
    public var vanished = 0, reappeared = 0
    public var downloadRequests = 0
    public var lateDownloadAnswers = 0
    public var dials = 0, dialsFailed = 0, dialled = 0
    public var downloadPeersDropped = 0
    /// Chunks downloads gave up on, by why.
    public var downloadChunkFailures: [String: Int] = [:]
}

/// The outcome of a fetch run.
public struct FetchSimulationReport: Sendable {
    public var config: FetchSimulationConfig
    public var simMs: UInt64
    public var counters: FetchCounters
    public var violations: FetchViolations
    /// Loops of the known issue (`FetchLedger.widenedLoops`): reported, not violations.
    public var widenedLoops = ViolationList()
    /// Nodes per kind, in `PeerKind` order.
    public var kinds: [(kind: String, nodes: Int)] = []
    /// Retrievals issued; the origin held it; retrieved over the network; failed; never ended.
    public var retrievals = 0, local = 0, retrieved = 0, failed = 0, pending = 0
    /// Retrievals that came with others at the same node for the same address.
    public var concurrent = 0
    /// Retrievable ones (check (a)), and those of them retrieved.
    public var retrievable = 0, retrievableRetrieved = 0
    /// Failed retrievals by why.
    public var failureReasons: [(reason: String, count: Int)] = []
    /// Hops from the nearest origin of the requests a store answered with the chunk.
    public var hopsP50 = 0, hopsMax = 0
    public var downloads = 0, downloadsCompleted = 0, downloadsFailed = 0
    public var downloadChunks = 0, downloadChunksMissing = 0
    /// Missing chunks that an honest hinted peer held from the start (it never vanished, lied or
    /// dropped messages).
    public var downloadChunksMissingHonestHint = 0
    public var downloadLongestMs: UInt64 = 0
    /// The most requests one downloader had out, in all and to one peer.
    public var downloadRequestsPeak = 0, downloadPerPeerPeak = 0
    public var digest = ""

    init(config: FetchSimulationConfig, simMs: UInt64, counters: FetchCounters, violations: FetchViolations) {
        (self.config, self.simMs, self.counters, self.violations) = (config, simMs, counters, violations)
    }
}
