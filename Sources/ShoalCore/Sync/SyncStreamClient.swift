/// The client side of one pull-sync stream: one peer, one bin, either the history up to the
/// cursor the peer reported when we subscribed, or the live stream after it. Performs no I/O:
/// each event returns the actions the shell carries out, and progress advances only when a
/// store commit is reported back (`batchCommitted`).
public struct SyncStreamClient: Sendable {
    public enum Mode: Equatable, Sendable {
        /// Sync bin IDs up to `end` (the peer's cursor at subscription), gap by gap.
        case history(end: UInt64)
        /// Follow new bin IDs from `from` on, for as long as the stream runs.
        case live(from: UInt64)
    }

    public struct Limits: Equatable, Sendable {
        public var offerBatchMax = ProtocolLimits.offerBatchMax
        /// Chunks wanted from one offer must all arrive within this after the want was sent.
        public var batchTimeoutMs: UInt64 = 10_000
        /// An offer must answer a request within this (live requests wait longer: the server
        /// holds them up to its idle timeout).
        public var offerTimeoutMs: UInt64 = 10_000
        public var liveOfferTimeoutMs: UInt64 = 30_000
        /// A seal the store skipped (a chunk another stream fetches was not stored yet) is
        /// tried again alone, without asking the peer, after this, then twice as long, …, at
        /// most `resealAttemptsMax` times; then the range is asked again.
        public var resealDelayMs: UInt64 = 100
        public var resealAttemptsMax = 4
        /// Back-off before asking a range again after it could not be sealed.
        public var retryDelayMs: UInt64 = 250
        public var retryDelayMaxMs: UInt64 = 10_000
        /// However much the peer keeps delivering to its other streams (which extends this
        /// stream's deadline, see `extendDeadline`), a request older than this times out.
        public var requestAgeMaxMs: UInt64 = 120_000

        public init() {}
    }

    /// A store write the shell must perform; it reports back `batchCommitted` or `batchFailed`.
    public struct Persist: Equatable, Sendable {
        public var id: UInt64
        public var chunks: [Chunk]
        /// Set on the batch that completes an offer: seal `range` of the peer's bin, but only
        /// if every chunk in `requires` (fetched by other streams) is stored by then.
        public var seal: ClosedRange<UInt64>?
        public var requires: [ChunkAddress]
    }

    public enum Action: Equatable, Sendable {
        case send(Message)
        case persist(Persist)
        /// Claims this stream no longer holds (delivered and committed, or given up).
        case release([ChunkAddress])
        case fault(PeerFault)
        /// The history stream has synced everything up to its end.
        case completed
    }

    public enum State: Equatable, Sendable {
        /// Nothing requested. `start` or a back-off expiry sends the next request.
        case idle
        /// A request is out; no offer yet.
        case awaitingOffer(ruid: RequestID, from: UInt64, to: UInt64?, deadline: UInt64)
        /// An offer for `[range]` arrived. `outstanding` are wanted and not yet delivered;
        /// `pending` counts persists of delivered chunks not yet committed; `held` are
        /// delivered chunks kept back to go with the seal.
        case awaitingChunks(Batch)
        /// The batch that seals the offer is being committed.
        /// `requires`: chunks other streams fetch, which the seal needs stored; `attempt`: how
        /// often the seal was tried again alone.
        case sealing(id: UInt64, range: ClosedRange<UInt64>, requires: [ChunkAddress], attempt: Int)
        /// The store skipped the seal: a chunk it requires, which another stream fetches, was
        /// not stored yet. At `until` the seal alone is committed again, with
        /// no request to the peer: the other stream has usually stored the chunk by then.
        case awaitingRequired(range: ClosedRange<UInt64>, requires: [ChunkAddress], attempt: Int, until: UInt64)
        /// Waiting until `until` before asking again.
        case backingOff(until: UInt64)
        /// History fully synced.
        case done
    }

    public struct Batch: Equatable, Sendable {
        public var ruid: RequestID
        public var range: ClosedRange<UInt64>
        public var outstanding: Set<ChunkAddress>
        public var elsewhere: [ChunkAddress]
        public var pending: Set<UInt64>
        public var held: [Chunk]
        /// Every chunk delivered for this offer (persisted or held): claims to release at the end.
        public var delivered: [ChunkAddress]
        public var deadline: UInt64
    }

    public let bin: UInt8
    public let mode: Mode
    public let limits: Limits
    /// What this stream has sealed (for history: loaded from the store at subscription).
    public private(set) var intervals: IntervalSet
    public private(set) var state: State = .idle
    /// The next bin ID the live stream asks for.
    public private(set) var liveFrom: UInt64
    private let ruidBase: RequestID
    private var ruidCounter: RequestID
    /// When the request now out was sent (for `requestAgeMaxMs`).
    private var issuedAt: UInt64 = 0
    private var persistCounter: UInt64 = 0
    private var failures = 0

    /// Counters for the peer's status line.
    public struct Counters: Equatable, Sendable {
        /// Addresses offered; of those: wanted from this peer, already stored, fetched by another
        /// stream, and not wanted because they fall outside the node's storage radius.
        public var offered = 0, wanted = 0, alreadyStored = 0, elsewhere = 0, notNeeded = 0
        /// Chunks delivered; bin IDs sealed.
        public var delivered = 0, sealed: UInt64 = 0
    }

    public private(set) var counters = Counters()

    /// Request IDs of a stream are `slot << 20 | sequence`, so a connection can route a
    /// response to its stream by `ruid >> 20`; `slot` must be unique per connection.
    public static let ruidSequenceBits: RequestID = 20

    /// `firstSequence`: the last request sequence an earlier stream in the same slot used, so a
    /// reply to one of its requests is never mistaken for a reply to this stream's.
    public init(bin: UInt8, mode: Mode, intervals: IntervalSet, slot: UInt32, limits: Limits = Limits(),
                firstSequence: RequestID = 0) {
        precondition(slot < 1 << (32 - Self.ruidSequenceBits), "stream slot out of range")
        self.bin = bin
        self.mode = mode
        self.limits = limits
        self.intervals = intervals
        self.ruidBase = slot << Self.ruidSequenceBits
        self.ruidCounter = firstSequence & Self.sequenceMask
        if case .live(let from) = mode { liveFrom = from } else { liveFrom = 0 }
    }

    public static func slot(of ruid: RequestID) -> UInt32 { ruid >> ruidSequenceBits }
    public static let sequenceMask: RequestID = (1 << ruidSequenceBits) - 1
    public static func sequence(of ruid: RequestID) -> RequestID { ruid & sequenceMask }

    /// The sequence of the last request this stream sent (or `firstSequence`).
    public var lastSequence: RequestID { ruidCounter }

    private mutating func nextRUID() -> RequestID {
        ruidCounter = (ruidCounter + 1) & Self.sequenceMask
        return ruidBase | ruidCounter
    }

    /// Whether a reply under `ruid` is one this stream waits for now. A reply to an earlier
    /// request of the stream (one it gave up on) is late, not a fault: the shell ignores it.
    public func expects(_ ruid: RequestID) -> Bool {
        switch state {
        case .awaitingOffer(let r, _, _, _): return r == ruid
        case .awaitingChunks(let batch): return batch.ruid == ruid
        case .sealing: return sealingBatch?.ruid == ruid
        default: return false
        }
    }

    private mutating func nextPersistID() -> UInt64 {
        persistCounter += 1
        return persistCounter
    }

    // MARK: Events

    /// Sends the next request, if the stream is idle.
    public mutating func start(now: UInt64) -> [Action] {
        guard case .idle = state else { return [] }
        switch mode {
        case .history(let end):
            guard let gap = intervals.firstGap(from: 1), gap <= end else {
                state = .done
                return [.completed]
            }
            // Ask up to the end of this gap (or the history end), at most one batch worth.
            let gapEnd = intervals.gaps(within: gap...end).first?.upperBound ?? end
            let ruid = nextRUID()
            issuedAt = now
            state = .awaitingOffer(ruid: ruid, from: gap, to: gapEnd, deadline: now + limits.offerTimeoutMs)
            return [.send(.getRange(GetRange(ruid: ruid, bin: bin, from: gap, to: gapEnd, limit: UInt16(limits.offerBatchMax))))]
        case .live:
            let ruid = nextRUID()
            issuedAt = now
            state = .awaitingOffer(ruid: ruid, from: liveFrom, to: nil, deadline: now + limits.liveOfferTimeoutMs)
            return [.send(.getRange(GetRange(ruid: ruid, bin: bin, from: liveFrom, to: nil, limit: UInt16(limits.offerBatchMax))))]
        }
    }

    /// The peer's offer. `claim` asks the node-wide registry about each address.
    public mutating func offerReceived(_ offer: OfferedHashes, now: UInt64,
                                       claim: (ChunkAddress) -> ChunkClaim) -> [Action] {
        guard case .awaitingOffer(let ruid, let from, let to, _) = state, ruid == offer.ruid else {
            return [.fault(.unknownRequest(offer.ruid))]
        }
        if let problem = offerProblem(offer, from: from, to: to) {
            state = .idle
            return [.fault(.malformedOffer(problem))]
        }
        if offer.lastIndex < from {
            // Live: nothing new yet. Ask again.
            state = .idle
            return start(now: now)
        }
        counters.offered += offer.addresses.count
        var wanted: [Bool] = []
        var outstanding = Set<ChunkAddress>()
        var elsewhere: [ChunkAddress] = []
        wanted.reserveCapacity(offer.addresses.count)
        for address in offer.addresses {
            if outstanding.contains(address) {
                wanted.append(false)  // listed twice: want it once
                continue
            }
            switch claim(address) {
            case .claimed:
                wanted.append(true)
                outstanding.insert(address)
            case .stored:
                wanted.append(false)
                counters.alreadyStored += 1
            case .inFlightElsewhere:
                wanted.append(false)
                elsewhere.append(address)
                counters.elsewhere += 1
            case .notNeeded:
                wanted.append(false)
                counters.notNeeded += 1
            }
        }
        counters.wanted += outstanding.count
        let range = from...offer.lastIndex
        var batch = Batch(ruid: ruid, range: range, outstanding: outstanding, elsewhere: elsewhere,
                          pending: [], held: [], delivered: [], deadline: now + limits.batchTimeoutMs)
        // An offer of no addresses ended the request on the server already: nothing to answer.
        var actions: [Action] = offer.addresses.isEmpty ? [] : [.send(.wantedHashes(WantedHashes(ruid: ruid, wanted: wanted)))]
        if outstanding.isEmpty {
            actions += seal(&batch)
        } else {
            state = .awaitingChunks(batch)
        }
        return actions
    }

    private func offerProblem(_ offer: OfferedHashes, from: UInt64, to: UInt64?) -> String? {
        if offer.from != from { return "offer starts at \(offer.from), request at \(from)" }
        if let to, offer.lastIndex > to { return "offer ends at \(offer.lastIndex), beyond the requested \(to)" }
        if to != nil && offer.lastIndex < from { return "history offer ends at \(offer.lastIndex), before its start \(from)" }
        if offer.addresses.count > limits.offerBatchMax { return "\(offer.addresses.count) addresses, limit \(limits.offerBatchMax)" }
        if offer.lastIndex >= from && UInt64(offer.addresses.count) > offer.lastIndex - from + 1 {
            return "\(offer.addresses.count) addresses for \(offer.lastIndex - from + 1) bin IDs"
        }
        if offer.lastIndex < from && !offer.addresses.isEmpty { return "addresses in an empty offer" }
        return nil
    }

    /// Chunks delivered for the current offer. Each is re-hashed; one nobody asked for, or an
    /// invalid one, is a fault and nothing of this delivery is kept.
    public mutating func chunksDelivered(_ delivery: ChunkDelivery, now: UInt64) -> [Action] {
        guard case .awaitingChunks(var batch) = state, batch.ruid == delivery.ruid else {
            return [.fault(.unknownRequest(delivery.ruid))]
        }
        // The batch leaves `state` while it changes, so its sets and lists have one owner and
        // change in place (with `state` still holding them, the first removal copied the whole
        // set of outstanding addresses, once per frame). Every path below sets `state` again.
        state = .idle
        var chunks: [Chunk] = []
        chunks.reserveCapacity(delivery.chunks.count)
        for delivered in delivery.chunks {
            let chunk: Chunk
            do {
                chunk = try Chunk(span: delivered.span, payload: delivered.payload)
            } catch {
                // The frame's chunks taken off `outstanding` so far are still claimed by us.
                batch.delivered += chunks.map(\.address)
                return abandon(batch, fault: .invalidChunk("\(error)"), now: now)
            }
            guard batch.outstanding.remove(chunk.address) != nil else {
                batch.delivered += chunks.map(\.address)
                return abandon(batch, fault: .unsolicitedChunk(chunk.address), now: now)
            }
            chunks.append(chunk)
        }
        counters.delivered += chunks.count
        batch.delivered += chunks.map(\.address)
        batch.deadline = now + limits.batchTimeoutMs
        if batch.outstanding.isEmpty {
            batch.held += chunks
            if batch.pending.isEmpty { return seal(&batch) }
            state = .awaitingChunks(batch)
            return []
        }
        let id = nextPersistID()
        batch.pending.insert(id)
        state = .awaitingChunks(batch)
        return [.persist(Persist(id: id, chunks: chunks, seal: nil, requires: []))]
    }

    /// Sends the batch that completes the offer: the held chunks and the seal, together.
    private mutating func seal(_ batch: inout Batch) -> [Action] {
        let id = nextPersistID()
        state = .sealing(id: id, range: batch.range, requires: batch.elsewhere, attempt: 0)
        let persist = Persist(id: id, chunks: batch.held, seal: batch.range, requires: batch.elsewhere)
        sealingBatch = batch
        return [.persist(persist)]
    }

    /// The batch being sealed, kept for its claims.
    private var sealingBatch: Batch?

    /// A persist committed. `sealed` is false when the store skipped the seal because a
    /// chunk another stream was fetching is not stored yet.
    public mutating func batchCommitted(id: UInt64, sealed: Bool, now: UInt64) -> [Action] {
        switch state {
        case .awaitingChunks(var batch) where batch.pending.contains(id):
            state = .idle  // the batch has one owner while it changes (see `chunksDelivered`)
            batch.pending.remove(id)
            if batch.outstanding.isEmpty && batch.pending.isEmpty {
                return seal(&batch)
            }
            state = .awaitingChunks(batch)
            return []
        case .sealing(let sealingID, let range, let requires, let attempt) where sealingID == id:
            let batch = sealingBatch
            sealingBatch = nil
            var actions: [Action] = []
            if let batch, !batch.delivered.isEmpty { actions.append(.release(batch.delivered)) }
            guard sealed else {
                // A chunk another stream fetches is not stored yet: try the seal alone again
                // soon; after a few tries, ask for the range again (the other stream may have
                // given the chunk up).
                if !requires.isEmpty && attempt < limits.resealAttemptsMax {
                    let delay = limits.resealDelayMs << UInt64(min(attempt, 16))
                    state = .awaitingRequired(range: range, requires: requires, attempt: attempt + 1, until: now + delay)
                    return actions
                }
                failures += 1
                state = .backingOff(until: now + backoff())
                return actions
            }
            failures = 0
            intervals.insert(range)
            counters.sealed += range.upperBound - range.lowerBound + 1
            if case .live = mode { liveFrom = range.upperBound + 1 }
            state = .idle
            return actions + start(now: now)
        default:
            return []  // a commit of a batch this stream abandoned
        }
    }

    /// A persist failed (a store error): nothing is sealed; the range is asked again later.
    public mutating func batchFailed(id: UInt64, now: UInt64) -> [Action] {
        switch state {
        case .awaitingChunks(let batch) where batch.pending.contains(id):
            return abandon(batch, fault: nil, now: now)
        case .sealing(let sealingID, _, _, _) where sealingID == id:
            let batch = sealingBatch
            sealingBatch = nil
            failures += 1
            state = .backingOff(until: now + backoff())
            return batch.map { $0.delivered.isEmpty ? [] : [.release($0.delivered)] } ?? []
        default:
            return []
        }
    }

    public mutating func streamErrorReceived(_ error: StreamError, now: UInt64) -> [Action] {
        switch state {
        case .awaitingOffer(let ruid, _, _, _) where ruid == error.ruid:
            failures += 1
            state = .backingOff(until: now + backoff())
            return []
        case .awaitingChunks(let batch) where batch.ruid == error.ruid:
            return abandon(batch, fault: nil, now: now)
        default:
            return [.fault(.unknownRequest(error.ruid))]
        }
    }

    /// Time passes: offers and chunks that are late time out; back-offs expire.
    public mutating func tick(now: UInt64) -> [Action] {
        switch state {
        case .awaitingOffer(let ruid, _, _, let deadline) where now >= deadline:
            failures += 1
            state = .backingOff(until: now + backoff())
            return [.fault(.batchTimeout(ruid))]
        case .awaitingChunks(let batch) where now >= batch.deadline:
            return abandon(batch, fault: .batchTimeout(batch.ruid), now: now)
        case .backingOff(let until) where now >= until:
            state = .idle
            return start(now: now)
        case .awaitingRequired(let range, let requires, let attempt, let until) where now >= until:
            let id = nextPersistID()
            state = .sealing(id: id, range: range, requires: requires, attempt: attempt)
            return [.persist(Persist(id: id, chunks: [], seal: range, requires: requires))]
        default:
            return []
        }
    }

    /// The peer is making progress (delivering to this connection's other streams): a request
    /// of this one that is due is not late but queued behind them, so its deadline moves on —
    /// unless it is older than `requestAgeMaxMs`. True when the deadline moved.
    public mutating func extendDeadline(now: UInt64) -> Bool {
        guard now - min(now, issuedAt) < limits.requestAgeMaxMs else { return false }
        switch state {
        case .awaitingOffer(let ruid, let from, let to, _):
            let timeout = to == nil ? limits.liveOfferTimeoutMs : limits.offerTimeoutMs
            state = .awaitingOffer(ruid: ruid, from: from, to: to, deadline: now + timeout)
            return true
        case .awaitingChunks(var batch):
            batch.deadline = now + limits.batchTimeoutMs
            state = .awaitingChunks(batch)
            return true
        default:
            return false
        }
    }

    /// The stream ends (unsubscribed, or the peer went away): every claim is given up.
    public mutating func cancel() -> [Action] {
        var released: [ChunkAddress] = []
        switch state {
        case .awaitingChunks(let batch):
            released = batch.outstanding.sorted() + batch.delivered
        case .sealing:
            if let batch = sealingBatch { released = batch.delivered }
        default:
            break
        }
        sealingBatch = nil
        state = .done
        return released.isEmpty ? [] : [.release(released)]
    }

    /// Gives up the current offer without sealing: its claims are released (chunks already
    /// committed stay stored; the rest will be wanted again) and the range is asked again.
    private mutating func abandon(_ batch: Batch, fault: PeerFault?, now: UInt64) -> [Action] {
        failures += 1
        state = .backingOff(until: now + backoff())
        var actions: [Action] = []
        if let fault { actions.append(.fault(fault)) }
        let released = batch.outstanding.sorted() + batch.delivered
        if !released.isEmpty { actions.append(.release(released)) }
        return actions
    }

    private func backoff() -> UInt64 {
        let shift = UInt64(min(failures, 16))
        return min(limits.retryDelayMaxMs, limits.retryDelayMs << shift)
    }

    /// The next time `tick` has something to do, if any.
    public var nextDeadline: UInt64? {
        switch state {
        case .awaitingOffer(_, _, _, let deadline): return deadline
        case .awaitingChunks(let batch): return batch.deadline
        case .backingOff(let until): return until
        case .awaitingRequired(_, _, _, let until): return until
        default: return nil
        }
    }

    public func checkInvariants() {
        intervals.checkInvariants()
        switch state {
        case .awaitingChunks(let batch):
            precondition(!batch.outstanding.isEmpty || !batch.pending.isEmpty,
                         "awaiting chunks with nothing outstanding or pending: \(batch)")
            precondition(batch.range.lowerBound <= batch.range.upperBound)
            if case .history(let end) = mode { precondition(batch.range.upperBound <= end, "offer beyond history end") }
        case .awaitingRequired(_, let requires, let attempt, _):
            precondition(!requires.isEmpty && sealingBatch == nil, "waiting for nothing required, or holding claims")
            precondition(attempt >= 1 && attempt <= limits.resealAttemptsMax, "re-seal attempt \(attempt)")
        default:
            break
        }
    }
}
