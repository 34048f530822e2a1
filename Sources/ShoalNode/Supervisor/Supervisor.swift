import Locking
import Logging
import ShoalCore
import ShoalStore
import ShoalWire

/// Turns the topology into connections and subscriptions. It owns the Kademlia table and
/// address book (`Topology`), the bins each session syncs (`SubscriptionReconciler`) and
/// dialling. Sessions tell it when they connect and end and what hive traffic they accepted;
/// it tells sessions what to subscribe, cancel and send through their mailboxes, so it never
/// waits for a peer. Every reconciliation goes to the journal in the store.
///
/// The decisions are the pure machines'; this actor reads the clock and the store, starts
/// dials, and carries the decisions out.
actor Supervisor {
    struct Limits: Sendable {
        var topology = TopologyLimits()
        /// How often the table is looked at (dials due, pruning, the radius).
        var intervalMs: UInt64 = 1_000
        /// A newly connected peer is asked for this many peers.
        var hiveAskLimit = UInt16(ProtocolLimits.hivePeersMax)
        /// A peer an operator disconnected is neither dialled, nor admitted when it dials us,
        /// nor passed on in hive answers, for this long.
        var operatorDisconnectMs: UInt64 = 10 * 60_000
        /// False for a light node: it syncs by a radius that keeps nothing
        /// (`SubscriptionPlan.keepsNothing`), so no peer gives it a bin and sessions want no
        /// offered chunk; it still serves peers' sync requests from its store.
        var pullSync = true
    }

    /// Connects to "host:port" and proves the peer; throws when it cannot.
    typealias Dialer = @Sendable (String) async throws -> EstablishedConnection
    /// Runs a session over an established connection until it ends.
    typealias Server = @Sendable (EstablishedConnection) async -> Void

    private let context: NodeContext
    private let limits: Limits
    private var topology: Topology
    private var reconciler = SubscriptionReconciler()
    /// The radius subscriptions and sessions go by: the store's (eviction moves it), or
    /// `SubscriptionPlan.keepsNothing` for a light node.
    private var radius = 0
    private var sessions: [OverlayAddress: PeerSession] = [:]
    private var random: SplitMix64
    private var logger: Logger
    /// Dials to start, and connections made elsewhere to serve; `run` starts them in its task group.
    private var dialQueue: [(overlay: OverlayAddress?, address: String)] = []
    private var adopted: [EstablishedConnection] = []
    private var nextReviewMs: UInt64 = 0
    /// How often `run` looks for queued work between reviews.
    private static let pollMs: UInt64 = 50
    private var stopped = false
    /// Peers an operator asked to disconnect whose sessions have not ended yet.
    private var disconnecting = Set<OverlayAddress>()
    /// When each session started, and how many sessions in a row ended within
    /// `shortSessionMs` (a peer that refuses us right after the handshake, e.g. as banned):
    /// each such end pushes the peer one more step along the dial back-off.
    private var connectedAt: [OverlayAddress: UInt64] = [:]
    private var shortSessions: [OverlayAddress: Int] = [:]
    private static let shortSessionMs: UInt64 = 10_000
    /// Peers an operator disconnected, refused until the given wall time (not persisted).
    private var operatorRefused: [OverlayAddress: UInt64] = [:]

    init(context: NodeContext, limits: Limits = Limits(), seed: UInt64) {
        self.context = context
        self.limits = limits
        topology = Topology(base: context.overlay, limits: limits.topology)
        random = SplitMix64(seed: seed)
        logger = context.logger
        if let records = try? context.store.read({ try $0.peers() }) {
            topology.load(records.map {
                KnownPeer(restoring: $0.overlay, addresses: $0.record.addresses, lastSeenMs: $0.record.lastSeenMs,
                          score: $0.record.score, banUntilMs: $0.record.banUntilMs)
            })
        }
        radius = Self.effectiveRadius(stored: Int((try? context.store.read { try $0.radius() }) ?? 0), pullSync: limits.pullSync)
    }

    /// A light node keeps no neighbourhood whatever its store says.
    private static func effectiveRadius(stored: Int, pullSync: Bool) -> Int {
        pullSync ? stored : SubscriptionPlan.keepsNothing
    }

    // MARK: Running

    /// Looks at the table every `intervalMs` and runs the dials it decides, until cancelled.
    func run(dial: @escaping Dialer, serve: @escaping Server) async {
        await withTaskGroup(of: Void.self) { group in
            while !Task.isCancelled && !stopped {
                if context.clock.nowMs() >= nextReviewMs {
                    review()
                    nextReviewMs = context.clock.nowMs() + limits.intervalMs
                }
                for (overlay, address) in takeDials() {
                    group.addTask { await self.dial(overlay, address, dial: dial, serve: serve) }
                }
                for connection in takeAdopted() {
                    group.addTask { await serve(connection) }
                }
                try? await context.clock.sleep(untilMs: context.clock.nowMs() + Self.pollMs)
            }
            group.cancelAll()
        }
    }

    func stop() { stopped = true }

    private func takeAdopted() -> [EstablishedConnection] {
        defer { adopted = [] }
        return adopted
    }

    /// Serves a connection dialled elsewhere (an operator's `POST /peers`).
    func adopt(_ connection: EstablishedConnection) {
        adopted.append(connection)
    }

    /// Dials a peer the table knows an address of (the downloader's hint); false when it knows
    /// none, or the peer is banned or refused. Whether the dial works shows as a connect, or as
    /// nothing (the downloader counts a dial unreported for a while as failed).
    func dialKnown(_ overlay: OverlayAddress) -> Bool {
        let now = context.clock.wallMs()
        guard overlay != context.overlay, sessions[overlay] == nil, let known = topology.peer(overlay),
              !known.isBanned(nowMs: now), (operatorRefused[overlay] ?? 0) <= now,
              let address = known.addresses.first else { return false }
        if topology.isDialling(overlay) { return true }
        topology.dialStarted(overlay)
        dialQueue.append((overlay, address))
        return true
    }

    private func takeDials() -> [(overlay: OverlayAddress?, address: String)] {
        defer { dialQueue = [] }
        return dialQueue
    }

    private func dial(_ overlay: OverlayAddress?, _ address: String, dial: Dialer, serve: Server) async {
        let connection: EstablishedConnection
        do {
            connection = try await dial(address)
        } catch {
            dialFailed(overlay, address: address, error: "\(error)")
            return
        }
        if let overlay, connection.peer.overlay != overlay {
            // Gossip named another overlay for this address: the hint was wrong (or stale).
            dialFailed(overlay, address: address, error: "the peer there is \(connection.peer.overlay.hex.prefix(16))")
        }
        await serve(connection)
    }

    private func dialFailed(_ overlay: OverlayAddress?, address: String, error: String) {
        guard let overlay else { return }
        topology.dialFailed(overlay, nowMs: context.clock.wallMs())
        logger.debug("dial failed", metadata: ["peer.overlay": "\(overlay.hex.prefix(16))", "peer.address": "\(address)", "error": "\(error)"])
    }

    /// Dials due, peers to prune, the radius, and the subscriptions that follow.
    private func review() {
        let now = context.clock.wallMs()
        if let stored = try? context.store.read({ try $0.radius() }),
           Self.effectiveRadius(stored: Int(stored), pullSync: limits.pullSync) != radius {
            radius = Self.effectiveRadius(stored: Int(stored), pullSync: limits.pullSync)
            for session in sessions.values { session.radiusChanged(radius) }
        }
        for overlay in topology.peersToPrune() {
            sessions[overlay].map { session in Task { await session.goodbye(.tooManyPeers, "bin full") } }
        }
        for peer in topology.nextDials(nowMs: now) {
            topology.dialStarted(peer.overlay)
            let address = peer.addresses[peer.failedDials % peer.addresses.count]
            dialQueue.append((peer.overlay, address))
        }
        reconcile()
        topology.checkInvariants()
    }

    /// Diffs the bins each peer should give against what its session syncs, tells the
    /// sessions, and journals the decision.
    private func reconcile() {
        let reconciliation = reconciler.reconcile(topology: topology, radius: radius)
        context.depth.store(reconciliation.newDepth, ordering: .relaxed)
        guard !reconciliation.isEmpty else { return }
        for change in reconciliation.changes {
            guard let session = sessions[change.peer] else { continue }
            if !change.cancel.isEmpty { session.change(.cancel(change.cancel)) }
            if !change.subscribe.isEmpty { session.change(.subscribe(change.subscribe)) }
        }
        var batch = StoreBatch()
        batch.journal = reconciliation.journalLines
        context.writer.submit(batch) { _ in }
        if reconciliation.oldDepth != reconciliation.newDepth || reconciliation.oldRadius != reconciliation.newRadius {
            logger.info("topology changed", metadata: ["depth": "\(reconciliation.oldDepth)->\(reconciliation.newDepth)",
                                                       "radius": "\(reconciliation.oldRadius)->\(reconciliation.newRadius)",
                                                       "connected": "\(topology.connectedCount)"])
        }
    }

    // MARK: Events from sessions

    /// A session is established (its handshake proved the overlay).
    func connected(_ session: PeerSession) {
        let peer = session.peer
        sessions[peer.overlay] = session
        var addresses = peer.listenAddresses
        if peer.outbound && !addresses.contains(peer.remoteAddress) { addresses.insert(peer.remoteAddress, at: 0) }
        topology.connected(peer.overlay, addresses: addresses, nowMs: context.clock.wallMs())
        connectedAt[peer.overlay] = context.clock.wallMs()
        session.radiusChanged(radius)
        reconcile()
        // Hive: ask the newcomer whom it knows, and tell our neighbours about it.
        session.send([.peersRequest(PeersRequest(limit: limits.hiveAskLimit))])
        if let entry = topology.peer(peer.overlay), !entry.addresses.isEmpty {
            let announcement = Message.peers(Peers(peers: [PeerAddress(overlay: peer.overlay, addresses: entry.addresses)]))
            let depth = topology.depth
            for (overlay, other) in sessions where overlay != peer.overlay && topology.bin(of: overlay) >= depth {
                other.send([announcement])
            }
        }
    }

    /// A session ended. `bannedUntilMs`: it ended for a fault, and the peer is banned.
    func disconnected(_ session: PeerSession, bannedUntilMs: UInt64?) {
        let overlay = session.peer.overlay
        guard sessions[overlay] === session else { return }
        sessions[overlay] = nil
        disconnecting.remove(overlay)
        let now = context.clock.wallMs()
        topology.disconnected(overlay, nowMs: now)
        if let started = connectedAt.removeValue(forKey: overlay), now - min(now, started) < Self.shortSessionMs {
            if shortSessions.count > limits.topology.knownPeersMax { shortSessions = [:] }
            let count = shortSessions[overlay, default: 0] + 1
            shortSessions[overlay] = count
            for _ in 0..<count { topology.dialFailed(overlay, nowMs: now) }
        } else {
            shortSessions[overlay] = nil
        }
        if let bannedUntilMs { topology.banned(overlay, untilMs: bannedUntilMs) }
        reconcile()
    }

    /// Peers a session's hive accepted from its peer: hints for the address book.
    func learned(_ peers: [PeerAddress]) {
        let now = context.clock.wallMs()
        for entry in peers { topology.learned(entry.overlay, addresses: entry.addresses, nowMs: now) }
    }

    /// A peer asked whom we know: the peers it needs, at most `limit`.
    func hiveAnswer(for asker: OverlayAddress, limit: Int) -> [PeerAddress] {
        topology.hiveAnswer(for: asker, limit: limit, nowMs: context.clock.wallMs(), random: &random).map {
            PeerAddress(overlay: $0.overlay, addresses: Array($0.addresses.prefix(ProtocolLimits.listenAddressesMax)))
        }
    }

    /// Disconnects a peer (an operator's request); false when it is not connected (or is
    /// being disconnected already). It is not dialled again for `operatorDisconnectMs`.
    func disconnect(_ overlay: OverlayAddress) -> Bool {
        guard let session = sessions[overlay], !disconnecting.contains(overlay) else { return false }
        disconnecting.insert(overlay)
        let now = context.clock.wallMs()
        let until = now + limits.operatorDisconnectMs
        topology.banned(overlay, untilMs: max(topology.peer(overlay)?.banUntilMs ?? 0, until))
        operatorRefused[overlay] = until
        operatorRefused = operatorRefused.filter { $0.value > now }
        var batch = StoreBatch()
        batch.journal = [JournalLine("disconnect", ["peer": JournalLine.peerToken(overlay), "reason": "operator"]).text]
        context.writer.submit(batch) { _ in }
        Task { await session.goodbye(.shutdown, "disconnected by the operator") }
        return true
    }

    /// Why a peer that just completed its handshake is turned away, or nil to take it: an
    /// operator disconnected it a moment ago, or it dialled us into a bin below depth that is
    /// full (`Topology.admits`; it dials elsewhere after its back-off).
    func refusal(of peer: PeerInfo) -> Goodbye? {
        if let until = refusedUntil(peer.overlay) {
            let seconds = (until - min(until, context.clock.wallMs())) / 1000 + 1
            return Goodbye(reason: .banned, message: "disconnected by the operator; refused for \(seconds) s")
        }
        if !peer.outbound && !topology.admits(peer.overlay) {
            return Goodbye(reason: .tooManyPeers, message: "bin \(topology.bin(of: peer.overlay)) full")
        }
        return nil
    }

    /// Until when (wall ms) a peer an operator disconnected is refused, if it still is.
    func refusedUntil(_ overlay: OverlayAddress) -> UInt64? {
        guard let until = operatorRefused[overlay], until > context.clock.wallMs() else {
            operatorRefused[overlay] = nil
            return nil
        }
        return until
    }

    // MARK: Status

    func snapshot() async -> TopologyStatus {
        var peers: [TopologyStatus.Peer] = []
        for overlay in topology.connected {
            peers.append(TopologyStatus.Peer(overlay: overlay.hex, po: topology.bin(of: overlay),
                                             subscribedBins: (reconciler.current[overlay] ?? []).map(Int.init),
                                             outbound: sessions[overlay]?.peer.outbound ?? false))
        }
        return TopologyStatus(depth: topology.depth, radius: radius, connected: topology.connectedCount,
                              known: topology.knownCount, dialling: topology.diallingCount,
                              bins: topology.binSummaries(), peers: peers, pullSync: limits.pullSync)
    }

    var depth: Int { topology.depth }
    var storageRadius: Int { radius }
}

/// The node's Kademlia table as the API shows it.
public struct TopologyStatus: Sendable, Equatable, Codable {
    public struct Peer: Sendable, Equatable, Codable {
        public var overlay: String
        /// Proximity order to this node (its bin, 0…31).
        public var po: Int
        /// The peer's bins this node syncs.
        public var subscribedBins: [Int]
        public var outbound: Bool

        public init(overlay: String, po: Int, subscribedBins: [Int], outbound: Bool) {
            (self.overlay, self.po, self.subscribedBins, self.outbound) = (overlay, po, subscribedBins, outbound)
        }
    }

    public var depth: Int
    /// The radius subscriptions go by: the store's storage radius, or 32 for a light node.
    public var radius: Int
    public var connected: Int
    public var known: Int
    public var dialling: Int
    public var bins: [BinSummary]
    public var peers: [Peer]
    /// False for a light node (radius 32: it subscribes no bin); nil from an older node, which
    /// always pulls.
    public var pullSync: Bool?

    public init(depth: Int, radius: Int, connected: Int, known: Int, dialling: Int, bins: [BinSummary], peers: [Peer],
                pullSync: Bool? = true) {
        (self.depth, self.radius, self.connected, self.known, self.dialling) = (depth, radius, connected, known, dialling)
        (self.bins, self.peers, self.pullSync) = (bins, peers, pullSync)
    }
}
