/// The bounds and timings of the Kademlia table and its address book.
public struct TopologyLimits: Sendable, Equatable {
    /// Depth is the largest `d` with at least this many connected peers at PO ≥ d.
    public var neighbourhoodMin = 4
    /// A bin with this many connected peers is saturated: dialling prefers other bins.
    public var binPeersSaturated = 8
    /// No more dials into a neighbourhood bin with this many connected peers; a bin below
    /// depth refuses peers beyond it, and is pruned to it (neighbours never are). Above twice
    /// `binPeersSaturated`, so that bins cannot all be full (`admits`, decision 0024).
    public var binPeersMax = 20
    /// Entries in the address book. Connected peers are never evicted, so the book holds at
    /// most `max(knownPeersMax, connected + dialling)` entries.
    public var knownPeersMax = 10_000
    /// Dials under way at once.
    public var dialsInFlightMax = 4
    /// The wait before dialling a peer again after its 1st, 2nd, … consecutive failed dial;
    /// the last step repeats.
    public var dialBackoffMs: [UInt64] = [1_000, 10_000, 60_000, 300_000, 600_000]
    /// A never-verified entry is forgotten after this many consecutive failed dials.
    public var failedDialsForget = 8

    public init() {}
}

/// One address-book entry: a peer we know of, connected or not.
public struct KnownPeer: Sendable, Equatable {
    public var overlay: OverlayAddress
    /// Where it listens ("host:port"), at most `ProtocolLimits.listenAddressesMax`, each valid.
    public var addresses: [String]
    /// Wall-clock milliseconds of the last connection that ended or began (0: never).
    public var lastSeenMs: UInt64
    /// Consecutive failed dials since the last connection.
    public var failedDials: Int
    /// Not dialled before this time (wall-clock milliseconds).
    public var nextDialMs: UInt64
    /// Higher is better; the peer session moves it (`Topology.scored`).
    public var score: Int64
    /// Banned until this time (wall-clock milliseconds); banned while it is in the future.
    public var banUntilMs: UInt64
    /// A handshake proved this overlay. An entry known only from gossip is not verified.
    public var verified: Bool

    public init(overlay: OverlayAddress, addresses: [String], lastSeenMs: UInt64 = 0, failedDials: Int = 0,
                nextDialMs: UInt64 = 0, score: Int64 = 0, banUntilMs: UInt64 = 0, verified: Bool = false) {
        self.overlay = overlay
        self.addresses = addresses
        self.lastSeenMs = lastSeenMs
        self.failedDials = failedDials
        self.nextDialMs = nextDialMs
        self.score = score
        self.banUntilMs = banUntilMs
        self.verified = verified
    }

    /// An entry as the `peers` table keeps it: a peer is stored once a handshake proved it,
    /// so one that was ever seen (`lastSeenMs > 0`) is verified. Dial failures and back-off
    /// are not persisted: a restart dials afresh.
    public init(restoring overlay: OverlayAddress, addresses: [String], lastSeenMs: UInt64, score: Int64, banUntilMs: UInt64) {
        self.init(overlay: overlay, addresses: addresses, lastSeenMs: lastSeenMs, score: score,
                  banUntilMs: banUntilMs, verified: lastSeenMs > 0)
    }

    public func isBanned(nowMs: UInt64) -> Bool { banUntilMs > nowMs }
}

/// One bin of the table, for status pages and the journal.
public struct BinSummary: Sendable, Equatable, Codable {
    public var bin: Int
    /// Address-book entries in this bin, connected ones included.
    public var known: Int
    public var connected: Int
    /// `connected ≥ binPeersSaturated`.
    public var saturated: Bool

    public init(bin: Int, known: Int, connected: Int, saturated: Bool) {
        (self.bin, self.known, self.connected, self.saturated) = (bin, known, connected, saturated)
    }
}

/// The node's Kademlia table and address book. Pure: it does no I/O, takes time as a
/// parameter, and only records what the shell reports (dials started and failed, handshakes,
/// disconnections, gossip) and answers what to do next (`nextDials`, `peersToPrune`,
/// `hiveAnswer`, `depth`).
///
/// Every peer it tracks is in `book`; `connectedSet` and `dialling` are disjoint subsets of it.
public struct Topology: Sendable {
    /// Our own overlay: bins and depth are measured from it, and it is never in the book.
    public let base: OverlayAddress
    public let limits: TopologyLimits
    /// Every known peer, at most `limits.knownPeersMax` unless connected and dialling peers
    /// alone exceed it (they are never evicted).
    var book: [OverlayAddress: KnownPeer] = [:]
    /// Peers with an established session. Each is verified.
    var connectedSet: Set<OverlayAddress> = []
    /// Peers being dialled: `dialStarted` and neither `connected` nor `dialFailed` since.
    var dialling: Set<OverlayAddress> = []
    /// Per bin: connected peers; book entries.
    var connectedPerBin = [Int](repeating: 0, count: Proximity.binCount)
    var knownPerBin = [Int](repeating: 0, count: Proximity.binCount)

    public init(base: OverlayAddress, limits: TopologyLimits = .init()) {
        precondition(limits.neighbourhoodMin >= 1 && limits.binPeersSaturated >= 1
                     && limits.binPeersMax >= limits.binPeersSaturated && limits.knownPeersMax >= 1
                     && limits.dialsInFlightMax >= 1 && !limits.dialBackoffMs.isEmpty && limits.failedDialsForget >= 1,
                     "inconsistent topology limits: \(limits)")
        self.base = base
        self.limits = limits
    }

    /// `min(PO(base, overlay), 31)`.
    public func bin(of overlay: OverlayAddress) -> Int { Proximity.bin(of: overlay, relativeTo: base) }

    // MARK: Reading

    /// The neighbourhood depth (DESIGN §1): the largest `d` such that at least
    /// `neighbourhoodMin` connected peers have PO ≥ d and no bin below `d` is empty; 0 with
    /// fewer than `neighbourhoodMin` connected peers. Both conditions only weaken as `d`
    /// falls, so the answer is the first `d` at which either fails, minus one.
    public var depth: Int {
        var atOrBeyond = connectedSet.count
        guard atOrBeyond >= limits.neighbourhoodMin else { return 0 }
        var d = 0
        while d < Proximity.maxBin {
            // Can depth be d + 1? Bin d must hold a peer, and enough must lie beyond it.
            atOrBeyond -= connectedPerBin[d]
            guard connectedPerBin[d] > 0, atOrBeyond >= limits.neighbourhoodMin else { break }
            d += 1
        }
        return d
    }

    /// Connected peers in overlay order.
    public var connected: [OverlayAddress] { connectedSet.sorted() }

    public var connectedCount: Int { connectedSet.count }
    public var knownCount: Int { book.count }
    public var diallingCount: Int { dialling.count }

    public func isConnected(_ overlay: OverlayAddress) -> Bool { connectedSet.contains(overlay) }
    public func isDialling(_ overlay: OverlayAddress) -> Bool { dialling.contains(overlay) }

    public func peer(_ overlay: OverlayAddress) -> KnownPeer? { book[overlay] }

    /// Every book entry in overlay order (what the shell persists to `peers`).
    public var knownPeers: [KnownPeer] { book.keys.sorted().map { book[$0]! } }

    /// 32 entries, bin 0 first.
    public func binSummaries() -> [BinSummary] {
        (0..<Proximity.binCount).map {
            BinSummary(bin: $0, known: knownPerBin[$0], connected: connectedPerBin[$0],
                       saturated: connectedPerBin[$0] >= limits.binPeersSaturated)
        }
    }

    // MARK: Events

    /// Entries read from the `peers` table at start. Our own overlay is skipped, addresses
    /// are filtered as gossip's are, an entry already in the book is kept as it is, and if
    /// the book would exceed its bound the least useful entries are left out.
    public mutating func load(_ peers: [KnownPeer]) {
        var fresh: [KnownPeer] = []
        var seen = Set<OverlayAddress>()
        for var peer in peers where peer.overlay != base && book[peer.overlay] == nil && seen.insert(peer.overlay).inserted {
            peer.addresses = ListenAddress.valid(peer.addresses)
            fresh.append(peer)
        }
        let room = max(0, limits.knownPeersMax - book.count)
        if fresh.count > room {
            fresh.sort { Self.usefulness($0) > Self.usefulness($1) }
            fresh.removeLast(fresh.count - room)
        }
        for peer in fresh { insert(peer) }
    }

    /// A handshake proved `overlay`: it is connected and verified, its dial record is
    /// cleared, and the addresses it announced (the valid ones, if any) replace the old. It
    /// always gets an entry; with a full book of connected and dialling peers, the book grows.
    public mutating func connected(_ overlay: OverlayAddress, addresses: [String], nowMs: UInt64) {
        guard overlay != base else { return }
        let valid = ListenAddress.valid(addresses)
        var peer = book[overlay] ?? KnownPeer(overlay: overlay, addresses: [])
        if book[overlay] == nil {
            makeRoom()
            insert(peer)
        }
        if !valid.isEmpty { peer.addresses = valid }
        peer.verified = true
        peer.lastSeenMs = nowMs
        peer.failedDials = 0
        peer.nextDialMs = 0
        book[overlay] = peer
        dialling.remove(overlay)
        if connectedSet.insert(overlay).inserted { connectedPerBin[bin(of: overlay)] += 1 }
    }

    /// The session with `overlay` ended. It is not dialled again for the first back-off step,
    /// so a peer that drops us at once is not redialled in a tight loop.
    public mutating func disconnected(_ overlay: OverlayAddress, nowMs: UInt64) {
        guard var peer = book[overlay] else { return }
        if connectedSet.remove(overlay) != nil { connectedPerBin[bin(of: overlay)] -= 1 }
        dialling.remove(overlay)
        peer.lastSeenMs = nowMs
        peer.nextDialMs = nowMs + limits.dialBackoffMs[0]
        book[overlay] = peer
        shrinkToBound()
    }

    /// The shell began dialling `overlay` (one `nextDials` returned). Unknown or connected
    /// peers are ignored.
    public mutating func dialStarted(_ overlay: OverlayAddress) {
        guard book[overlay] != nil, !connectedSet.contains(overlay) else { return }
        dialling.insert(overlay)
    }

    /// A dial (or its handshake) failed: the next one waits the next back-off step, and an
    /// entry that was never verified is forgotten after `failedDialsForget` failures in a row.
    public mutating func dialFailed(_ overlay: OverlayAddress, nowMs: UInt64) {
        dialling.remove(overlay)
        guard var peer = book[overlay], !connectedSet.contains(overlay) else { return }
        defer { shrinkToBound() }
        peer.failedDials += 1
        if !peer.verified && peer.failedDials >= limits.failedDialsForget {
            remove(overlay)
            return
        }
        let step = min(peer.failedDials, limits.dialBackoffMs.count) - 1
        peer.nextDialMs = nowMs + limits.dialBackoffMs[step]
        book[overlay] = peer
    }

    /// `overlay` is banned until `untilMs`. An unknown peer gets an entry (with no address),
    /// so gossip about it is refused while the ban lasts, unless the book is full of connected
    /// and dialling peers. The shell ends a connected peer's session itself and reports
    /// `disconnected`.
    public mutating func banned(_ overlay: OverlayAddress, untilMs: UInt64) {
        guard overlay != base else { return }
        if book[overlay] == nil {
            guard makeRoom() else { return }
            insert(KnownPeer(overlay: overlay, addresses: []))
        }
        book[overlay]!.banUntilMs = untilMs
    }

    /// The peer session's verdict on `overlay` (used to order pruning and dialling).
    public mutating func scored(_ overlay: OverlayAddress, score: Int64) {
        book[overlay]?.score = score
    }
}
