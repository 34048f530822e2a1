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
    var queue = EventQueue<Event>()
    /// Run-time choices (losses, lies, slow factors, commit delays); setup has its own generator.
    var random: SplitMix64
    let overlays: [OverlayAddress]
    var indexOf: [OverlayAddress: Int] = [:]
    public let kinds: [FetchSimulationConfig.PeerKind]
    var retrieval: [Retrieval]
    var stores: [Set<ChunkAddress>]
    /// Whether the node is on the network (vanishing nodes leave, some come back).
    var present: [Bool]
    let chunks: [Chunk]
    var links: [FetchLink] = []
    var linkIndex: [Int: Int] = [:]
    var adjacency: [[Int]]
    var downloaders: [Downloader] = []
    var downloaderAt: [Int: Int] = [:]
    var records: [RetrievalRecord] = []
    var recordOfCaller: [UInt64: Int] = [:]
    var nextCaller: UInt64 = 0
    /// Per node and address being fetched: the paths of the requests waiting on the fetch.
    var paths: [[ChunkAddress: [WaiterPath]]]
    var retrievalTickAt: [UInt64?]
    var ledger = FetchLedger()
    var counters = FetchCounters()
    /// Hops from the nearest origin of requests answered with the chunk from a store.
    var hitHops: [Int] = []
    var lastReport: FetchSimulationReport?

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
        /// The downloader's presence query and its answer (a bit per address).
        case presenceAsk(id: UInt64, addresses: [ChunkAddress])
        case presenceReply(id: UInt64, bitvector: [UInt8])
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

    func handle(_ event: Event) {
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

    func link(_ a: Int, _ b: Int) -> Int? { linkIndex[min(a, b) * config.nodes + max(a, b)] }

    /// Sends over the link between `from` and `to`: false when there is none up. A lossy end
    /// may lose it; a slow end makes it slow; a link delivers in order each way.
    @discardableResult
    func send(_ wire: Wire, from: Int, to: Int) -> Bool {
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

    func received(_ wire: Wire, at n: Int, from p: Int) {
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
        case .presenceAsk(let id, let addresses):
            // A liar claims every chunk; an honest node says what its store holds.
            let present = addresses.map { kinds[n] == .lying || stores[n].contains($0) }
            send(.presenceReply(id: id, bitvector: Presence(ruid: 0, present: present).bitvector), from: n, to: p)
        case .presenceReply(let id, let bitvector):
            presenceAnswered(id, bitvector: bitvector, at: n, from: p)
        }
    }

    /// What node `n` answers from its store when asked for `address`: the chunk, nil (not
    /// found), or — a liar — a wrong chunk or a false "not found".
    func answer(_ address: ChunkAddress, at n: Int) -> Chunk? {
        let holds = stores[n].contains(address)
        if kinds[n] == .lying {
            counters.lies += 1
            if holds && Self.chance(config.lieNotFoundRate, &random) { return nil }
            return wrongChunk(address)
        }
        guard holds, let c = chunkIndex(address) else { return nil }
        return chunks[c]
    }

    func wrongChunk(_ address: ChunkAddress) -> Chunk {
        let c = Int(random.next() % UInt64(chunks.count))
        return chunks[chunks[c].address == address ? (c + 1) % chunks.count : c]
    }

    var chunkIndexCache: [ChunkAddress: Int]?

    func chunkIndex(_ address: ChunkAddress) -> Int? {
        if chunkIndexCache == nil {
            var index: [ChunkAddress: Int] = [:]
            for (i, c) in chunks.enumerated() { index[c.address] = i }
            chunkIndexCache = index
        }
        return chunkIndexCache![address]
    }

    func linkDown(_ l: Int) {
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

    func linkUp(_ l: Int) {
        guard !links[l].up else { return }
        links[l].up = true
        for (me, peer) in [(links[l].a, links[l].b), (links[l].b, links[l].a)] {
            retrieval[me].peerConnected(overlays[peer])
            if config.checkInvariants { retrieval[me].checkInvariants() }
            if let d = downloaderAt[me] { performDownload(downloaders[d].machine.peerConnected(overlays[peer], now: now), downloader: d) }
        }
    }
}
