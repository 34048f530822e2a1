/// Hive limits per connected peer (Docs/Protocol.md §11, Docs/Decisions/0021-hive.md).
public struct HiveLimits: Sendable, Equatable {
    /// Entries accepted from one peer a minute: a bucket of this many, refilled evenly over a
    /// minute. Bee's hive accepts 128 peers a minute per peer. Beyond it entries are dropped
    /// and counted, not a fault: two honest peers announcing at once may overrun it.
    public var entriesPerMinuteMax = 128
    /// `PeersRequest`s one peer may send a minute: a bucket of this many, refilled evenly
    /// over a minute; the next one is `PeerFault.flooding`. Bee has no request (it only
    /// pushes); a Shoal node asks once on connecting and then at most once a
    /// `requestIntervalMs`, so 4 leaves room for a reconnect or two and nothing for a loop.
    public var requestsPerMinuteMax = 4
    /// How long a node waits before asking the same peer again. Once a minute at 30 entries
    /// an answer stays within what the peer accepts from us (`entriesPerMinuteMax`).
    public var requestIntervalMs: UInt64 = 60_000

    public init(entriesPerMinuteMax: Int = 128, requestsPerMinuteMax: Int = 4, requestIntervalMs: UInt64 = 60_000) {
        self.entriesPerMinuteMax = entriesPerMinuteMax
        self.requestsPerMinuteMax = requestsPerMinuteMax
        self.requestIntervalMs = requestIntervalMs
    }

    /// The rate limits' window.
    public static let minuteMs: UInt64 = 60_000
}

/// Why entries of a `Peers` message were not accepted, counted by reason.
public struct HiveDrops: Sendable, Equatable, Codable {
    /// The receiver's own overlay: nothing to learn.
    public var ownOverlay = 0
    /// The sender's own overlay: its handshake told that already, with proof.
    public var senderOverlay = 0
    /// An overlay that came earlier in the same message (the first one counts).
    public var duplicate = 0
    /// No address of the entry parses as "host:port" (`HostPort.parse`).
    public var badAddress = 0
    /// Beyond `HiveLimits.entriesPerMinuteMax` from this peer.
    public var overRate = 0

    public init(ownOverlay: Int = 0, senderOverlay: Int = 0, duplicate: Int = 0, badAddress: Int = 0, overRate: Int = 0) {
        (self.ownOverlay, self.senderOverlay, self.duplicate) = (ownOverlay, senderOverlay, duplicate)
        (self.badAddress, self.overRate) = (badAddress, overRate)
    }

    public var total: Int { ownOverlay + senderOverlay + duplicate + badAddress + overRate }

    public static func += (a: inout HiveDrops, b: HiveDrops) {
        a.ownOverlay += b.ownOverlay
        a.senderOverlay += b.senderOverlay
        a.duplicate += b.duplicate
        a.badAddress += b.badAddress
        a.overRate += b.overRate
    }
}

/// What to do with one `Peers` message.
public struct HiveOutcome: Sendable, Equatable {
    /// Entries for the address book (`Topology.learned`), as hints, in message order; each
    /// keeps only its addresses that parse, at most `ProtocolLimits.listenAddressesMax`.
    public var accepted: [PeerAddress] = []
    public var dropped = HiveDrops()
    /// Addresses left out of accepted entries: unparsable, repeated, or beyond the limit.
    public var addressesDropped = 0

    public init(accepted: [PeerAddress] = [], dropped: HiveDrops = .init(), addressesDropped: Int = 0) {
        (self.accepted, self.dropped, self.addressesDropped) = (accepted, dropped, addressesDropped)
    }
}

/// What to do with one `PeersRequest`.
public enum HiveRequestDecision: Equatable, Sendable {
    /// Answer with one `Peers` of at most `limit` entries (`min(request.limit, hivePeersMax)`).
    case answer(limit: Int)
    /// Do not answer; the shell scores the peer down and drops it (`dropsPeer`).
    case fault(PeerFault)
}

/// Hive counters of one connection, for the peer's status.
public struct HiveCounters: Sendable, Equatable, Codable {
    /// `Peers` messages received.
    public var messagesReceived = 0
    public var entriesReceived = 0
    public var entriesAccepted = 0
    public var dropped = HiveDrops()
    public var addressesDropped = 0
    /// `PeersRequest`s received, and those allowed an answer.
    public var requestsReceived = 0
    public var requestsAnswered = 0
    /// `PeersRequest`s we sent.
    public var requestsSent = 0

    public init() {}
}

/// The hive side of one connected peer: which entries of its `Peers` messages become hints,
/// whether its `PeersRequest`s are answered, and when we ask it. Pure: no I/O, time as a
/// parameter; memory is the fixed fields plus, during one call, a set of the message's
/// overlays (at most `hivePeersMax` from the codec).
///
/// An accepted entry is a hint only: the topology keeps it unverified until a handshake
/// with a node at one of its addresses proves the overlay.
public struct HiveMachine: Sendable {
    public let limits: HiveLimits
    /// Entries this peer may still have accepted; refills `entriesPerMinuteMax` a minute.
    private var entryBudget: WindowBudget
    /// `PeersRequest`s this peer may still send; refills `requestsPerMinuteMax` a minute.
    private var requestBudget: WindowBudget
    /// When we last asked this peer; nil: not yet on this connection, so ask now.
    public private(set) var lastRequestSentMs: UInt64?
    public private(set) var counters = HiveCounters()

    /// What a node asks for: as many as one message holds.
    public static let request = PeersRequest(limit: UInt16(ProtocolLimits.hivePeersMax))

    public init(limits: HiveLimits = .init()) {
        precondition(limits.entriesPerMinuteMax > 0 && limits.requestsPerMinuteMax > 0 && limits.requestIntervalMs > 0,
                     "hive limits must be positive: \(limits)")
        self.limits = limits
        entryBudget = WindowBudget(capacity: limits.entriesPerMinuteMax, windowMs: HiveLimits.minuteMs)
        requestBudget = WindowBudget(capacity: limits.requestsPerMinuteMax, windowMs: HiveLimits.minuteMs)
    }

    // MARK: Events

    /// A `Peers` message from `sender` (the overlay its handshake proved) to a node whose
    /// overlay is `base`. Never a fault: whatever is wrong with an entry drops that entry.
    public mutating func peersReceived(
        _ peers: Peers, from sender: OverlayAddress, base: OverlayAddress, nowMs: UInt64
    ) -> HiveOutcome {
        var outcome = HiveOutcome()
        var seen = Set<OverlayAddress>()
        seen.reserveCapacity(peers.peers.count)
        for entry in peers.peers {
            let first = seen.insert(entry.overlay).inserted
            if entry.overlay == base {
                outcome.dropped.ownOverlay += 1
            } else if entry.overlay == sender {
                outcome.dropped.senderOverlay += 1
            } else if !first {
                outcome.dropped.duplicate += 1
            } else if let kept = Self.usable(entry) {
                // Only entries that would be accepted spend the budget.
                if entryBudget.take(nowMs: nowMs) {
                    outcome.accepted.append(kept.entry)
                    outcome.addressesDropped += kept.addressesDropped
                } else {
                    outcome.dropped.overRate += 1
                }
            } else {
                outcome.dropped.badAddress += 1
            }
        }
        counters.messagesReceived += 1
        counters.entriesReceived += peers.peers.count
        counters.entriesAccepted += outcome.accepted.count
        counters.dropped += outcome.dropped
        counters.addressesDropped += outcome.addressesDropped
        return outcome
    }

    /// A `PeersRequest` from this peer.
    public mutating func requestReceived(_ request: PeersRequest, nowMs: UInt64) -> HiveRequestDecision {
        counters.requestsReceived += 1
        guard requestBudget.take(nowMs: nowMs) else {
            return .fault(.flooding("more than \(limits.requestsPerMinuteMax) peers requests a minute"))
        }
        // The codec refuses a limit of 0; a request made in code is judged the same way.
        guard request.limit > 0 else { return .fault(.malformedRequest("peers request with limit 0")) }
        counters.requestsAnswered += 1
        return .answer(limit: min(Int(request.limit), ProtocolLimits.hivePeersMax))
    }

    /// Whether to send this peer `HiveMachine.request` now: once after the handshake, then
    /// at most once a `requestIntervalMs`.
    public func shouldRequest(nowMs: UInt64) -> Bool {
        guard let lastRequestSentMs else { return true }
        return nowMs >= lastRequestSentMs &+ limits.requestIntervalMs
    }

    /// When `shouldRequest` next turns true (0: now), for the shell's timer.
    public var nextRequestMs: UInt64 {
        lastRequestSentMs.map { $0 &+ limits.requestIntervalMs } ?? 0
    }

    /// We sent this peer a `PeersRequest` at `nowMs`.
    public mutating func requestSent(nowMs: UInt64) {
        lastRequestSentMs = max(lastRequestSentMs ?? nowMs, nowMs)
        counters.requestsSent += 1
    }

    // MARK: What a node sends

    /// The message that tells peers about one that just connected; nil when none of its
    /// addresses parses (a peer must never have to drop what we send).
    public static func announcement(of newPeer: PeerAddress) -> Peers? {
        usable(newPeer).map { Peers(peers: [$0.entry]) }
    }

    /// The answer to a request allowed `limit` entries: the first `limit` (at most
    /// `hivePeersMax`) of `candidates` that have an address that parses, each with only those
    /// addresses. The topology chooses and orders the candidates.
    public static func answer(_ candidates: [PeerAddress], limit: Int) -> Peers {
        var peers: [PeerAddress] = []
        for candidate in candidates where peers.count < min(limit, ProtocolLimits.hivePeersMax) {
            if let kept = usable(candidate) { peers.append(kept.entry) }
        }
        return Peers(peers: peers)
    }

    /// `entry` with only its addresses that parse, each once, at most `listenAddressesMax`,
    /// and how many were left out; nil when none is left.
    public static func usable(_ entry: PeerAddress) -> (entry: PeerAddress, addressesDropped: Int)? {
        var kept: [String] = []
        for address in entry.addresses where kept.count < ProtocolLimits.listenAddressesMax {
            if !kept.contains(address), HostPort.parse(address) != nil { kept.append(address) }
        }
        guard !kept.isEmpty else { return nil }
        return (PeerAddress(overlay: entry.overlay, addresses: kept), entry.addresses.count - kept.count)
    }

    // MARK: Invariants

    public func checkInvariants() {
        entryBudget.checkInvariants()
        requestBudget.checkInvariants()
        let c = counters
        precondition(c.entriesReceived == c.entriesAccepted + c.dropped.total,
                     "entries received \(c.entriesReceived) are not accepted \(c.entriesAccepted) + dropped \(c.dropped)")
        precondition(c.requestsAnswered <= c.requestsReceived, "answered \(c.requestsAnswered) of \(c.requestsReceived) requests")
        precondition((c.requestsSent == 0) == (lastRequestSentMs == nil), "requests sent \(c.requestsSent), last at \(String(describing: lastRequestSentMs))")
        precondition(entryBudget.capacity == limits.entriesPerMinuteMax && requestBudget.capacity == limits.requestsPerMinuteMax,
                     "budgets \(entryBudget), \(requestBudget) disagree with the limits \(limits)")
    }
}
