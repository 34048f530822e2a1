/// Limits of retrieval on one node (Docs/Retrieval.md).
public struct RetrievalLimits: Sendable, Equatable {
    /// Peers asked, one after another, for one address before the fetch fails: a local caller's
    /// fetch (the origin), and one forwarded for a peer (which answers "don't have" after these,
    /// so the origin can try elsewhere within its own time).
    public var originAttemptsMax = 4
    public var forwardAttemptsMax = 2
    /// How long one attempt waits for its answer: `attemptBaseMs` plus `attemptPerHopMs` for
    /// each hop the asked peer may still forward. A forwarder's attempts end before the asker's
    /// (it has one hop less), so a dead end upstream comes back as an answer, not a timeout.
    public var attemptBaseMs: UInt64 = 1_000
    public var attemptPerHopMs: UInt64 = 500
    /// Hops a request may travel from its origin (the count goes on the wire and shrinks by one
    /// at each forward; a request that arrives with none left is answered from the store alone).
    public var hopsMax = UInt8(ProtocolLimits.retrieveHopsMax)
    /// Fetches open at once, at most (local and forwarded); beyond it a request is refused
    /// as overloaded at once.
    public var fetchesMax = 4_096
    /// Waiters on one fetch, at most (callers and peers asking for the same address).
    public var waitersPerFetchMax = 64
    /// Forwarded requests one peer may have open with us at once; beyond it its requests are
    /// refused as overloaded (a peer cannot make us hold unbounded state for it).
    public var openPerPeerMax = 256
    /// A forwarder keeps the chunks it passes on (a cache near the path). A local caller's
    /// chunk is the caller's to keep or not.
    public var keepForwarded = true

    public init() {}

    /// The wait for one attempt that lets the asked peer forward `hops` more times.
    public func attemptTimeoutMs(hops: UInt8) -> UInt64 { attemptBaseMs + attemptPerHopMs * UInt64(hops) }
}

/// Why a retrieval ended without the chunk.
public enum RetrievalFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// Every peer that could be asked was asked (or none was connected and closer).
    case notFound(asked: Int)
    /// The request came with no hop left and we do not hold the chunk.
    case hopLimit
    /// Too many fetches open, on this node or for this peer.
    case overloaded
    /// The asking peer is already on this address's path (a loop).
    case loop
    /// The caller stopped waiting (its task was cancelled). The machine never ends a fetch
    /// with this; the shell answers a cancelled caller with it.
    case cancelled

    public var description: String {
        switch self {
        case .notFound(let asked): asked == 0 ? "no peer to ask" : "not found (\(asked) peers asked)"
        case .hopLimit: "hop limit reached"
        case .overloaded: "too many retrievals open"
        case .loop: "the request came back along its own path"
        case .cancelled: "cancelled"
        }
    }
}

/// Forwarding Kademlia retrieval on one node, as a value: which peer to ask next for an
/// address, who waits for it, when an attempt has waited long enough, and who gets the answer.
/// Performs no I/O and reads no clock. The shell looks in the local store first and calls
/// `request` only on a miss; it re-hashes every chunk a peer sends and reports a wrong one with
/// `wrongChunk`.
///
/// - A fetch per address: everyone who asks for an address while it is fetched (local callers,
///   peers) waits on the same fetch and gets the same answer; one peer is asked at a time.
/// - The peer asked is the connected peer closest to the address (XOR) that has not been asked
///   for it yet (the skip list) and is not a waiter. While a peer waits on a fetch, only peers
///   closer to the address than this node are asked: each hop gets closer, so no request
///   waits on a path that leads back to it. A fetch only local callers wait on may ask any
///   peer; a peer that asks while it waits on a farther one is refused as a loop.
/// - An attempt ends with the chunk, a refusal, a timeout (`tick`), or the peer's disconnect;
///   then the next peer is asked, up to the attempt limit, after which every waiter is told.
/// - Request IDs are ours (per node, increasing); a reply with an ID we issued but no longer
///   wait for is late and ignored, one with an ID we never issued is the peer's fault.
///
/// Invariants (`checkInvariants`): each fetch has a waiter, at most one attempt in flight, and
/// its attempt's peer in its skip list; a fetch a peer waits on is forward-only; request IDs in
/// flight map to their fetches and back; per-peer open counts match the waiters; deadlines
/// match the attempts.
public struct Retrieval: Sendable {
    /// Who waits for an address.
    public enum Waiter: Sendable, Equatable, Hashable {
        /// A caller on this node (the API, the downloader), by the shell's id.
        case local(UInt64)
        /// A peer that asked us, by its request ID.
        case peer(OverlayAddress, ruid: UInt32)
    }

    public enum Action: Sendable, Equatable {
        /// Ask `peer` for `address`, letting it forward `hops` more times.
        case ask(peer: OverlayAddress, ruid: UInt32, address: ChunkAddress, hops: UInt8)
        /// Answer a peer's request with the chunk.
        case answer(peer: OverlayAddress, ruid: UInt32, chunk: Chunk)
        /// Answer a peer's request with "don't have".
        case refuse(peer: OverlayAddress, ruid: UInt32, failure: RetrievalFailure)
        /// A local caller's retrieval ended.
        case resolve(id: UInt64, Result<Chunk, RetrievalFailure>)
        /// Keep a copy of a chunk passed on (`RetrievalLimits.keepForwarded`).
        case keep(Chunk)
        /// The peer misbehaved: it answered with a request ID we never issued, or with a chunk
        /// that is not the one asked for.
        case fault(OverlayAddress, PeerFault)
    }

    public struct Counters: Sendable, Equatable, Codable {
        public var requested = 0, forwarded = 0, joined = 0, delivered = 0, failed = 0
        public var attempts = 0, timeouts = 0, refusals = 0, lateReplies = 0, loops = 0, overloaded = 0
        public init() {}
    }

    private struct Attempt: Sendable, Equatable {
        var peer: OverlayAddress
        var ruid: UInt32
        var deadline: UInt64
    }

    private struct Fetch: Sendable, Equatable {
        var waiters: [Waiter]
        /// Peers not to ask for this address: those asked, in order, and peers waiting on it
        /// (the skip list).
        var skip: [OverlayAddress] = []
        /// Peers we asked.
        var attempts = 0
        var attempt: Attempt?
        /// Hops the peer we ask may still forward.
        var hops: UInt8
        /// A fetch forwarded for peers only asks peers closer to the address than we are.
        var forwardOnly: Bool
        var startedMs: UInt64
    }

    public var base: OverlayAddress { table.base }
    public let limits: RetrievalLimits
    /// Connected peers (the candidates to ask) and our request IDs.
    private var table: ForwardingTable
    /// Connected peers, sorted.
    public var peers: [OverlayAddress] { table.peers }
    private var fetches: [ChunkAddress: Fetch] = [:]
    /// Request IDs in flight → the address asked.
    private var inFlight: [UInt32: ChunkAddress] = [:]
    /// Attempt deadlines by address, beside the fetches (read after every event).
    private var deadlines: [ChunkAddress: UInt64] = [:]
    /// Forwarded requests open per peer (waiters that are this peer).
    private var openByPeer: [OverlayAddress: Int] = [:]
    public private(set) var counters = Counters()
    /// The earliest attempt deadline, if an attempt is in flight.
    public private(set) var nextDeadline: UInt64?

    public init(base: OverlayAddress, limits: RetrievalLimits = RetrievalLimits()) {
        table = ForwardingTable(base: base)
        var limits = limits
        // More would not go on the wire.
        limits.hopsMax = min(limits.hopsMax, UInt8(ProtocolLimits.retrieveHopsMax))
        self.limits = limits
    }

    /// Addresses being fetched now.
    public var openFetches: Int { fetches.count }

    /// Whether `address` is being fetched.
    public func isFetching(_ address: ChunkAddress) -> Bool { fetches[address] != nil }

    // MARK: Peers

    public mutating func peerConnected(_ peer: OverlayAddress) {
        table.insert(peer)
    }

    /// The peer went away: its attempts fail over to the next peer, and its own requests are
    /// dropped (there is no one to answer).
    public mutating func peerDisconnected(_ peer: OverlayAddress, now: UInt64) -> [Action] {
        defer { nextDeadline = deadlines.values.min() }
        table.remove(peer)
        var actions: [Action] = []
        for address in fetches.keys.sorted() {
            guard var fetch = fetches[address] else { continue }
            let before = fetch.waiters.count
            fetch.waiters.removeAll { if case .peer(peer, _) = $0 { return true } else { return false } }
            if fetch.waiters.count != before { openByPeer[peer] = nil }
            fetches[address] = fetch
            if fetch.waiters.isEmpty {
                drop(address)
            } else if fetch.attempt?.peer == peer {
                actions += attemptEnded(address, now: now)
            }
        }
        openByPeer[peer] = nil
        return actions
    }

    // MARK: Requests

    /// Someone wants `address`, which the local store does not hold. A peer's request carries
    /// the hops it may still travel (`hops`, from the wire); a local one starts with `hopsMax`.
    public mutating func request(_ address: ChunkAddress, for waiter: Waiter, hops: UInt8? = nil, now: UInt64) -> [Action] {
        defer { nextDeadline = deadlines.values.min() }
        counters.requested += 1
        let asker: OverlayAddress?
        if case .peer(let p, _) = waiter { asker = p } else { asker = nil }
        if let asker, case .peer(_, let ruid) = waiter {
            if hops == 0 { return [.refuse(peer: asker, ruid: ruid, failure: .hopLimit)] }
            if openByPeer[asker, default: 0] >= limits.openPerPeerMax {
                counters.overloaded += 1
                return [.refuse(peer: asker, ruid: ruid, failure: .overloaded)]
            }
        }
        if var fetch = fetches[address] {
            if let asker, fetch.skip.contains(asker) {
                counters.loops += 1
                return refusal(waiter, .loop)
            }
            guard fetch.waiters.count < limits.waitersPerFetchMax, !fetch.waiters.contains(waiter) else {
                counters.overloaded += 1
                return refusal(waiter, .overloaded)
            }
            // A peer waits only on a fetch that moves toward the address. One a local caller began
            // may be asking a peer farther than this node, whose forward could come back to the
            // asker and wait on it: refused as a loop (the asker tries its next peer).
            if asker != nil, !fetch.forwardOnly {
                if let attempt = fetch.attempt, !attempt.peer.isCloser(to: address, than: base) {
                    counters.loops += 1
                    return refusal(waiter, .loop)
                }
                fetch.forwardOnly = true
            }
            counters.joined += 1
            fetch.waiters.append(waiter)
            // A local caller joins a forwarded fetch as it is, and a peer that joins a local
            // caller's fetch makes it forward-only: while a peer waits on it, only peers closer
            // than this node are asked (a farther one could send the request back up its own
            // path); the callers get the rest of their attempts once no peer waits (`askNext`).
            fetches[address] = fetch
            if let asker {
                openByPeer[asker, default: 0] += 1
                fetch.skip.append(asker)
                fetches[address] = fetch
            }
            return []
        }
        guard fetches.count < limits.fetchesMax else {
            counters.overloaded += 1
            return refusal(waiter, .overloaded)
        }
        // Hops on the wire count the forwards the receiver may still make: the origin grants
        // `hopsMax`, each forwarder one less than it was granted.
        let forwardHops = asker == nil ? limits.hopsMax : min(hops ?? 1, limits.hopsMax) - 1
        var fetch = Fetch(waiters: [waiter], hops: forwardHops, forwardOnly: asker != nil, startedMs: now)
        // The asker is never asked back.
        if let asker { fetch.skip.append(asker) }
        fetches[address] = fetch
        if let asker {
            openByPeer[asker, default: 0] += 1
            counters.forwarded += 1
        }
        return askNext(address, now: now)
    }

    /// A local caller no longer waits. The fetch goes on while anyone else waits for it.
    public mutating func cancel(id: UInt64, address: ChunkAddress) {
        defer { nextDeadline = deadlines.values.min() }
        guard var fetch = fetches[address] else { return }
        fetch.waiters.removeAll { $0 == .local(id) }
        fetches[address] = fetch
        if fetch.waiters.isEmpty { drop(address) }
    }

    // MARK: Replies

    /// A peer sent the chunk for request `ruid`; the shell re-hashed it (`chunk.address` is
    /// what the payload hashes to).
    public mutating func delivered(_ chunk: Chunk, from peer: OverlayAddress, ruid: UInt32, now: UInt64) -> [Action] {
        defer { nextDeadline = deadlines.values.min() }
        guard let address = attemptAddress(ruid, from: peer) else { return reply(ruid, from: peer) }
        guard chunk.address == address else {
            // The wrong chunk: the peer's fault, and the next peer is asked.
            return [.fault(peer, .invalidChunk("retrieval of \(address.hex.prefix(16)) answered with \(chunk.address.hex.prefix(16))"))]
                + attemptEnded(address, now: now)
        }
        inFlight[ruid] = nil
        let fetch = fetches.removeValue(forKey: address)!
        deadlines[address] = nil
        counters.delivered += 1
        var actions: [Action] = []
        var forwarded = false
        for waiter in fetch.waiters {
            switch waiter {
            case .local(let id):
                actions.append(.resolve(id: id, .success(chunk)))
            case .peer(let p, let r):
                forwarded = true
                release(p)
                actions.append(.answer(peer: p, ruid: r, chunk: chunk))
            }
        }
        if forwarded && limits.keepForwarded { actions.insert(.keep(chunk), at: 0) }
        return actions
    }

    /// A peer answered request `ruid` with "don't have" (or could not forward it): the next
    /// peer is asked.
    public mutating func refused(by peer: OverlayAddress, ruid: UInt32, now: UInt64) -> [Action] {
        defer { nextDeadline = deadlines.values.min() }
        guard let address = attemptAddress(ruid, from: peer) else { return reply(ruid, from: peer) }
        counters.refusals += 1
        return attemptEnded(address, now: now)
    }

    /// Attempts past their deadline end; the next peer is asked.
    public mutating func tick(now: UInt64) -> [Action] {
        defer { nextDeadline = deadlines.values.min() }
        guard let earliest = nextDeadline, earliest <= now else { return [] }
        var actions: [Action] = []
        for address in deadlines.filter({ $0.value <= now }).keys.sorted() {
            counters.timeouts += 1
            actions += attemptEnded(address, now: now)
        }
        return actions
    }

    // MARK: Inside

    /// The address request `ruid` asked `peer` for, if that attempt is still open.
    private func attemptAddress(_ ruid: UInt32, from peer: OverlayAddress) -> ChunkAddress? {
        guard let address = inFlight[ruid], fetches[address]?.attempt?.peer == peer else { return nil }
        return address
    }

    /// A reply to no open attempt: late if we issued its ID, the peer's fault if not.
    private mutating func reply(_ ruid: UInt32, from peer: OverlayAddress) -> [Action] {
        if table.wasIssued(ruid) {
            counters.lateReplies += 1
            return []
        }
        return [.fault(peer, .unknownRequest(RequestID(ruid)))]
    }

    /// The open attempt of `address` ended without the chunk: ask the next peer.
    private mutating func attemptEnded(_ address: ChunkAddress, now: UInt64) -> [Action] {
        guard var fetch = fetches[address] else { return [] }
        if let attempt = fetch.attempt { inFlight[attempt.ruid] = nil }
        fetch.attempt = nil
        fetches[address] = fetch
        deadlines[address] = nil
        return askNext(address, now: now)
    }

    /// Asks the closest peer not asked yet, or ends the fetch when there is none or the
    /// attempts are used up.
    private mutating func askNext(_ address: ChunkAddress, now: UInt64) -> [Action] {
        guard var fetch = fetches[address] else { return [] }
        let local = fetch.waiters.contains { if case .local = $0 { return true } else { return false } }
        let attemptsMax = local ? limits.originAttemptsMax : limits.forwardAttemptsMax
        var candidate = fetch.attempts < attemptsMax ? table.closest(to: address, skipping: fetch.skip, closerThanBase: fetch.forwardOnly) : nil
        var released: [Action] = []
        if candidate == nil && fetch.forwardOnly && local && fetch.attempts < attemptsMax {
            // Nobody closer is left for the peers that wait: they are told, and the fetch goes on
            // for the callers on this node, which may ask any peer (no peer's request can come
            // back up a path that no longer runs through here).
            for case .peer(let p, let r) in fetch.waiters {
                release(p)
                released.append(.refuse(peer: p, ruid: r, failure: .notFound(asked: fetch.attempts)))
            }
            fetch.waiters.removeAll { if case .peer = $0 { return true } else { return false } }
            fetch.forwardOnly = false
            fetch.hops = max(fetch.hops, limits.hopsMax)
            fetches[address] = fetch
            candidate = table.closest(to: address, skipping: fetch.skip, closerThanBase: false)
        }
        guard let peer = candidate else {
            fetches[address] = nil
            deadlines[address] = nil
            counters.failed += 1
            var actions: [Action] = []
            for waiter in fetch.waiters {
                if case .peer(let p, _) = waiter { release(p) }
                actions += refusal(waiter, .notFound(asked: fetch.attempts))
            }
            return released + actions
        }
        let ruid = table.issueRuid()
        let deadline = now + limits.attemptTimeoutMs(hops: fetch.hops)
        fetch.skip.append(peer)
        fetch.attempts += 1
        fetch.attempt = Attempt(peer: peer, ruid: ruid, deadline: deadline)
        fetches[address] = fetch
        inFlight[ruid] = address
        deadlines[address] = deadline
        counters.attempts += 1
        return released + [.ask(peer: peer, ruid: ruid, address: address, hops: fetch.hops)]
    }

    private func refusal(_ waiter: Waiter, _ failure: RetrievalFailure) -> [Action] {
        switch waiter {
        case .local(let id): [.resolve(id: id, .failure(failure))]
        case .peer(let p, let r): [.refuse(peer: p, ruid: r, failure: failure)]
        }
    }

    private mutating func release(_ peer: OverlayAddress) {
        guard let open = openByPeer[peer] else { return }
        openByPeer[peer] = open > 1 ? open - 1 : nil
    }

    /// The fetch ends with no one to tell (its waiters left); a reply to its attempt is late.
    private mutating func drop(_ address: ChunkAddress) {
        guard let fetch = fetches.removeValue(forKey: address) else { return }
        if let attempt = fetch.attempt { inFlight[attempt.ruid] = nil }
        deadlines[address] = nil
    }

    /// Request IDs 1…2³¹−1: the upper half is the downloader's, on the same connections.
    public static let ruidMax = ForwardingTable.ruidMax

    /// XOR distance, ordered as a 256-bit number (`Address32`'s order is big-endian); the
    /// machine compares with `Address32.isCloser(to:than:)`, which needs no distance value.
    public static func distance(_ a: Address32, _ b: Address32) -> Address32 {
        Address32(w0: a.w0 ^ b.w0, w1: a.w1 ^ b.w1, w2: a.w2 ^ b.w2, w3: a.w3 ^ b.w3)
    }

    public func checkInvariants() {
        var open: [OverlayAddress: Int] = [:]
        var attempts = 0
        for (address, fetch) in fetches {
            precondition(!fetch.waiters.isEmpty, "fetch \(address.hex.prefix(16)) has no waiter")
            precondition(fetch.waiters.count <= limits.waitersPerFetchMax, "fetch \(address.hex.prefix(16)) has \(fetch.waiters.count) waiters")
            precondition(Set(fetch.waiters).count == fetch.waiters.count, "a waiter twice on \(address.hex.prefix(16))")
            for case .peer(let p, _) in fetch.waiters { open[p, default: 0] += 1 }
            precondition(fetch.forwardOnly || !fetch.waiters.contains { if case .peer = $0 { true } else { false } },
                         "a peer waits on \(address.hex.prefix(16)), whose fetch may ask farther peers")
            if let attempt = fetch.attempt {
                attempts += 1
                precondition(fetch.skip.contains(attempt.peer), "the peer asked is not in the skip list")
                precondition(fetch.attempts >= 1, "an attempt not counted")
                precondition(inFlight[attempt.ruid] == address, "request \(attempt.ruid) not in flight for its fetch")
                precondition(deadlines[address] == attempt.deadline, "deadline of \(address.hex.prefix(16)) differs from its attempt's")
            } else {
                precondition(deadlines[address] == nil, "a deadline without an attempt")
            }
        }
        precondition(inFlight.count == attempts, "\(inFlight.count) requests in flight for \(attempts) attempts")
        precondition(deadlines.count == attempts, "\(deadlines.count) deadlines for \(attempts) attempts")
        precondition(open == openByPeer, "open requests per peer \(openByPeer), waiters say \(open)")
        precondition(fetches.count <= limits.fetchesMax, "\(fetches.count) fetches open")
        precondition(nextDeadline == deadlines.values.min(), "nextDeadline is stale")
        table.checkInvariants()
    }
}
