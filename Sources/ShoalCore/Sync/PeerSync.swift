/// Everything the node decides about one connected peer, as a value: the bins we sync from it
/// (each a live stream and history windows, in request slots), the claims those streams hold,
/// how many history requests may be out at once (adapted to what the peer delivers), the
/// requests it makes of our store (`SyncServer`) and the budget we serve them from, its score
/// and faults, and liveness. Performs no I/O and reads no clock: each event takes `now`
/// (milliseconds of a monotonic clock) and returns actions the shell (`PeerSession`) carries
/// out. The supervisor decides which bins; this machine only syncs them.
///
/// Invariants (`checkInvariants`): every stream sits in its own slot and belongs to a
/// subscribed bin; live streams use slots 0…31 (the bin), history windows the slots above; no
/// more history windows are active than `historyAllowed`; a bin's history is done only when it
/// has no window left.
public struct PeerSync: Sendable {
    public struct Limits: Sendable, Equatable {
        /// History requests out at once, at most, and at the start (before the peer's delivery
        /// rate is known; each batch delivered then allows one more, see `slowStart`). Each is
        /// one offer of up to 256 chunks (1 MiB).
        public var historyStreamsMax = 64
        public var historyStreamsInitial = 4
        /// Ask for about this much of the peer's measured delivery rate at once (request
        /// pipelining: libtorrent keeps 3 s of the rate queued; TCP keeps a bandwidth-delay
        /// product). More only queues behind itself; less leaves the link idle between batches.
        public var queueTimeMs: UInt64 = 3_000
        /// How often the delivery rate is sampled.
        public var rateSampleMs: UInt64 = 1_000
        /// A request is late only when the peer has delivered nothing on this connection for
        /// this long: a slow peer that keeps delivering is slow, not unresponsive.
        public var stallTimeoutMs: UInt64 = 10_000
        /// A bin's history is split into windows of this many bin IDs, each its own stream, so
        /// a big bin is pulled in parallel.
        public var historyWindowIDs: UInt64 = 2048
        public var pingIntervalMs: UInt64 = 5_000
        public var idleTimeoutMs: UInt64 = 30_000
        /// Chunks served to this peer per second, at most (a bucket holding one second's worth).
        public var servedChunksPerSecondMax = 131_072
        public var requestsPerSecondMax = 2048
        public var requestsBurstMax = 1024
        public var streamInfoPerSecondMax = 16
        public var streamInfoBurstMax = 64
        /// Retrieval, presence and push requests a second from one peer (each asks for one
        /// chunk or one presence batch): 65,536 chunks a second is 268 MB/s, more than one
        /// peer's link carries; what a request costs us beyond a store read is bounded by the
        /// retrieval machine's per-peer limit.
        public var retrievalRequestsPerSecondMax = 65_536
        public var retrievalRequestsBurstMax = 16_384
        public var serverRequestsMax = 2 * Proximity.binCount + 8
        /// Request slots of a connection (the bits of a request ID above its sequence).
        public static let slotsMax = UInt32(1) << (32 - SyncStreamClient.ruidSequenceBits)
        public var client = SyncStreamClient.Limits()

        public init() {}
    }

    public enum Action: Equatable, Sendable {
        case send([Message])
        /// Answer the peer's stream-info request with our epoch and these bins' cursors.
        case answerStreamInfo([UInt8])
        /// Read entries of our `bin` with bin ID in `[from, to]`, at most `limit`, and its
        /// cursor; report with `rangeRead`.
        case queryRange(ruid: RequestID, bin: UInt8, from: UInt64, to: UInt64, limit: Int)
        /// Read these chunks and send them (`ChunkDelivery` frames); the serving budget is taken.
        case deliver(ruid: RequestID, addresses: [ChunkAddress])
        /// Store chunks (and a seal); report with `batchCommitted` or `batchFailed`.
        case persist(Persist)
        /// Claims released.
        case release([ChunkAddress])
        /// Forget what we synced of the peer's bins before persisting anything new: `nil` for
        /// every bin (its epoch changed), otherwise these (its cursor went below our intervals).
        case resetIntervals(bins: [UInt8]?)
        /// The peer is scored down (kept connected).
        case penalise(PeerFault)
        /// The peer is dropped: goodbye, close, ban.
        case drop(PeerFault)
        /// Close the connection with a goodbye (idle, or the peer said goodbye: `sayGoodbye` false).
        case close(Goodbye.Reason, String, sayGoodbye: Bool)
        /// Hive traffic for the supervisor.
        case hive(Message)
        /// Retrieval, presence and push traffic (`retrieveRequest`, `retrieveDelivery`,
        /// `wantHave`, `presence`, `pushChunk`, `receipt`): not pull sync, so this machine
        /// neither checks nor answers it; the shell hands it to the node's retrieval side.
        case retrieval(Message)
    }

    /// A store write: chunks of one stream, and the seal of the offer they complete.
    public struct Persist: Equatable, Sendable {
        public var slot: UInt32
        /// Which incarnation of the slot asked (a commit for an earlier one is ignored).
        public var generation: UInt64
        public var id: UInt64
        public var bin: UInt8
        public var epoch: UInt64
        public var chunks: [Chunk]
        public var seal: ClosedRange<UInt64>?
        public var requires: [ChunkAddress]
    }

    /// A bin we are subscribed to.
    public struct Subscription: Sendable, Equatable {
        public enum Phase: Sendable, Equatable {
            /// Asked the peer for the bin's cursor.
            case awaitingCursor
            /// Live stream running; history windows being handed out.
            case syncing(History)
        }

        public var phase: Phase
        public var status: BinSyncStatus
    }

    /// What is left of a bin's history: bin IDs `next…end`, minus what `known` covers.
    public struct History: Sendable, Equatable {
        public var end: UInt64
        public var next: UInt64
        public var known: IntervalSet
        public var width: UInt64
        public var active: Int
    }

    public let peer: OverlayAddress
    public let base: OverlayAddress
    public let limits: Limits
    public private(set) var epoch: UInt64
    /// The shallowest proximity (to us) of chunks we keep; offered chunks below it are not wanted.
    public private(set) var radius = 0
    public private(set) var subscriptions: [UInt8: Subscription] = [:]
    public private(set) var server: SyncServer
    private var streams: [UInt32: SyncStreamClient] = [:]
    /// Each stream's `nextDeadline`, kept beside the table: reading it from the table copies
    /// the stream, and `nextDeadline` needs every stream's after every event.
    private var streamDeadlines: [UInt32: UInt64] = [:]
    /// The last request sequence used per slot, across the streams that held it.
    private var slotSequence: [UInt32: RequestID] = [:]
    private var slotGeneration: [UInt32: UInt64] = [:]
    private var generationCounter: UInt64 = 0
    private var freeSlots: [UInt32] = []
    private var nextFreshSlot = UInt32(Proximity.binCount)
    /// History windows waiting for a turn: bins in round-robin order.
    private var historyActive = Set<UInt32>()
    private var historyCursor = 0
    /// How many history windows may be out now (adapted to the delivery rate).
    public private(set) var historyAllowed: Int
    /// Chunks per second the peer delivered (smoothed), 0 until measured.
    public private(set) var deliveryRate: Double = 0
    private var deliveredInSample = 0
    /// Chunks delivered toward the next slow-start step (`slowStart`).
    private var slowStartDelivered = 0
    private var sampleStartMs: UInt64
    private var sampleHadDemand = false
    private var lastProgressMs: UInt64
    private var lastHeardMs: UInt64
    private var lastPingMs: UInt64
    private var requestBudget: RequestBudget
    private var streamInfoBudget: RequestBudget
    private var retrievalBudget: RequestBudget
    private var serveTokens: Double
    private var serveToppedUpMs: UInt64
    private var deliveryQueue: [(ruid: RequestID, addresses: [ChunkAddress])] = []
    /// Since when the first queued delivery waits for the serving budget.
    private var serveBlockedSinceMs: UInt64?
    public private(set) var faults = 0
    public private(set) var score = 0
    public private(set) var droppedFor: PeerFault?
    public private(set) var closing = false

    public struct Counters: Equatable, Sendable {
        /// Replies to requests we had given up on (ignored).
        public var lateReplies = 0
        public var penalties = 0
        public var serveWaitedMs: UInt64 = 0
        /// History windows handed out; windows of a bin whose peer cursor went below our intervals.
        public var windowsStarted = 0
        public var cursorRegressions = 0
    }

    public private(set) var counters = Counters()

    public init(peer: OverlayAddress, base: OverlayAddress, epoch: UInt64, limits: Limits = Limits(), now: UInt64) {
        self.peer = peer
        self.base = base
        self.epoch = epoch
        self.limits = limits
        var serverLimits = SyncServer.Limits()
        serverLimits.requestsInFlightMax = limits.serverRequestsMax
        server = SyncServer(limits: serverLimits)
        requestBudget = RequestBudget(perSecond: limits.requestsPerSecondMax, burst: limits.requestsBurstMax)
        streamInfoBudget = RequestBudget(perSecond: limits.streamInfoPerSecondMax, burst: limits.streamInfoBurstMax)
        retrievalBudget = RequestBudget(perSecond: limits.retrievalRequestsPerSecondMax, burst: limits.retrievalRequestsBurstMax)
        serveTokens = Double(limits.servedChunksPerSecondMax)
        serveToppedUpMs = now
        historyAllowed = max(1, min(limits.historyStreamsInitial, limits.historyStreamsMax))
        sampleStartMs = now
        lastProgressMs = now
        lastHeardMs = now
        lastPingMs = now
        nextDeadline = computedNextDeadline
    }

    // MARK: Subscriptions (from the supervisor)

    /// Starts syncing `bins` of the peer (those not already subscribed): asks for their cursors.
    public mutating func subscribe(_ bins: [UInt8], now: UInt64) -> [Action] {
        defer { nextDeadline = computedNextDeadline }
        guard !closing else { return [] }
        let new = Set(bins.filter { Int($0) < Proximity.binCount && subscriptions[$0] == nil }).sorted()
        guard !new.isEmpty else { return [] }
        for bin in new {
            subscriptions[bin] = Subscription(phase: .awaitingCursor,
                                              status: BinSyncStatus(bin: Int(bin), historyEnd: 0, historyDone: false, liveFrom: 0))
        }
        return [.send([.streamInfoRequest(StreamInfoRequest(bins: new))])]
    }

    /// Stops syncing `bins`: their streams end and release their claims. What was sealed stays
    /// in the store, so a bin subscribed again resumes from its first gap.
    public mutating func cancel(_ bins: [UInt8], now: UInt64) -> [Action] {
        defer { nextDeadline = computedNextDeadline }
        var released: [ChunkAddress] = []
        for bin in Set(bins).sorted() where subscriptions[bin] != nil {
            subscriptions[bin] = nil
            for slot in streams.keys.sorted() where streams[slot]?.bin == bin {
                released += endStream(slot)
            }
        }
        var actions: [Action] = released.isEmpty ? [] : [.release(released)]
        actions += startHistory(now: now)
        return actions
    }

    /// Bins subscribed, sorted.
    public var subscribedBins: [UInt8] { subscriptions.keys.sorted() }

    /// The storage radius changed: offers below it are no longer wanted.
    public mutating func radiusChanged(_ radius: Int) {
        defer { nextDeadline = computedNextDeadline }
        self.radius = radius
    }

    /// True when every subscribed bin's history is synced.
    public var historySynced: Bool {
        !subscriptions.isEmpty && subscriptions.values.allSatisfy(\.status.historyDone)
    }

    private mutating func endStream(_ slot: UInt32) -> [ChunkAddress] {
        guard var stream = streams.removeValue(forKey: slot) else { return [] }
        streamDeadlines[slot] = nil
        slotSequence[slot] = stream.lastSequence
        var released: [ChunkAddress] = []
        for case .release(let addresses) in stream.cancel() { released += addresses }
        if historyActive.remove(slot) != nil {
            freeSlots.append(slot)
            if case .syncing(var history)? = subscriptions[stream.bin]?.phase {
                history.active -= 1
                subscriptions[stream.bin]?.phase = .syncing(history)
                historyPending = true
            }
        }
        return released
    }

    // MARK: Messages

    /// A message from the peer. Offers need the store's view of their addresses: `claim`
    /// answers for each (stored, claimed for this peer, fetched elsewhere).
    public mutating func received(_ message: Message, now: UInt64,
                                  claim: (ChunkAddress) -> ChunkClaim = { _ in .claimed }) -> [Action] {
        defer { nextDeadline = computedNextDeadline }
        guard !closing else { return [] }
        lastHeardMs = now
        switch message {
        case .retrieveRequest, .wantHave, .pushChunk:
            // Retrieval has a budget of its own: a downloader asks for a chunk per request.
            guard retrievalBudget.take(nowMs: now) else {
                return fault(.flooding("more than \(limits.retrievalRequestsPerSecondMax) retrieval requests a second"))
            }
        case .streamInfoRequest, .getRange, .ping:
            guard requestBudget.take(nowMs: now) else {
                return fault(.flooding("more than \(limits.requestsPerSecondMax) requests a second"))
            }
            if case .streamInfoRequest = message, !streamInfoBudget.take(nowMs: now) {
                return fault(.flooding("more than \(limits.streamInfoPerSecondMax) stream-info requests a second"))
            }
        default:
            break
        }
        switch message {
        case .streamInfoRequest(let request):
            return [.answerStreamInfo(request.bins)]
        case .streamInfoResponse:
            // Needs our intervals of the peer: the shell calls `streamInfoReceived`.
            return []
        case .getRange(let request):
            return server(server.getRangeReceived(request, now: now), now: now)
        case .wantedHashes(let want):
            return server(server.wantedReceived(want, now: now), now: now)
        case .offeredHashes(let offer):
            // A late offer still gets an answer (nothing wanted), so the peer unpins it at once;
            // an empty one ended its request on the peer's side already.
            let unwanted = Message.wantedHashes(WantedHashes(ruid: offer.ruid, wanted: offer.addresses.map { _ in false }))
            let (radius, base) = (self.radius, self.base)
            return route(offer.ruid, now: now, late: offer.addresses.isEmpty ? [] : [.send([unwanted])]) { s in
                s.offerReceived(offer, now: now) { address in
                    radius > 0 && address.proximity(to: base) < radius ? .notNeeded : claim(address)
                }
            }
        case .chunkDelivery(let delivery):
            return route(delivery.ruid, now: now, late: []) { s in s.chunksDelivered(delivery, now: now) }
        case .streamError(let error):
            return route(error.ruid, now: now, late: []) { s in s.streamErrorReceived(error, now: now) }
        case .ping(let nonce):
            return [.send([.pong(nonce: nonce)])]
        case .pong:
            return []
        case .goodbye(let goodbye):
            closing = true
            return [.close(goodbye.reason, goodbye.message, sayGoodbye: false)] + releaseAll()
        case .hello, .helloProof:
            return fault(.malformedRequest("handshake message after the handshake"))
        case .peersRequest, .peers:
            return [.hive(message)]
        case .retrieveRequest, .retrieveDelivery, .wantHave, .presence, .pushChunk, .receipt:
            return [.retrieval(message)]
        }
    }

    /// The peer's cursors, with what we synced of its bins before (per bin: epoch and set).
    public mutating func streamInfoReceived(_ response: StreamInfoResponse, known: [UInt8: (epoch: UInt64, set: IntervalSet)],
                                            now: UInt64) -> [Action] {
        defer { nextDeadline = computedNextDeadline }
        guard !closing else { return [] }
        var actions: [Action] = []
        var known = known
        if known.values.contains(where: { $0.epoch != response.epoch }) {
            // The peer lost its store since we synced: what we knew of its bins means nothing now.
            actions.append(.resetIntervals(bins: nil))
            known = [:]
        }
        epoch = response.epoch
        var regressed: [UInt8] = []
        for entry in response.cursors where Int(entry.bin) < Proximity.binCount {
            let bin = entry.bin
            guard var subscription = subscriptions[bin], case .awaitingCursor = subscription.phase else { continue }
            var intervals = known[bin]?.set ?? IntervalSet()
            if let covered = intervals.ranges.last?.upperBound, covered > entry.cursor {
                // Same store, fewer bin IDs (restored from an older backup): the IDs we sealed above
                // its cursor will name new chunks. Start the bin over.
                regressed.append(bin)
                intervals = IntervalSet()
            }
            subscription.status.historyEnd = entry.cursor
            subscription.status.liveFrom = entry.cursor + 1
            historyPending = true
            subscription.phase = .syncing(History(end: entry.cursor, next: 1, known: intervals,
                                                  width: max(limits.historyWindowIDs, entry.cursor / 3000 + 1), active: 0))
            subscriptions[bin] = subscription
            let slot = UInt32(bin)
            streamDeadlines[slot] = nil
            streams[slot] = SyncStreamClient(bin: bin, mode: .live(from: entry.cursor + 1), intervals: IntervalSet(), slot: slot,
                                             limits: limits.client, firstSequence: slotSequence[slot] ?? 0)
            slotGeneration[slot] = nextGeneration()
            actions += stream(slot, now: now) { s in s.start(now: now) }
            refreshHistoryDone(bin)
        }
        if !regressed.isEmpty {
            counters.cursorRegressions += regressed.count
            actions.insert(.resetIntervals(bins: regressed), at: 0)
        }
        actions += startHistory(now: now)
        return actions
    }

    /// Our bins grew (a commit stored chunks): waiting live requests of the peer are answered.
    public mutating func binsGrew(_ cursors: [(bin: UInt8, cursor: UInt64)], now: UInt64) -> [Action] {
        defer { nextDeadline = computedNextDeadline }
        guard !closing else { return [] }
        var actions: [Action] = []
        for (bin, cursor) in cursors {
            actions += server(server.binAdvanced(bin: bin, cursor: cursor, now: now), now: now)
        }
        return actions
    }

    /// The store's answer to `queryRange`.
    public mutating func rangeRead(ruid: RequestID, entries: [(binID: UInt64, address: ChunkAddress)], cursor: UInt64,
                                   now: UInt64) -> [Action] {
        defer { nextDeadline = computedNextDeadline }
        guard !closing else { return [] }
        return server(server.rangeRead(ruid: ruid, entries: entries, cursor: cursor, now: now), now: now)
    }

    /// A persist committed. `sealed` false: the store skipped the seal (a required chunk
    /// another stream fetches is not stored yet). `duplicates`: chunks it already held.
    public mutating func batchCommitted(_ persist: Persist, sealed: Bool, duplicates: Int, now: UInt64) -> [Action] {
        defer { nextDeadline = computedNextDeadline }
        subscriptions[persist.bin]?.status.duplicates += duplicates
        if sealed, let range = persist.seal { subscriptions[persist.bin]?.status.sealed += range.upperBound - range.lowerBound + 1 }
        guard slotGeneration[persist.slot] == persist.generation, streams[persist.slot] != nil else { return [] }
        // A window that completes frees its slot for the next.
        return stream(persist.slot, now: now) { s in s.batchCommitted(id: persist.id, sealed: sealed, now: now) } + startHistory(now: now)
    }

    public mutating func batchFailed(_ persist: Persist, now: UInt64) -> [Action] {
        defer { nextDeadline = computedNextDeadline }
        guard slotGeneration[persist.slot] == persist.generation, streams[persist.slot] != nil else { return [] }
        return stream(persist.slot, now: now) { s in s.batchFailed(id: persist.id, now: now) }
    }

    // MARK: Time

    /// Time passes: liveness, the server's timers, queued deliveries, the rate sample, streams due.
    public mutating func tick(now: UInt64) -> [Action] {
        defer { nextDeadline = computedNextDeadline }
        guard !closing else { return [] }
        if now - min(now, lastHeardMs) >= limits.idleTimeoutMs {
            closing = true
            return [.close(.idle, "no word from the peer for \(now - lastHeardMs) ms", sayGoodbye: true)] + releaseAll()
        }
        var actions: [Action] = []
        if now - min(now, lastHeardMs) >= limits.pingIntervalMs && now - min(now, lastPingMs) >= limits.pingIntervalMs {
            lastPingMs = now
            actions.append(.send([.ping(nonce: now)]))
        }
        actions += server(server.tick(now: now), now: now)
        actions += drainDeliveries(now: now)
        sampleRate(now: now)
        let stalled = now - min(now, lastProgressMs) >= limits.stallTimeoutMs
        for slot in streamsDue(at: now) {
            if !stalled, streams[slot]?.extendDeadline(now: now) == true {
                streamDeadlines[slot] = Self.deadline(of: &streams[slot]!)
                continue
            }
            actions += stream(slot, now: now) { s in s.tick(now: now) }
        }
        actions += startHistory(now: now)
        return actions
    }

    private func streamsDue(at now: UInt64) -> [UInt32] {
        streamDeadlines.filter { $0.value <= now }.keys.sorted()
    }

    /// Measures the delivery rate and sets how many history requests may be out: about
    /// `queueTimeMs` of the rate, never more than twice the last allowance (the rate measured
    /// while the allowance limited it says little about what the link could carry).
    /// Until the first rate sample, each offer batch's worth of chunks delivered allows one
    /// more history request (TCP's slow start: the window doubles every round trip while every
    /// request is answered). A fast peer fills the window within milliseconds instead of the
    /// first sample's second; a slow one delivers little before the sample, which then sets the
    /// window from the rate.
    private mutating func slowStart(delivered: Int) {
        guard delivered > 0, deliveryRate == 0, historyAllowed < limits.historyStreamsMax else { return }
        slowStartDelivered += delivered
        let batch = limits.client.offerBatchMax
        historyAllowed = min(limits.historyStreamsMax, historyAllowed + slowStartDelivered / batch)
        slowStartDelivered %= batch
    }

    private mutating func sampleRate(now: UInt64) {
        if historyActive.count >= historyAllowed || hasHistoryWaiting { sampleHadDemand = true }
        let elapsed = now - min(now, sampleStartMs)
        guard elapsed >= limits.rateSampleMs else { return }
        if sampleHadDemand {
            let sample = Double(deliveredInSample) * 1000 / Double(elapsed)
            deliveryRate = deliveryRate == 0 ? sample : (deliveryRate + sample) / 2
            let chunks = deliveryRate * Double(limits.queueTimeMs) / 1000
            let wanted = Int((chunks / Double(limits.client.offerBatchMax)).rounded(.up))
            historyAllowed = max(1, min(limits.historyStreamsMax, min(wanted, 2 * historyAllowed)))
        }
        deliveredInSample = 0
        sampleStartMs = now
        sampleHadDemand = false
    }

    /// The earliest time `tick` has work, if any (the shell may tick more often). Kept up to
    /// date by every event, so reading it is a load: a shell reads it after every event, and
    /// computing it walks every stream.
    public private(set) var nextDeadline: UInt64?

    private var computedNextDeadline: UInt64? {
        var earliest = lastHeardMs + limits.pingIntervalMs
        // The rate is sampled only while there is history to ask for: an idle peer needs no tick for it.
        if !historyActive.isEmpty || hasHistoryWaiting { earliest = min(earliest, sampleStartMs + limits.rateSampleMs) }
        if let d = server.nextDeadline { earliest = min(earliest, d) }
        for d in streamDeadlines.values { earliest = min(earliest, d) }
        if let first = deliveryQueue.first { earliest = min(earliest, serveToppedUpMs + serveWaitMs(first.addresses.count)) }
        return earliest
    }

    // MARK: Streams

    /// Routes a reply by its request ID: to the stream that waits for it; a reply to a request
    /// we gave up on (timed out, cancelled) is late and answered with `late`; a request ID we
    /// never used is a fault.
    private mutating func route(_ ruid: RequestID, now: UInt64, late: [Action],
                                _ event: (inout SyncStreamClient) -> [SyncStreamClient.Action]) -> [Action] {
        let slot = SyncStreamClient.slot(of: ruid)
        lastProgressMs = now
        // Asked in place: a copy of the stream taken out to ask would share its batch's buffers
        // with the table while the event changes them, and each change would copy them.
        if streams.index(forKey: slot) != nil, Self.expects(&streams[slot]!, ruid) {
            return stream(slot, now: now, event)
        }
        let issued = streams[slot]?.lastSequence ?? slotSequence[slot]
        if let issued, Self.isIssued(SyncStreamClient.sequence(of: ruid), upTo: issued) {
            counters.lateReplies += 1
            return late
        }
        return fault(.unknownRequest(ruid))
    }

    /// Whether `sequence` is one of the last half of the sequence space before `issued`
    /// (sequences wrap at 2^20).
    static func isIssued(_ sequence: RequestID, upTo issued: RequestID) -> Bool {
        guard sequence != 0 else { return false }
        let distance = (issued &- sequence) & SyncStreamClient.sequenceMask
        return distance < (SyncStreamClient.sequenceMask + 1) / 2
    }

    private mutating func stream(_ slot: UInt32, now: UInt64, _ event: (inout SyncStreamClient) -> [SyncStreamClient.Action]) -> [Action] {
        // In place (the dictionary's modify accessor): a copy taken out and written back would
        // share the stream's buffers with the table and copy them on the first write.
        // Everything read of the stream is read within the one access, for the same reason.
        func run(_ s: inout SyncStreamClient) -> (actions: [SyncStreamClient.Action], delivered: Int, offered: Int,
                                                   bin: UInt8, deadline: UInt64?, liveFrom: UInt64?) {
            let before = s.counters
            let actions = event(&s)
            s.checkInvariants()
            var liveFrom: UInt64?
            if case .live = s.mode { liveFrom = s.liveFrom }
            return (actions, s.counters.delivered - before.delivered, s.counters.offered - before.offered,
                    s.bin, s.nextDeadline, liveFrom)
        }
        guard streams.index(forKey: slot) != nil else { return [] }
        let r = run(&streams[slot]!)
        streamDeadlines[slot] = r.deadline
        deliveredInSample += r.delivered
        slowStart(delivered: r.delivered)
        subscriptions[r.bin]?.status.offered += r.offered
        return perform(slot: slot, bin: r.bin, liveFrom: r.liveFrom, r.actions, now: now)
    }

    /// A stream's `nextDeadline`, read in place.
    private static func deadline(of s: inout SyncStreamClient) -> UInt64? { s.nextDeadline }

    /// Whether a stream waits for a reply to `ruid`, read in place.
    private static func expects(_ s: inout SyncStreamClient, _ ruid: RequestID) -> Bool { s.expects(ruid) }

    private mutating func perform(slot: UInt32, bin: UInt8, liveFrom: UInt64?, _ actions: [SyncStreamClient.Action],
                                  now: UInt64) -> [Action] {
        var out: [Action] = []
        var messages: [Message] = []
        for action in actions {
            switch action {
            case .send(let message):
                messages.append(message)
                if case .wantedHashes(let w) = message {
                    subscriptions[bin]?.status.wanted += w.bitvector.reduce(0) { $0 + $1.nonzeroBitCount }
                }
            case .persist(let p):
                subscriptions[bin]?.status.delivered += p.chunks.count
                out.append(.persist(Persist(slot: slot, generation: slotGeneration[slot] ?? 0, id: p.id, bin: bin, epoch: epoch,
                                            chunks: p.chunks, seal: p.seal, requires: p.requires)))
            case .release(let addresses):
                out.append(.release(addresses))
            case .fault(let f):
                switch f {
                case .invalidChunk, .unsolicitedChunk, .malformedOffer: subscriptions[bin]?.status.invalid += 1
                default: break
                }
                if !messages.isEmpty { out.append(.send(messages)); messages = [] }
                out += fault(f)
            case .completed:
                _ = endStream(slot)
                refreshHistoryDone(bin)
            }
        }
        if let liveFrom, streams.index(forKey: slot) != nil { subscriptions[bin]?.status.liveFrom = liveFrom }
        if !messages.isEmpty { out.append(.send(messages)) }
        return out
    }

    private mutating func nextGeneration() -> UInt64 {
        generationCounter += 1
        return generationCounter
    }

    /// False once a scan found no bin with history left to hand out; set again by anything
    /// that can give a bin history (its cursor arriving, a window ending). Spares the scan,
    /// which `nextDeadline` and `startHistory` would otherwise make after every event.
    private var historyPending = true

    private var hasHistoryWaiting: Bool { historyPending && scanHistoryWaiting }

    private var scanHistoryWaiting: Bool {
        subscriptions.values.contains { subscription in
            guard case .syncing(let h) = subscription.phase else { return false }
            return h.known.firstGap(from: h.next).map { $0 <= h.end } ?? false
        }
    }

    /// Hands out history windows while fewer than `historyAllowed` are active, one bin after
    /// another (round robin), each window the next stretch of the bin with gaps.
    private mutating func startHistory(now: UInt64) -> [Action] {
        guard !closing, historyPending else { return [] }
        defer { if historyActive.count < historyAllowed && !scanHistoryWaiting { historyPending = false } }
        var actions: [Action] = []
        let bins = subscriptions.keys.sorted()
        guard !bins.isEmpty else { return [] }
        var idle = 0
        while historyActive.count < historyAllowed && idle < bins.count {
            historyCursor = (historyCursor + 1) % Proximity.binCount
            let bin = UInt8(historyCursor)
            guard case .syncing(var history)? = subscriptions[bin]?.phase,
                  let gap = history.known.firstGap(from: history.next), gap <= history.end,
                  let slot = takeSlot() else {
                if subscriptions[bin] != nil { idle += 1 }
                continue
            }
            idle = 0
            let end = min(history.end, gap + history.width - 1)
            var view = history.known
            if gap > 1 { view.insert(1...(gap - 1)) }
            history.next = end + 1
            history.active += 1
            subscriptions[bin]?.phase = .syncing(history)
            streamDeadlines[slot] = nil
            streams[slot] = SyncStreamClient(bin: bin, mode: .history(end: end), intervals: view, slot: slot,
                                             limits: limits.client, firstSequence: slotSequence[slot] ?? 0)
            slotGeneration[slot] = nextGeneration()
            historyActive.insert(slot)
            counters.windowsStarted += 1
            actions += stream(slot, now: now) { s in s.start(now: now) }
        }
        return actions
    }

    /// A free history slot (lowest first), or nil when all are taken.
    private mutating func takeSlot() -> UInt32? {
        if !freeSlots.isEmpty {
            freeSlots.sort()
            return freeSlots.removeFirst()
        }
        guard nextFreshSlot < Limits.slotsMax else { return nil }
        defer { nextFreshSlot += 1 }
        return nextFreshSlot
    }

    private mutating func refreshHistoryDone(_ bin: UInt8) {
        guard case .syncing(let history)? = subscriptions[bin]?.phase else { return }
        let remaining = history.known.firstGap(from: history.next).map { $0 <= history.end } ?? false
        subscriptions[bin]?.status.historyDone = history.active == 0 && !remaining
    }

    private mutating func releaseAll() -> [Action] {
        var released: [ChunkAddress] = []
        for slot in streams.keys.sorted() { released += endStream(slot) }
        return released.isEmpty ? [] : [.release(released)]
    }

    /// The session is over (connection closed): every claim is released.
    public mutating func end() -> [Action] {
        defer { nextDeadline = computedNextDeadline }
        closing = true
        return releaseAll()
    }

    // MARK: Serving

    private mutating func server(_ actions: [SyncServer.Action], now: UInt64) -> [Action] {
        var out: [Action] = []
        var messages: [Message] = []
        for action in actions {
            switch action {
            case .send(let message):
                messages.append(message)
            case .queryRange(let ruid, let bin, let from, let to, let limit):
                out.append(.queryRange(ruid: ruid, bin: bin, from: from, to: to, limit: limit))
            case .deliver(let ruid, let addresses):
                deliveryQueue.append((ruid, addresses))
            case .fault(let f):
                if !messages.isEmpty { out.append(.send(messages)); messages = [] }
                out += fault(f)
            }
        }
        server.checkInvariants()
        if !messages.isEmpty { out.append(.send(messages)) }
        return out + drainDeliveries(now: now)
    }

    private func serveWaitMs(_ count: Int) -> UInt64 {
        let rate = Double(limits.servedChunksPerSecondMax)
        let needed = min(Double(count), rate)
        return serveTokens >= needed ? 0 : UInt64(((needed - serveTokens) / rate * 1000).rounded(.up))
    }

    /// Deliveries go out in order while the serving budget holds them; the rest wait (for this
    /// peer only) until the bucket refills.
    private mutating func drainDeliveries(now: UInt64) -> [Action] {
        let rate = Double(limits.servedChunksPerSecondMax)
        var out: [Action] = []
        if rate > 0 {
            serveTokens = min(rate, serveTokens + Double(now - min(now, serveToppedUpMs)) * rate / 1000)
        }
        serveToppedUpMs = now
        while let first = deliveryQueue.first {
            let needed = min(Double(first.addresses.count), rate)
            if rate > 0 && serveTokens < needed {
                serveBlockedSinceMs = serveBlockedSinceMs ?? now
                break
            }
            if let since = serveBlockedSinceMs {
                counters.serveWaitedMs += now - min(now, since)
                serveBlockedSinceMs = nil
            }
            if rate > 0 { serveTokens -= needed }
            deliveryQueue.removeFirst()
            out.append(.deliver(ruid: first.ruid, addresses: first.addresses))
        }
        return out
    }

    // MARK: Faults

    private mutating func fault(_ f: PeerFault) -> [Action] {
        faults += 1
        score -= f.dropsPeer ? 10 : 1
        guard f.dropsPeer else {
            counters.penalties += 1
            return [.penalise(f)]
        }
        droppedFor = droppedFor ?? f
        closing = true
        return [.drop(f)] + releaseAll()
    }

    /// A fault the shell found (bytes that are no frame).
    public mutating func faultDetected(_ f: PeerFault) -> [Action] {
        defer { nextDeadline = computedNextDeadline }
        guard !closing else { return [] }
        return fault(f)
    }

    /// The score change since the last `scoreRecorded()` (written to the peer's record).
    public mutating func scoreRecorded() { score = 0 }

    // MARK: Status

    public var binStatus: [BinSyncStatus] { subscriptions.keys.sorted().compactMap { subscriptions[$0]?.status } }

    public var historyActiveCount: Int { historyActive.count }

    public func checkInvariants() {
        precondition(streamDeadlines.keys.allSatisfy { streams.index(forKey: $0) != nil }, "a deadline of a stream that ended")
        precondition(historyPending || !scanHistoryWaiting, "history waits, but is marked as done")
        precondition(nextDeadline == computedNextDeadline, "next deadline \(String(describing: nextDeadline)) is stale")
        server.checkInvariants()
        var activePerBin: [UInt8: Int] = [:]
        for (slot, stream) in streams {
            stream.checkInvariants()
            precondition(streamDeadlines[slot] == stream.nextDeadline, "stream \(slot)'s deadline is stale")
            precondition(subscriptions[stream.bin] != nil, "stream \(slot) of unsubscribed bin \(stream.bin)")
            switch stream.mode {
            case .live:
                precondition(slot == UInt32(stream.bin), "live stream of bin \(stream.bin) in slot \(slot)")
            case .history:
                precondition(slot >= UInt32(Proximity.binCount) && historyActive.contains(slot), "history stream in slot \(slot)")
                activePerBin[stream.bin, default: 0] += 1
            }
        }
        precondition(historyActive.count == activePerBin.values.reduce(0, +), "active history slots without streams")
        for (bin, subscription) in subscriptions {
            if case .syncing(let history) = subscription.phase {
                precondition(history.active == activePerBin[bin, default: 0], "bin \(bin): \(history.active) windows counted, \(activePerBin[bin, default: 0]) streams: \(streams.keys.sorted())")
                if subscription.status.historyDone { precondition(history.active == 0, "bin \(bin) done with windows active") }
            }
        }
        precondition(Set(freeSlots).isDisjoint(with: historyActive), "a free slot is in use")
    }
}
