/// Limits of push on one node (Docs/Retrieval.md, "Push").
public struct PushLimits: Sendable, Equatable {
    /// Peers a push is handed to, one after another, before it fails: an upload on this node
    /// (the origin), and a push forwarded for a peer (which refuses after these, so the origin
    /// can try elsewhere within its own time).
    public var originAttemptsMax = 4
    public var forwardAttemptsMax = 2
    /// How long one attempt waits for its receipt: `attemptBaseMs` plus `attemptPerHopMs` for
    /// each hop the peer may still forward, as retrieval's; a forwarder gives up before its asker.
    public var attemptBaseMs: UInt64 = 1_000
    public var attemptPerHopMs: UInt64 = 500
    /// Hops a push may travel from its origin.
    public var hopsMax = UInt8(ProtocolLimits.pushHopsMax)
    /// Pushes open at once (each holds its chunk, up to 4 KiB): beyond it, an upload's push
    /// fails as overloaded and a peer's is refused.
    public var pushesMax = 4_096
    /// Pushes one peer may have open with us at once; beyond it its pushes are refused.
    public var openPerPeerMax = 256

    public init() {}

    public func attemptTimeoutMs(hops: UInt8) -> UInt64 { attemptBaseMs + attemptPerHopMs * UInt64(hops) }
}

/// Why a push ended without a receipt.
public enum PushFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// Every peer that could take it was tried and none answered with a valid receipt (or
    /// no peer was connected).
    case notReceipted(tried: Int)
    /// Too many pushes open, on this node or for this peer.
    case overloaded
    /// The push came with no hop left, and this node is not where it belongs.
    case hopLimit

    public var description: String {
        switch self {
        case .notReceipted(let tried): tried == 0 ? "no peer to push to" : "no receipt (\(tried) peers tried)"
        case .overloaded: "too many pushes open"
        case .hopLimit: "hop limit reached"
        }
    }
}

/// A receipt a push ended with, checked: the signature is valid for `receipt.publicKey`, and
/// `storer` is the overlay that key makes on this network.
public struct PushReceipt: Sendable, Equatable {
    public var receipt: Receipt.Stored
    public var storer: OverlayAddress
    public init(receipt: Receipt.Stored, storer: OverlayAddress) { (self.receipt, self.storer) = (receipt, storer) }
}

/// Pushing uploaded chunks to the neighbourhood of their addresses, as a value: where a chunk
/// goes next, whether this node is the one to store it, when an attempt has waited long
/// enough, and who gets the receipt. Performs no I/O, reads no clock, signs and verifies
/// nothing: the shell stores and signs what `.store` names, and checks a receipt's signature
/// before `receipted` (Docs/Protocol.md §12).
///
/// - **Who stores.** A node stores a chunk (and signs the receipt) when it lies within the
///   chunk's neighbourhood by its own depth (proximity to the address ≥ depth, with depth > 0),
///   or when no connected peer is closer to the address than itself: it is then the closest
///   node the path knows. At depth 0 (a network too small to have neighbourhoods) the push goes
///   to the closest node.
/// - **Where it goes.** Otherwise to the connected peer closest to the address (XOR) not tried
///   yet; a forwarder hands it only to peers closer than itself, so each hop gets closer and a
///   push cannot circle; the hop count bounds the path too.
/// - An attempt ends with a receipt, a refusal, a timeout (`tick`) or the peer's disconnect;
///   the next peer is tried, up to the attempt limit. A receipt for another chunk, or one whose
///   signature does not hold, is the peer's fault and the attempt fails.
/// - Request IDs are ours (per node, increasing); a receipt for an ID we issued but no longer
///   wait for is late and ignored, one we never issued is the peer's fault.
///
/// Invariants (`checkInvariants`): each push has at most one attempt, its peer in the tried
/// list; request IDs in flight map to their pushes; per-peer open counts match the pushes
/// forwarded for peers; deadlines match the attempts.
public struct Push: Sendable {
    /// Who waits for a push's receipt.
    public enum Origin: Sendable, Equatable, Hashable {
        /// An upload on this node, by the shell's id.
        case local(UInt64)
        /// A peer that pushed to us, by its request ID.
        case peer(OverlayAddress, ruid: UInt32)
    }

    public enum Action: Sendable, Equatable {
        /// Send `chunk` to `peer` as a `pushChunk`, letting it forward `hops` more times.
        case send(peer: OverlayAddress, ruid: UInt32, chunk: Chunk, hops: UInt8)
        /// This node is where the chunk belongs: store it (a peer's push; an upload is stored
        /// already), sign the receipt and give it to `origin` (for a peer, `.receipt` on the wire;
        /// for an upload, its result). A write that fails is the shell's to refuse (`notStored`).
        case store(Chunk, origin: Origin)
        /// Pass a checked receipt back to the peer that pushed to us, unchanged.
        case pass(peer: OverlayAddress, ruid: UInt32, Receipt.Stored)
        /// Refuse a peer's push.
        case refuse(peer: OverlayAddress, ruid: UInt32, Refusal.Code, String)
        /// An upload's push ended.
        case resolve(id: UInt64, Result<PushReceipt, PushFailure>)
        /// The peer misbehaved: a receipt for a request we never issued, for another chunk, or
        /// with a signature that does not hold.
        case fault(OverlayAddress, PeerFault)
    }

    public struct Counters: Sendable, Equatable, Codable {
        /// Pushes begun here (uploads) and taken from peers; stored here; receipts received and passed on.
        public var pushed = 0, taken = 0, stored = 0, receipted = 0, passed = 0
        public var attempts = 0, timeouts = 0, refusals = 0, failed = 0, badReceipts = 0, lateReceipts = 0, overloaded = 0
        public init() {}
    }

    private struct Attempt: Sendable, Equatable {
        var peer: OverlayAddress
        var ruid: UInt32
        var deadline: UInt64
    }

    private struct Pending: Sendable, Equatable {
        var chunk: Chunk
        var origin: Origin
        /// Peers tried, in order, and the peer that pushed to us (never handed it back).
        var skip: [OverlayAddress]
        var attempts = 0
        var attempt: Attempt?
        /// Hops the next peer may still forward.
        var hops: UInt8
        /// A push forwarded for a peer goes only to peers closer to the address than we are.
        var forwardOnly: Bool
    }

    public var base: OverlayAddress { table.base }
    public let limits: PushLimits
    /// Connected peers and our request IDs.
    private var table: ForwardingTable
    /// Connected peers, sorted.
    public var peers: [OverlayAddress] { table.peers }
    /// Open pushes by our key (uploads: the shell's id; peers' pushes: ids we make).
    private var pushes: [UInt64: Pending] = [:]
    private var nextKey: UInt64 = 1
    /// Request IDs in flight → the push.
    private var inFlight: [UInt32: UInt64] = [:]
    private var deadlines: [UInt64: UInt64] = [:]
    /// Pushes forwarded for each peer, open now.
    private var openByPeer: [OverlayAddress: Int] = [:]
    public private(set) var counters = Counters()
    public private(set) var nextDeadline: UInt64?

    public init(base: OverlayAddress, limits: PushLimits = PushLimits()) {
        table = ForwardingTable(base: base)
        var limits = limits
        limits.hopsMax = min(limits.hopsMax, UInt8(ProtocolLimits.pushHopsMax))
        self.limits = limits
    }

    public var openPushes: Int { pushes.count }

    // MARK: Peers

    public mutating func peerConnected(_ peer: OverlayAddress) {
        table.insert(peer)
    }

    /// The peer went away: pushes handed to it go to the next peer; pushes it made to us are
    /// dropped (there is no one to give the receipt to).
    public mutating func peerDisconnected(_ peer: OverlayAddress, depth: Int, now: UInt64) -> [Action] {
        defer { nextDeadline = deadlines.values.min() }
        table.remove(peer)
        var actions: [Action] = []
        for key in pushes.keys.sorted() {
            guard let pending = pushes[key] else { continue }
            if case .peer(peer, _) = pending.origin {
                end(key)
            } else if pending.attempt?.peer == peer {
                actions += attemptEnded(key, depth: depth, now: now)
            }
        }
        openByPeer[peer] = nil
        return actions
    }

    // MARK: Pushes

    /// An upload on this node committed `chunk`: push it toward its neighbourhood. `id` is the
    /// shell's, unique among its open uploads; `depth` is this node's depth now.
    public mutating func push(_ chunk: Chunk, id: UInt64, depth: Int, now: UInt64) -> [Action] {
        defer { nextDeadline = deadlines.values.min() }
        counters.pushed += 1
        guard pushes.count < limits.pushesMax else {
            counters.overloaded += 1
            return [.resolve(id: id, .failure(.overloaded))]
        }
        let key = makeKey()
        pushes[key] = Pending(chunk: chunk, origin: .local(id), skip: [], hops: limits.hopsMax, forwardOnly: false)
        return route(key, depth: depth, now: now)
    }

    /// A peer pushed `chunk` to us (the session re-hashed it) with `hops` left.
    public mutating func taken(_ chunk: Chunk, from peer: OverlayAddress, ruid: UInt32, hops: UInt8, depth: Int, now: UInt64) -> [Action] {
        defer { nextDeadline = deadlines.values.min() }
        counters.taken += 1
        if isStorer(chunk.address, depth: depth) {
            counters.stored += 1
            return [.store(chunk, origin: .peer(peer, ruid: ruid))]
        }
        guard hops > 0 else { return [.refuse(peer: peer, ruid: ruid, .hopLimit, "not in the chunk's neighbourhood, and no hop left")] }
        guard pushes.count < limits.pushesMax, openByPeer[peer, default: 0] < limits.openPerPeerMax else {
            counters.overloaded += 1
            return [.refuse(peer: peer, ruid: ruid, .overloaded, "too many pushes open")]
        }
        let key = makeKey()
        openByPeer[peer, default: 0] += 1
        pushes[key] = Pending(chunk: chunk, origin: .peer(peer, ruid: ruid), skip: [peer],
                              hops: min(hops, limits.hopsMax) - 1, forwardOnly: true)
        return route(key, depth: depth, now: now)
    }

    /// An upload no longer waits (its caller went away): the push goes on, unreported.
    public mutating func abandon(id: UInt64) {
        for (key, pending) in pushes where pending.origin == .local(id) {
            pushes[key]?.origin = .local(0)
        }
    }

    // MARK: Receipts

    /// A peer answered request `ruid` with a receipt whose signature the shell checked
    /// (`signatureValid`) and whose key makes `storer`.
    public mutating func receipted(_ receipt: Receipt.Stored, storer: OverlayAddress, signatureValid: Bool,
                                   from peer: OverlayAddress, ruid: UInt32, depth: Int, now: UInt64) -> [Action] {
        defer { nextDeadline = deadlines.values.min() }
        guard let key = attemptKey(ruid, from: peer), let pending = pushes[key] else { return reply(ruid, from: peer) }
        guard receipt.address == pending.chunk.address, signatureValid else {
            counters.badReceipts += 1
            let why = receipt.address != pending.chunk.address
                ? "receipt names \(receipt.address.hex.prefix(16)), the push was \(pending.chunk.address.hex.prefix(16))"
                : "receipt for \(receipt.address.hex.prefix(16)) has a signature that does not hold"
            return [.fault(peer, .invalidReceipt(why))] + attemptEnded(key, depth: depth, now: now)
        }
        counters.receipted += 1
        end(key)
        switch pending.origin {
        case .local(let id):
            return id == 0 ? [] : [.resolve(id: id, .success(PushReceipt(receipt: receipt, storer: storer)))]
        case .peer(let p, let r):
            counters.passed += 1
            return [.pass(peer: p, ruid: r, receipt)]
        }
    }

    /// A peer refused request `ruid`: the next peer is tried.
    public mutating func refused(by peer: OverlayAddress, ruid: UInt32, depth: Int, now: UInt64) -> [Action] {
        defer { nextDeadline = deadlines.values.min() }
        guard let key = attemptKey(ruid, from: peer) else { return reply(ruid, from: peer) }
        counters.refusals += 1
        return attemptEnded(key, depth: depth, now: now)
    }

    /// Attempts past their deadline end; the next peer is tried.
    public mutating func tick(depth: Int, now: UInt64) -> [Action] {
        defer { nextDeadline = deadlines.values.min() }
        guard let earliest = nextDeadline, earliest <= now else { return [] }
        var actions: [Action] = []
        for key in deadlines.filter({ $0.value <= now }).keys.sorted() {
            counters.timeouts += 1
            actions += attemptEnded(key, depth: depth, now: now)
        }
        return actions
    }

    // MARK: Inside

    /// Whether this node is where `address` belongs (see the type's comment).
    public func isStorer(_ address: ChunkAddress, depth: Int) -> Bool {
        if depth > 0 && base.proximity(to: address) >= depth { return true }
        return !table.anyCloser(to: address)
    }

    private func attemptKey(_ ruid: UInt32, from peer: OverlayAddress) -> UInt64? {
        guard let key = inFlight[ruid], pushes[key]?.attempt?.peer == peer else { return nil }
        return key
    }

    private mutating func reply(_ ruid: UInt32, from peer: OverlayAddress) -> [Action] {
        if table.wasIssued(ruid) {
            counters.lateReceipts += 1
            return []
        }
        return [.fault(peer, .unknownRequest(RequestID(ruid)))]
    }

    private mutating func attemptEnded(_ key: UInt64, depth: Int, now: UInt64) -> [Action] {
        guard var pending = pushes[key] else { return [] }
        if let attempt = pending.attempt { inFlight[attempt.ruid] = nil }
        pending.attempt = nil
        pushes[key] = pending
        deadlines[key] = nil
        return tryNext(key, now: now)
    }

    /// An upload this node is the storer for ends here; anything else goes to the next peer.
    private mutating func route(_ key: UInt64, depth: Int, now: UInt64) -> [Action] {
        guard let pending = pushes[key] else { return [] }
        if case .local = pending.origin, isStorer(pending.chunk.address, depth: depth) {
            counters.stored += 1
            end(key)
            return [.store(pending.chunk, origin: pending.origin)]
        }
        return tryNext(key, now: now)
    }

    /// Hands the push to the closest peer not tried yet, or ends it.
    private mutating func tryNext(_ key: UInt64, now: UInt64) -> [Action] {
        guard var pending = pushes[key] else { return [] }
        let local: Bool
        if case .local = pending.origin { local = true } else { local = false }
        let attemptsMax = local ? limits.originAttemptsMax : limits.forwardAttemptsMax
        let candidate = pending.attempts < attemptsMax
            ? table.closest(to: pending.chunk.address, skipping: pending.skip, closerThanBase: pending.forwardOnly) : nil
        guard let peer = candidate else {
            counters.failed += 1
            end(key)
            switch pending.origin {
            case .local(let id):
                return id == 0 ? [] : [.resolve(id: id, .failure(.notReceipted(tried: pending.attempts)))]
            case .peer(let p, let r):
                return [.refuse(peer: p, ruid: r, .notStored, "no peer closer to the chunk gave a receipt (\(pending.attempts) tried)")]
            }
        }
        let ruid = table.issueRuid()
        let deadline = now + limits.attemptTimeoutMs(hops: pending.hops)
        pending.skip.append(peer)
        pending.attempts += 1
        pending.attempt = Attempt(peer: peer, ruid: ruid, deadline: deadline)
        pushes[key] = pending
        inFlight[ruid] = key
        deadlines[key] = deadline
        counters.attempts += 1
        return [.send(peer: peer, ruid: ruid, chunk: pending.chunk, hops: pending.hops)]
    }

    private mutating func end(_ key: UInt64) {
        guard let pending = pushes.removeValue(forKey: key) else { return }
        if let attempt = pending.attempt { inFlight[attempt.ruid] = nil }
        deadlines[key] = nil
        if case .peer(let p, _) = pending.origin, let open = openByPeer[p] {
            openByPeer[p] = open > 1 ? open - 1 : nil
        }
    }

    private mutating func makeKey() -> UInt64 {
        defer { nextKey += 1 }
        return nextKey
    }

    public func checkInvariants() {
        var open: [OverlayAddress: Int] = [:]
        var attempts = 0
        for (key, pending) in pushes {
            if case .peer(let p, _) = pending.origin {
                open[p, default: 0] += 1
                precondition(pending.skip.first == p, "push \(key) may go back to the peer that pushed it")
            }
            if let attempt = pending.attempt {
                attempts += 1
                precondition(pending.skip.contains(attempt.peer), "the peer tried is not in the skip list")
                precondition(inFlight[attempt.ruid] == key, "request \(attempt.ruid) not in flight for its push")
                precondition(deadlines[key] == attempt.deadline, "deadline of push \(key) differs from its attempt's")
            } else {
                precondition(deadlines[key] == nil, "a deadline without an attempt")
            }
        }
        precondition(inFlight.count == attempts, "\(inFlight.count) requests in flight for \(attempts) attempts")
        precondition(deadlines.count == attempts, "\(deadlines.count) deadlines for \(attempts) attempts")
        precondition(open == openByPeer, "open pushes per peer \(openByPeer), pushes say \(open)")
        precondition(pushes.count <= limits.pushesMax, "\(pushes.count) pushes open")
        precondition(nextDeadline == deadlines.values.min(), "nextDeadline is stale")
        table.checkInvariants()
    }
}
