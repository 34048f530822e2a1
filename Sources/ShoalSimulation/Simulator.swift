import ShoalCore

/// A deterministic simulation of many Shoal nodes. The same pure machines the real node runs
/// (`PeerSync` per connection end, `Topology` and `SubscriptionReconciler` per node) are driven
/// by a discrete-event loop over a virtual millisecond clock, over a simulated network
/// (per-link latency and bandwidth, connection resets, partitions) with nodes that crash
/// between store writes and restart. Everything random comes from the seed, and nothing is
/// decided by the iteration order of a `Set` or `Dictionary`, so a seed replays a run exactly.
///
/// No I/O, no clock, no threads. `run()` returns a `SimulationReport`.
public final class Simulator {
    public let config: SimulationConfig
    private(set) var now: UInt64 = 0
    private var queue = EventQueue<Event>()
    var nodes: [SimNode] = []
    private var nodeByOverlay: [OverlayAddress: Int] = [:]
    private var nodeByAddress: [String: Int] = [:]
    /// Every connection ever made, by id; open ones are also in `openConnections`.
    private var connections: [Connection] = []
    private var openConnections: [Int] = []
    private var openPosition: [Int: Int] = [:]
    /// Runtime decisions (hive answers, resets); setup draws from its own generator.
    private var random: SplitMix64
    let chunks: [Chunk]
    /// Per chunk: where it is uploaded, and whether that upload committed.
    private var uploadTarget: [Int]
    private(set) var uploaded: [Bool]
    /// Per partition: the nodes it cuts off.
    private var partitionMembers: [[Int]] = []
    var counters = SimulationCounters()
    /// Seals that covered a chunk the node did not hold when they were applied.
    var sealViolations: [String] = []
    private var finished = false
    private var lastReport: SimulationReport?

    enum Event {
        case start(Int)
        case supervise(node: Int, incarnation: Int)
        case dialDone(from: Int, to: Int, incarnation: Int)
        case message(connection: Int, toSide: Int, Message)
        case tick(connection: Int, side: Int)
        case commit(node: Int, incarnation: Int)
        case upload(Int)
        case reset
        case crash(Int)
        case restart(Int)
        case partitionStart(Int)
        case partitionEnd(Int)
        case check
    }

    public init(_ config: SimulationConfig) {
        precondition(config.nodes >= 1 && config.chunks >= 0, "a simulation needs nodes")
        self.config = config
        var setup = SplitMix64(seed: config.seed)
        random = SplitMix64(seed: setup.next())
        for i in 0..<config.nodes {
            let overlay = OverlayAddress(bytes: setup.bytes(32))!
            let address = "n\(i):1634"
            var node = SimNode(index: i, overlay: overlay, address: address,
                               store: MemoryStore(overlay: overlay, epoch: setup.next()),
                               topology: Topology(base: overlay, limits: config.topology))
            node.store.sealsIgnoreRequirements = config.breakage == .sealsIgnoreRequirements
            if i > 0 {
                var known = Set<Int>()
                for _ in 0..<min(config.bootstrapPeers, i) {
                    var pick = Int(setup.next() % UInt64(i))
                    while known.contains(pick) { pick = (pick + 1) % i }
                    known.insert(pick)
                }
                node.bootstrap = known.sorted()
            }
            nodes.append(node)
            nodeByOverlay[overlay] = i
            nodeByAddress[address] = i
        }
        var made: [Chunk] = []
        var targets: [Int] = []
        for _ in 0..<config.chunks {
            let payload = setup.bytes(config.payloadBytes)
            made.append(try! Chunk(span: UInt64(payload.count), payload: payload))
            targets.append(Int(setup.next() % UInt64(config.nodes)))
        }
        chunks = made
        uploadTarget = targets
        uploaded = Array(repeating: false, count: made.count)

        for i in 0..<config.nodes {
            queue.push(.start(i), at: UInt64(i) * config.startWindowMs / UInt64(max(1, config.nodes)))
        }
        let window = config.uploadWindowMs
        for c in 0..<made.count {
            queue.push(.upload(c), at: window.lowerBound + setup.next() % (window.upperBound - window.lowerBound + 1))
        }
        if config.resetsPerMinute > 0 { queue.push(.reset, at: config.startWindowMs + nextResetGap(&setup)) }
        for _ in 0..<config.crashes {
            let start = config.startWindowMs
            let t = start + setup.next() % max(1, config.faultsUntilMs - min(config.faultsUntilMs, start))
            queue.push(.crash(Int(setup.next() % UInt64(config.nodes))), at: t)
        }
        for (i, p) in config.partitions.enumerated() {
            let count = max(1, min(config.nodes - 1, Int(Double(config.nodes) * p.fraction)))
            var order = Array(0..<config.nodes)
            for j in 0..<count { order.swapAt(j, j + Int(setup.next() % UInt64(config.nodes - j))) }
            partitionMembers.append(order.prefix(count).sorted())
            queue.push(.partitionStart(i), at: p.startMs)
            queue.push(.partitionEnd(i), at: p.endMs)
        }
        queue.push(.check, at: config.quietFromMs + config.checkIntervalMs)
    }

    private func nextResetGap(_ g: inout SplitMix64) -> UInt64 {
        // Uniform on [0, 2 × mean]: the mean the rate asks for.
        let perMs = config.resetsPerMinute * Double(config.nodes) / 60_000
        let mean = 1 / perMs
        return UInt64(Double(g.next() % 1_000_000) / 1_000_000 * 2 * mean) + 1
    }

    // MARK: Running

    /// Runs until converged (checked once faults and uploads are over) or `maxSimSeconds`.
    public func run() -> SimulationReport {
        if let lastReport { return lastReport }
        let limit = config.maxSimSeconds * 1000
        var failures: [String] = []
        while !finished, let (time, event) = queue.pop() {
            if time > limit { break }
            now = time
            counters.events += 1
            handle(event)
            if case .check = event, !finished { failures = [] }
        }
        if !finished { failures = convergenceFailures(examplesMax: 8) }
        let report = SimulationReport(config: config, converged: finished, simMs: now, counters: counters,
                                      failures: finished ? [] : failures, digest: digest())
        lastReport = report
        return report
    }

    private func handle(_ event: Event) {
        switch event {
        case .start(let n): start(n)
        case .supervise(let n, let incarnation):
            guard nodes[n].alive && nodes[n].incarnation == incarnation else { return }
            supervise(n)
        case .dialDone(let from, let to, let incarnation): dialDone(from: from, to: to, incarnation: incarnation)
        case .message(let c, let k, let message):
            guard connections[c].open else { return }
            received(message, connection: c, side: k, node: connections[c].node(k))
        case .tick(let c, let k):
            guard connections[c].open, connections[c].sides[k].tickAt == now else { return }
            connections[c].sides[k].tickAt = nil
            let actions = connections[c].sides[k].sync.tick(now: now)
            perform(actions, connection: c, side: k)
        case .commit(let n, let incarnation):
            guard nodes[n].alive && nodes[n].incarnation == incarnation else { return }
            commit(n)
        case .upload(let c): upload(c)
        case .reset: reset()
        case .crash(let n): crash(n)
        case .restart(let n): restart(n)
        case .partitionStart(let i): partition(i, starts: true)
        case .partitionEnd(let i): partition(i, starts: false)
        case .check:
            if config.checkInvariants { for node in nodes { node.store.checkInvariants() } }
            if convergenceFailures(examplesMax: 1).isEmpty {
                finished = true
            } else {
                queue.push(.check, at: now + config.checkIntervalMs)
            }
        }
    }

    // MARK: Nodes

    private func start(_ n: Int) {
        nodes[n].alive = true
        nodes[n].depthChangedMs = now
        for b in nodes[n].bootstrap {
            nodes[n].topology.learned(nodes[b].overlay, addresses: [nodes[b].address], nowMs: now)
        }
        supervise(n)
    }

    /// What the supervisor does every interval (`Supervisor.review`): prune, dial what the
    /// table picks, reconcile; and the address book is persisted.
    private func supervise(_ n: Int) {
        for peer in nodes[n].topology.peersToPrune() {
            if let c = nodes[n].sessions[peer] { close(c, reason: .pruned) }
        }
        for peer in nodes[n].topology.nextDials(nowMs: now) {
            nodes[n].topology.dialStarted(peer.overlay)
            counters.dials += 1
            guard let target = nodeByAddress[peer.addresses[peer.failedDials % peer.addresses.count]] else {
                nodes[n].topology.dialFailed(peer.overlay, nowMs: now)
                continue
            }
            // TCP, TLS and the hello: about three one-way trips.
            queue.push(.dialDone(from: n, to: target, incarnation: nodes[n].incarnation), at: now + 3 * latency(n, target))
        }
        reconcile(n)
        if config.crashes > 0 { nodes[n].persistedBook = nodes[n].topology.knownPeers }
        queue.push(.supervise(node: n, incarnation: nodes[n].incarnation), at: now + config.superviseIntervalMs)
    }

    private func dialDone(from: Int, to: Int, incarnation: Int) {
        guard nodes[from].alive && nodes[from].incarnation == incarnation else { return }
        let target = nodes[to].overlay
        if nodes[from].sessions[target] != nil { return }  // it dialled us meanwhile
        // A node refuses a peer it banned or whose bin is full (`Node.serve`), and a
        // partition cuts the link.
        let banned = nodes[to].topology.peer(nodes[from].overlay)?.isBanned(nowMs: now) ?? false
        guard nodes[to].alive && nodes[from].partitionMask == nodes[to].partitionMask && from != to && !banned,
              nodes[to].topology.admits(nodes[from].overlay) else {
            counters.dialsFailed += 1
            nodes[from].topology.dialFailed(target, nowMs: now)
            return
        }
        connect(from, to)
    }

    /// A handshake completed: both ends get a session, learn the peer, ask it for peers, tell
    /// their neighbours about it, and reconcile their subscriptions.
    private func connect(_ a: Int, _ b: Int) {
        let id = connections.count
        let sides = [(a, b), (b, a)].map { (me, peer) in
            Side(sync: PeerSync(peer: nodes[peer].overlay, base: nodes[me].overlay, epoch: nodes[peer].store.epoch,
                                limits: config.sync, now: now))
        }
        connections.append(Connection(id: id, nodes: (a, b), latencyMs: latency(a, b), sides: sides))
        openPosition[id] = openConnections.count
        openConnections.append(id)
        counters.connections += 1
        for (k, (me, peer)) in [(a, b), (b, a)].enumerated() {
            nodes[me].addSession(nodes[peer].overlay, connection: id)
            nodes[me].topology.connected(nodes[peer].overlay, addresses: [nodes[peer].address], nowMs: now)
            reconcile(me)
            // Hive: ask the newcomer whom it knows, and tell our neighbours about it.
            transmit(.peersRequest(PeersRequest(limit: UInt16(ProtocolLimits.hivePeersMax))), connection: id, from: k)
            announce(peer, to: me)
        }
    }

    /// Tells `me`'s neighbours (other than `newPeer`) that `newPeer` connected.
    private func announce(_ newPeer: Int, to me: Int) {
        let depth = nodes[me].topology.depth
        let announcement = Message.peers(Peers(peers: [PeerAddress(overlay: nodes[newPeer].overlay, addresses: [nodes[newPeer].address])]))
        for (peer, c) in nodes[me].sessionOrder where peer != nodes[newPeer].overlay && nodes[me].topology.bin(of: peer) >= depth {
            transmit(announcement, connection: c, from: side(of: me, in: c))
        }
    }

    /// Topology → subscriptions: the reconciler's changes go to the sessions.
    private func reconcile(_ n: Int) {
        let reconciliation = nodes[n].reconciler.reconcile(topology: nodes[n].topology, radius: 0)
        if reconciliation.newDepth != nodes[n].depth {
            nodes[n].depth = reconciliation.newDepth
            nodes[n].depthChangedMs = now
            counters.depthChanges += 1
        }
        for change in reconciliation.changes {
            guard let c = nodes[n].sessions[change.peer] else { continue }
            let k = side(of: n, in: c)
            if !change.cancel.isEmpty {
                let actions = connections[c].sides[k].sync.cancel(change.cancel, now: now)
                perform(actions, connection: c, side: k)
            }
            if !change.subscribe.isEmpty, connections[c].open {
                let actions = connections[c].sides[k].sync.subscribe(change.subscribe, now: now)
                perform(actions, connection: c, side: k)
            }
        }
        checkNode(n)
    }

    private func checkNode(_ n: Int) {
        guard config.checkInvariants else { return }
        nodes[n].topology.checkInvariants()
        nodes[n].reconciler.checkInvariants()
    }

    // MARK: Faults

    enum CloseReason { case fault, closed, reset, pruned, partition, crash }

    /// The connection ends; each live end releases its claims, forgets the session and
    /// reconciles. `skipping` is a node that is gone (crashed): its end just vanishes.
    private func close(_ c: Int, reason: CloseReason, skipping gone: Int? = nil) {
        guard connections[c].open else { return }
        connections[c].open = false
        let position = openPosition.removeValue(forKey: c)!
        let last = openConnections.removeLast()
        if last != c {
            openConnections[position] = last
            openPosition[last] = position
        }
        switch reason {
        case .reset: counters.resets += 1
        case .pruned: counters.pruned += 1
        default: break
        }
        for k in 0..<2 {
            let me = connections[c].node(k), peer = connections[c].node(1 - k)
            let sync = connections[c].sides[k].sync
            counters.lateReplies += sync.counters.lateReplies
            counters.penalties += sync.counters.penalties
            guard me != gone else { continue }
            for case .release(let addresses) in connections[c].sides[k].sync.end() { release(addresses, at: me) }
            nodes[me].removeSession(nodes[peer].overlay)
            nodes[me].topology.disconnected(nodes[peer].overlay, nowMs: now)
            if let fault = connections[c].sides[k].sync.droppedFor {
                counters.record(fault: fault)
                // A dropped peer is banned (`SessionLimits.banMs`), as the real session records.
                nodes[me].topology.banned(nodes[peer].overlay, untilMs: now + 10 * 60_000)
            }
        }
        for k in 0..<2 where connections[c].node(k) != gone { reconcile(connections[c].node(k)) }
    }

    private func reset() {
        if !openConnections.isEmpty {
            let c = openConnections[Int(random.next() % UInt64(openConnections.count))]
            close(c, reason: .reset)
        }
        let next = now + nextResetGap(&random)
        if next < config.faultsUntilMs { queue.push(.reset, at: next) }
    }

    /// The node dies: writes not committed are lost, its sessions and claims vanish; its
    /// committed store, its epoch and its address book as last persisted survive.
    private func crash(_ n: Int) {
        guard nodes[n].alive else { return }
        counters.crashes += 1
        nodes[n].alive = false
        nodes[n].incarnation += 1
        counters.writesLost += nodes[n].pendingWrites.count
        nodes[n].pendingWrites = []
        nodes[n].commitScheduled = false
        for (_, c) in nodes[n].sessionOrder { close(c, reason: .crash, skipping: n) }
        nodes[n].sessions = [:]
        nodes[n].sessionOrder = []
        nodes[n].inFlight = []
        nodes[n].topology = Topology(base: nodes[n].overlay, limits: config.topology)
        nodes[n].reconciler = SubscriptionReconciler()
        nodes[n].depth = 0
        let delay = config.restartDelayMs
        queue.push(.restart(n), at: now + delay.lowerBound + random.next() % (delay.upperBound - delay.lowerBound + 1))
    }

    private func restart(_ n: Int) {
        nodes[n].topology.load(nodes[n].persistedBook.map {
            KnownPeer(restoring: $0.overlay, addresses: $0.addresses, lastSeenMs: $0.lastSeenMs, score: $0.score, banUntilMs: $0.banUntilMs)
        })
        start(n)
    }

    private func partition(_ i: Int, starts: Bool) {
        let bit = UInt64(1) << UInt64(i % 64)
        for n in partitionMembers[i] {
            if starts { nodes[n].partitionMask |= bit } else { nodes[n].partitionMask &= ~bit }
        }
        guard starts else { return }
        for c in openConnections.sorted() {
            let (a, b) = connections[c].nodes
            if nodes[a].partitionMask != nodes[b].partitionMask { close(c, reason: .partition) }
        }
    }

    // MARK: The network

    /// One-way latency of the link between `a` and `b`, fixed per pair by the seed.
    func latency(_ a: Int, _ b: Int) -> UInt64 {
        let (lo, hi) = (UInt64(min(a, b)), UInt64(max(a, b)))
        var g = SplitMix64(seed: config.seed ^ (lo &* 0x9E37_79B9_7F4A_7C15) ^ (hi &* 0xC2B2_AE3D_27D4_EB4F))
        let range = config.latencyMs
        return range.lowerBound + g.next() % (range.upperBound - range.lowerBound + 1)
    }

    func index(of overlay: OverlayAddress) -> Int? { nodeByOverlay[overlay] }

    private func side(of n: Int, in c: Int) -> Int { connections[c].nodes.0 == n ? 0 : 1 }

    /// Sends from end `k`: arrives after the link's latency (and its serialization time, with
    /// a bandwidth), never before an earlier message of the same direction.
    private func transmit(_ message: Message, connection c: Int, from k: Int) {
        guard connections[c].open else { return }
        counters.messages += 1
        var arrival = now + connections[c].latencyMs
        if let bandwidth = config.bandwidthBytesPerMs, bandwidth > 0 {
            let departs = max(now, connections[c].linkFreeAt[k])
            let free = departs + (message.wireBytes + bandwidth - 1) / bandwidth
            connections[c].linkFreeAt[k] = free
            arrival = free + connections[c].latencyMs
        }
        arrival = max(arrival, connections[c].lastArrival[k])
        connections[c].lastArrival[k] = arrival
        queue.push(.message(connection: c, toSide: 1 - k, message), at: arrival)
    }

    private func received(_ message: Message, connection c: Int, side k: Int, node me: Int) {
        let actions: [PeerSync.Action]
        switch message {
        case .offeredHashes:
            actions = connections[c].sides[k].sync.received(message, now: now) { address in
                if self.nodes[me].store.has(address) { return .stored }
                return self.nodes[me].inFlight.insert(address).inserted ? .claimed : .inFlightElsewhere
            }
        case .streamInfoResponse(let response):
            var all = connections[c].sides[k].sync.received(message, now: now)
            let peer = nodes[connections[c].node(1 - k)].overlay
            var known: [UInt8: (epoch: UInt64, set: IntervalSet)] = [:]
            for (bin, record) in nodes[me].store.intervals(of: peer) { known[bin] = (record.epoch, record.set) }
            all += connections[c].sides[k].sync.streamInfoReceived(response, known: known, now: now)
            actions = all
        default:
            actions = connections[c].sides[k].sync.received(message, now: now)
        }
        perform(actions, connection: c, side: k)
    }

    // MARK: Carrying out a session's actions (as PeerSession does)

    private func perform(_ actions: [PeerSync.Action], connection c: Int, side k: Int) {
        let me = connections[c].node(k)
        let peer = nodes[connections[c].node(1 - k)].overlay
        var pending = actions[...]
        var messages: [Message] = []
        var closing: CloseReason?
        while let action = pending.popFirst() {
            switch action {
            case .send(let out):
                messages += out
            case .answerStreamInfo(let bins):
                let store = nodes[me].store
                let wanted = bins.filter { Int($0) < Proximity.binCount }
                messages.append(.streamInfoResponse(StreamInfoResponse(
                    epoch: store.epoch, cursors: wanted.map { .init(bin: $0, cursor: store.cursor(bin: Int($0))) })))
            case .queryRange(let ruid, let bin, let from, let to, let limit):
                let entries = nodes[me].store.range(bin: Int(bin), from: from, to: to, limit: limit)
                pending += connections[c].sides[k].sync.rangeRead(ruid: ruid, entries: entries,
                                                                  cursor: nodes[me].store.cursor(bin: Int(bin)), now: now)
            case .deliver(let ruid, let addresses):
                messages += deliveries(ruid: ruid, addresses: addresses, from: me)
            case .persist(let persist):
                var batch = MemoryStore.Batch(chunks: persist.chunks)
                if let range = persist.seal {
                    batch.seals = [MemoryStore.Seal(peer: peer, bin: persist.bin, epoch: persist.epoch, range: range,
                                                    requires: persist.requires)]
                }
                submit(Write(origin: .persist(connection: c, side: k, persist), batch: batch), node: me)
            case .release(let addresses):
                release(addresses, at: me)
            case .resetIntervals(let bins):
                var batch = MemoryStore.Batch()
                if let bins { batch.binIntervalResets = bins.map { (peer, $0) } } else { batch.intervalResets = [peer] }
                counters.intervalResets += 1
                submit(Write(origin: .reset, batch: batch), node: me)
            case .penalise:
                break  // counted by the machine (`counters.penalties`)
            case .drop:
                closing = .fault
            case .close:
                closing = closing ?? .closed
            case .hive(let message):
                pending += hiveReceived(message, connection: c, side: k)
            case .retrieval:
                break  // the simulation does not run retrieval yet, and no simulated node asks
            }
        }
        if config.checkInvariants { connections[c].sides[k].sync.checkInvariants() }
        for message in messages { transmit(message, connection: c, from: k) }
        if let closing {
            close(c, reason: closing)
        } else {
            scheduleTick(connection: c, side: k)
        }
    }

    /// Hive traffic (`PeerSession.hiveReceived`): accepted entries go to the address book; a
    /// request within the rate is answered with the peers the table picks for the asker.
    private func hiveReceived(_ message: Message, connection c: Int, side k: Int) -> [PeerSync.Action] {
        let me = connections[c].node(k)
        let peer = nodes[connections[c].node(1 - k)].overlay
        switch message {
        case .peers(let peers):
            let outcome = connections[c].sides[k].hive.peersReceived(peers, from: peer, base: nodes[me].overlay, nowMs: now)
            if config.checkInvariants { connections[c].sides[k].hive.checkInvariants() }
            for entry in outcome.accepted { nodes[me].topology.learned(entry.overlay, addresses: entry.addresses, nowMs: now) }
            counters.hiveDropped += outcome.dropped.total
            return []
        case .peersRequest(let request):
            switch connections[c].sides[k].hive.requestReceived(request, nowMs: now) {
            case .answer(let limit):
                let candidates = nodes[me].topology.hiveAnswer(for: peer, limit: limit, nowMs: now, random: &random).map {
                    PeerAddress(overlay: $0.overlay, addresses: Array($0.addresses.prefix(ProtocolLimits.listenAddressesMax)))
                }
                return [.send([.peers(HiveMachine.answer(candidates, limit: limit))])]
            case .fault(let fault):
                return connections[c].sides[k].sync.faultDetected(fault)
            }
        default:
            return []
        }
    }

    private func deliveries(ruid: RequestID, addresses: [ChunkAddress], from me: Int) -> [Message] {
        let present = addresses.compactMap { nodes[me].store.chunks[$0].map { DeliveredChunk($0.chunk) } }
        counters.chunksServed += present.count
        return ChunkDelivery.frames(ruid: ruid, present: present, wanted: addresses.count)
    }

    private func release(_ addresses: [ChunkAddress], at n: Int) {
        for a in addresses { nodes[n].inFlight.remove(a) }
    }

    /// The machine's next deadline becomes a tick event (at most one pending per end that
    /// matters; a deadline already past is retried at the real session's tick interval).
    private func scheduleTick(connection c: Int, side k: Int) {
        guard connections[c].open, let deadline = connections[c].sides[k].sync.nextDeadline else { return }
        let at = deadline > now ? deadline : now + Self.tickIntervalMs
        if let scheduled = connections[c].sides[k].tickAt, scheduled <= at { return }
        connections[c].sides[k].tickAt = at
        queue.push(.tick(connection: c, side: k), at: at)
    }

    /// `SessionLimits.tickIntervalMs`.
    static let tickIntervalMs: UInt64 = 100

    // MARK: The store writer

    private func submit(_ write: Write, node n: Int) {
        nodes[n].pendingWrites.append(write)
        guard !nodes[n].commitScheduled else { return }
        nodes[n].commitScheduled = true
        let delay = config.commitDelayMs
        queue.push(.commit(node: n, incarnation: nodes[n].incarnation),
                   at: now + delay.lowerBound + random.next() % (delay.upperBound - delay.lowerBound + 1))
    }

    /// Group commit: every write submitted since the last commit is applied in order; then
    /// each session learns its persists committed, and every session that our bins grew.
    private func commit(_ n: Int) {
        let writes = nodes[n].pendingWrites
        nodes[n].pendingWrites = []
        nodes[n].commitScheduled = false
        var grown: [UInt64] = Array(repeating: 0, count: Proximity.binCount)
        var anyGrown = false
        var done: [(Int, Int, PeerSync.Persist, sealed: Bool, duplicates: Int)] = []
        for write in writes {
            let result = nodes[n].store.apply(write.batch)
            for stored in result.stored {
                grown[Int(stored.bin)] = max(grown[Int(stored.bin)], stored.binID)
                anyGrown = true
            }
            switch write.origin {
            case .persist(let c, let k, let persist):
                counters.chunksDeliveredTwice += result.duplicates
                counters.chunksStored += result.stored.count
                if let seal = write.batch.seals.first, result.unsealed.isEmpty { audit(seal, at: n) }
                if !result.unsealed.isEmpty { counters.sealsSkipped += 1 }
                done.append((c, k, persist, result.unsealed.isEmpty, result.duplicates))
            case .upload(let index):
                uploaded[index] = true
            case .reset:
                break
            }
        }
        for (c, k, persist, sealed, duplicates) in done where connections[c].open {
            let actions = connections[c].sides[k].sync.batchCommitted(persist, sealed: sealed, duplicates: duplicates, now: now)
            perform(actions, connection: c, side: k)
        }
        guard anyGrown else { return }
        let cursors = (0..<Proximity.binCount).filter { grown[$0] > 0 }.map { (bin: UInt8($0), cursor: grown[$0]) }
        var grownMask: UInt32 = 0
        for bin in 0..<Proximity.binCount where grown[bin] > 0 { grownMask |= 1 << UInt32(bin) }
        for (_, c) in nodes[n].sessionOrder {
            let k = side(of: n, in: c)
            // Only a live request waiting on a grown bin changes anything (`SyncServer.binAdvanced`).
            guard connections[c].sides[k].sync.server.waitingBins & grownMask != 0 else { continue }
            let actions = connections[c].sides[k].sync.binsGrew(cursors, now: now)
            perform(actions, connection: c, side: k)
        }
    }

    /// A seal just applied: every bin ID it covers must name a chunk this node holds (what
    /// `requires` protects). Checked against the peer's store, which the simulation can see.
    private func audit(_ seal: MemoryStore.Seal, at n: Int) {
        guard let p = nodeByOverlay[seal.peer], nodes[p].store.epoch == seal.epoch else { return }
        for id in seal.range {
            guard let address = nodes[p].store.address(bin: Int(seal.bin), binID: id) else {
                recordSealViolation("node \(n) sealed bin ID \(id) of node \(p)'s bin \(seal.bin), beyond its cursor \(nodes[p].store.cursor(bin: Int(seal.bin)))")
                return
            }
            if !nodes[n].store.has(address) {
                recordSealViolation("node \(n) sealed node \(p)'s bin \(seal.bin) IDs \(seal.range) at \(now) ms, but misses ID \(id) (chunk \(address.hex.prefix(16)))")
                return
            }
        }
    }

    private func recordSealViolation(_ text: String) {
        counters.sealViolations += 1
        if sealViolations.count < 8 { sealViolations.append(text) }
    }

    // MARK: Uploads

    private func upload(_ index: Int) {
        var n = uploadTarget[index]
        for _ in 0..<nodes.count where !nodes[n].alive { n = (n + 1) % nodes.count }
        guard nodes[n].alive else { return }
        submit(Write(origin: .upload(index), batch: MemoryStore.Batch(chunks: [chunks[index]])), node: n)
    }
}

