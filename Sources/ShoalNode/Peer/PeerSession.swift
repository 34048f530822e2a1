import Logging
import NIOCore
import ShoalCore
import ShoalStore
import ShoalWire

/// Limits of one peer session.
public struct SessionLimits: Sendable {
    /// History streams of one peer that run at once; the others wait their turn. Each holds at
    /// most one offer (128 chunks) in flight; at 16 the receiving node's group commits stayed
    /// near 200 chunks and two-node sync ran about 15% slower than at 64 (Docs/Performance.md).
    public var historyStreamsMax = 64
    /// A bin's history is split into windows of this many bin IDs, each its own stream, so a
    /// big bin (bin 0 holds half of a peer's chunks) is pulled in parallel.
    public var historyWindowIDs: UInt64 = 2048
    /// How often timers (offer and batch timeouts, back-offs, live idle) are checked.
    public var tickIntervalMs: UInt64 = 100
    /// A ping goes out after this long without hearing from the peer…
    public var pingIntervalMs: UInt64 = 5_000
    /// …and the connection is closed after this long without hearing anything.
    public var idleTimeoutMs: UInt64 = 30_000
    /// Chunks served to one peer per second, at most (a token bucket holding one second's
    /// worth). Beyond it, deliveries to that peer wait; other peers are not slowed. The default,
    /// 131,072 (512 MiB/s), is about twice what one peer pulls here at full speed.
    public var servedChunksPerSecondMax = 131_072
    /// A peer dropped for a protocol violation is refused for this long (kept in `peers`, so
    /// a restart does not forget it).
    public var banMs: UInt64 = 10 * 60_000
    /// How long a goodbye may wait for room in the peer's socket before the connection is
    /// closed without it: a peer that reads nothing must not keep its session open.
    public var goodbyeWriteMs: UInt64 = 2_000
    /// Connection events (connected, disconnected, dropped) logged in full per kind and 10 s;
    /// beyond it they are summed up (`ThrottledLog`).
    public static let eventLinesPerWindow = 20
    /// Requests (stream info, ranges, pings) one peer may send a second, and in one burst.
    /// An honest peer pulling at full speed sends about 500 range requests a second here (one
    /// per offer of up to 256 chunks, 1 MiB) and about 100 at once when it subscribes; beyond
    /// the budget the peer is dropped as flooding.
    public var requestsPerSecondMax = 2048
    public var requestsBurstMax = 1024
    /// Stream-info requests (each reads every bin's cursor) one peer may send a second, and in
    /// one burst: an honest peer sends one when it connects and again when its subscriptions
    /// change.
    public var streamInfoPerSecondMax = 16
    public var streamInfoBurstMax = 64
    /// Requests the server side accepts from one peer at once: a live and a history request
    /// per bin, plus slack.
    public var serverRequestsMax = 2 * Proximity.binCount + 8
    public var client = SyncStreamClient.Limits()

    public init() {}
}

/// One connected peer: owns the server side of its requests to us (offers and their pins),
/// the client streams we run against it (wants, claims), and the request-ID table that routes
/// responses to streams. Protocol decisions are made by `SyncServer` and `SyncStreamClient`;
/// this actor feeds them events and carries out their actions.
actor PeerSession {
    nonisolated let peer: PeerInfo
    private let context: NodeContext
    private let outbound: NIOAsyncChannelOutboundWriter<Message>
    private let closeChannel: @Sendable () -> Void
    private var logger: Logger
    private var server: SyncServer
    private var streams: [UInt32: SyncStreamClient] = [:]
    private var status: [Int: BinSyncStatus] = [:]
    private var peerEpoch: UInt64
    private var historyWaiting: [UInt32] = []
    private var historyActive = Set<UInt32>()
    /// History windows not yet completed, per bin.
    private var windowsLeft: [Int: Int] = [:]
    private var faults = 0
    private var score = 0
    /// Set when a fault dropped the peer: the ban is persisted as the session ends.
    private var bannedForFault: PeerFault?
    /// The serving budget: chunks we may still deliver now, and when it was last topped up.
    private var serveTokens: Double
    private var serveToppedUpMs: UInt64 = 0
    /// Milliseconds deliveries to this peer waited for the budget.
    private var serveWaitedMs: UInt64 = 0
    private var closing = false
    /// A goodbye is being written; no second one starts.
    private var sayingGoodbye = false
    /// Requests the peer may still send now (stream info, ranges, pings).
    private var requestBudget: RequestBudget
    private var streamInfoBudget: RequestBudget
    private var lastHeardMs: UInt64 = 0
    private var lastPingMs: UInt64 = 0
    private let clock = ContinuousClock()
    private let startedAt: ContinuousClock.Instant

    init(peer: PeerInfo, context: NodeContext, outbound: NIOAsyncChannelOutboundWriter<Message>,
         close: @escaping @Sendable () -> Void) {
        self.peer = peer
        self.context = context
        self.outbound = outbound
        self.closeChannel = close
        requestBudget = RequestBudget(perSecond: context.limits.requestsPerSecondMax, burst: context.limits.requestsBurstMax)
        streamInfoBudget = RequestBudget(perSecond: context.limits.streamInfoPerSecondMax, burst: context.limits.streamInfoBurstMax)
        self.peerEpoch = peer.epoch
        var limits = SyncServer.Limits()
        limits.requestsInFlightMax = context.limits.serverRequestsMax
        self.server = SyncServer(limits: limits)
        var logger = context.logger
        logger[metadataKey: "peer.overlay"] = "\(peer.overlay.hex.prefix(16))"
        logger[metadataKey: "peer.address"] = "\(peer.remoteAddress)"
        self.logger = logger
        self.startedAt = clock.now
        serveTokens = Double(context.limits.servedChunksPerSecondMax)
    }

    private var now: UInt64 {
        let elapsed = clock.now - startedAt
        return UInt64(elapsed.components.seconds) * 1000 + UInt64(elapsed.components.attoseconds / 1_000_000_000_000_000)
    }

    // MARK: Running

    /// Runs the session until the connection ends: reads messages, drives timers.
    func run(inbound: NIOAsyncChannelInboundStream<Message>) async {
        lastHeardMs = now
        await send([.streamInfoRequest(StreamInfoRequest(bins: (0..<UInt8(Proximity.binCount)).map { $0 }))])
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await message in inbound {
                        await self.receive(message)
                        if await self.closing { break }
                    }
                } catch let error as WireError {
                    // Bytes that are no frame: as much a protocol violation as a bad message.
                    await self.fault(.malformedFrame("\(error)"))
                } catch {
                    await self.log(.debug, "connection ended: \(error)")
                }
            }
            group.addTask {
                while await !self.closing {
                    try? await Task.sleep(for: .milliseconds(Int64(self.context.limits.tickIntervalMs)))
                    await self.tick()
                }
            }
            await group.next()
            closing = true
            group.cancelAll()
        }
        await end()
    }

    private func log(_ level: Logger.Level, _ message: String) {
        logger.log(level: level, "\(message)")
    }

    /// Everything this session claimed is given up; the node forgets it. The peer's score
    /// (and a ban, if a fault dropped it) goes to its `peers` record.
    private func end() async {
        await persistPeerRecord()
        for slot in streams.keys.sorted() {
            guard var stream = streams[slot] else { continue }
            let actions = stream.cancel()
            streams[slot] = stream
            for case .release(let addresses) in actions { context.inFlight.release(addresses) }
        }
        closeChannel()
    }

    /// Sends Goodbye and closes (graceful shutdown of the node).
    func goodbye(_ reason: Goodbye.Reason, _ message: String) async {
        // `closing` is set only once the goodbye is out: setting it earlier ends `run()` (its
        // timer task stops on it), which closes the channel under the waiting write.
        guard !closing && !sayingGoodbye else { return }
        sayingGoodbye = true
        // The write waits while the peer's socket is full; a peer that reads nothing would
        // hold the session open for ever, so the channel closes after `goodbyeWriteMs`
        // whether or not the goodbye went out (closing fails the waiting write).
        let close = closeChannel
        let deadline = Task {
            try await Task.sleep(for: .milliseconds(Int64(context.limits.goodbyeWriteMs)))
            close()
        }
        do {
            try await outbound.write(.goodbye(Goodbye(reason: reason, message: message)))
        } catch {
            log(.debug, "goodbye not sent: \(error)")
        }
        deadline.cancel()
        closing = true
        outbound.finish()
        closeChannel()
    }

    private func send(_ messages: [Message]) async {
        guard !messages.isEmpty, !closing else { return }
        do {
            try await outbound.write(contentsOf: messages)
        } catch {
            log(.debug, "write failed: \(error)")
            closing = true
            closeChannel()
        }
    }

    // MARK: Events

    func receive(_ message: Message) async {
        lastHeardMs = now
        switch message {
        case .streamInfoRequest, .getRange, .ping:
            guard requestBudget.take(nowMs: now) else {
                return await fault(.flooding("more than \(context.limits.requestsPerSecondMax) requests a second"))
            }
            if case .streamInfoRequest = message, !streamInfoBudget.take(nowMs: now) {
                return await fault(.flooding("more than \(context.limits.streamInfoPerSecondMax) stream-info requests a second"))
            }
        default:
            break
        }
        switch message {
        case .streamInfoRequest(let request):
            await send([.streamInfoResponse(context.streamInfo(bins: request.bins))])
        case .streamInfoResponse(let response):
            await subscribe(response)
        case .getRange(let request):
            await performServer(server.getRangeReceived(request, now: now))
        case .wantedHashes(let want):
            await performServer(server.wantedReceived(want, now: now))
        case .offeredHashes(let offer):
            await offerReceived(offer)
        case .chunkDelivery(let delivery):
            await onStream(delivery.ruid) { s, now in s.chunksDelivered(delivery, now: now) }
        case .streamError(let error):
            await onStream(error.ruid) { s, now in s.streamErrorReceived(error, now: now) }
        case .ping(let nonce):
            await send([.pong(nonce: nonce)])
        case .pong:
            break
        case .goodbye(let goodbye):
            log(.info, "peer said goodbye: \(goodbye.reason) \(goodbye.message)")
            closing = true
            closeChannel()
        case .hello, .helloProof:
            await fault(.malformedRequest("handshake message after the handshake"))
        case .peersRequest, .peers: break  // Hive: routed to the supervisor.
        }
    }

    private func tick() async {
        let now = self.now
        if now - lastHeardMs >= context.limits.idleTimeoutMs {
            log(.info, "no word from the peer for \(now - lastHeardMs) ms; closing")
            await goodbye(.idle, "idle")
            return
        }
        var messages: [Message] = []
        if now - lastHeardMs >= context.limits.pingIntervalMs && now - lastPingMs >= context.limits.pingIntervalMs {
            lastPingMs = now
            messages.append(.ping(nonce: now))
        }
        await send(messages)
        await performServer(server.tick(now: now))
        for slot in streamsDue(at: now) {
            await onSlot(slot) { s, now in s.tick(now: now) }
        }
    }

    /// Streams with a timer due. (Kept out of the async `tick`: Swift 6.3.1's optimizer crashes
    /// on an optional-chained `nextDeadline` inside an async loop's `where` clause.)
    private func streamsDue(at now: UInt64) -> [UInt32] {
        var due: [UInt32] = []
        for (slot, stream) in streams {
            if let deadline = stream.nextDeadline, deadline <= now { due.append(slot) }
        }
        return due.sorted()
    }

    /// Our store grew: live requests waiting on this bin can be answered.
    func binAdvanced(bin: UInt8, cursor: UInt64) async {
        await performServer(server.binAdvanced(bin: bin, cursor: cursor, now: now))
    }

    // MARK: Client streams

    private func subscribe(_ response: StreamInfoResponse) async {
        guard streams.isEmpty else { return }  // one subscription per connection
        peerEpoch = response.epoch
        do {
            let records = try context.store.read { try $0.allIntervals(peer: peer.overlay) }
            if records.contains(where: { $0.record.epoch != response.epoch }) {
                // The peer lost its store since we synced: what we knew of its bins means nothing now.
                var reset = StoreBatch()
                reset.intervalResets = [peer.overlay]
                _ = try await context.writer.apply(reset)
                log(.info, "peer epoch changed to \(response.epoch); its intervals were reset")
            }
            var known: [UInt8: IntervalSet] = [:]
            for (key, record) in records where record.epoch == response.epoch { known[key.bin] = record.set }
            // Slots: a bin's live stream is slot `bin`; history windows take slots from 32 up.
            var nextSlot = UInt32(Proximity.binCount)
            let slotsMax = UInt32(1) << (32 - SyncStreamClient.ruidSequenceBits)
            for entry in response.cursors where Int(entry.bin) < Proximity.binCount {
                let bin = entry.bin
                let intervals = known[bin] ?? IntervalSet()
                streams[UInt32(bin)] = SyncStreamClient(bin: bin, mode: .live(from: entry.cursor + 1), intervals: IntervalSet(),
                                                        slot: UInt32(bin), limits: context.limits.client)
                status[Int(bin)] = BinSyncStatus(bin: Int(bin), historyEnd: entry.cursor, historyDone: false, liveFrom: entry.cursor + 1)
                // Windows of the history that still have gaps; wider windows for huge bins, so
                // slots last (at most ~3000 windows per peer).
                let width = max(context.limits.historyWindowIDs, entry.cursor / 3000 + 1)
                var start: UInt64 = 1
                var windows = 0
                while start <= entry.cursor && nextSlot < slotsMax {
                    let end = min(entry.cursor, start + width - 1)
                    if !intervals.gaps(within: start...end).isEmpty {
                        // Everything before the window counts as done for this stream only:
                        // it seals nothing but the ranges it actually syncs.
                        var view = intervals
                        if start > 1 { view.insert(1...(start - 1)) }
                        streams[nextSlot] = SyncStreamClient(bin: bin, mode: .history(end: end), intervals: view,
                                                             slot: nextSlot, limits: context.limits.client)
                        historyWaiting.append(nextSlot)
                        nextSlot += 1
                        windows += 1
                    }
                    start = end + 1
                }
                windowsLeft[Int(bin)] = windows
                if windows == 0 { status[Int(bin)]?.historyDone = true }
            }
        } catch {
            log(.error, "cannot subscribe: \(error)")
            await goodbye(.shutdown, "store error")
            return
        }
        for slot in streams.keys.sorted() where slot < UInt32(Proximity.binCount) {
            await onSlot(slot) { s, now in s.start(now: now) }
        }
        await startWaitingHistory()
    }

    private func startWaitingHistory() async {
        while historyActive.count < context.limits.historyStreamsMax, !historyWaiting.isEmpty {
            let slot = historyWaiting.removeFirst()
            historyActive.insert(slot)
            await onSlot(slot) { s, now in s.start(now: now) }
        }
    }

    private func offerReceived(_ offer: OfferedHashes) async {
        let slot = SyncStreamClient.slot(of: offer.ruid)
        guard streams[slot] != nil else { return await fault(.unknownRequest(offer.ruid)) }
        let stored: [Bool]
        do {
            stored = try context.store.has(offer.addresses)
        } catch {
            log(.error, "store read failed: \(error)")
            return
        }
        let storedSet = Set(zip(offer.addresses, stored).filter(\.1).map(\.0))
        let inFlight = context.inFlight
        status[Int(streams[slot]!.bin)]?.offered += offer.addresses.count
        await onSlot(slot) { s, now in
            s.offerReceived(offer, now: now) { address in
                if storedSet.contains(address) { return .stored }
                return inFlight.claim(address) ? .claimed : .inFlightElsewhere
            }
        }
    }

    private func onStream(_ ruid: RequestID, _ event: (inout SyncStreamClient, UInt64) -> [SyncStreamClient.Action]) async {
        let slot = SyncStreamClient.slot(of: ruid)
        guard streams[slot] != nil else { return await fault(.unknownRequest(ruid)) }
        await onSlot(slot, event)
    }

    private func onSlot(_ slot: UInt32, _ event: (inout SyncStreamClient, UInt64) -> [SyncStreamClient.Action]) async {
        guard var stream = streams[slot] else { return }
        let actions = event(&stream, now)
        stream.checkInvariants()
        streams[slot] = stream
        await performClient(slot: slot, actions)
    }

    private func performClient(slot: UInt32, _ actions: [SyncStreamClient.Action]) async {
        var messages: [Message] = []
        guard let stream = streams[slot] else { return }
        let bin = Int(stream.bin)
        for action in actions {
            switch action {
            case .send(let message):
                messages.append(message)
                if case .wantedHashes(let w) = message {
                    status[bin]?.wanted += w.bitvector.reduce(0) { $0 + $1.nonzeroBitCount }
                }
            case .persist(let persist):
                status[bin]?.delivered += persist.chunks.count
                submit(persist, slot: slot, bin: UInt8(bin))
            case .release(let addresses):
                context.inFlight.release(addresses)
            case .fault(let fault):
                switch fault {
                case .invalidChunk, .unsolicitedChunk, .malformedOffer: status[bin]?.invalid += 1
                default: break
                }
                await send(messages)
                messages = []
                await self.fault(fault)
            case .completed:
                windowsLeft[bin, default: 1] -= 1
                if windowsLeft[bin] == 0 { status[bin]?.historyDone = true }
                historyActive.remove(slot)
                await startWaitingHistory()
            }
        }
        if let s = streams[slot], case .live = s.mode { status[bin]?.liveFrom = s.liveFrom }
        await send(messages)
    }

    private func submit(_ persist: SyncStreamClient.Persist, slot: UInt32, bin: UInt8) {
        var batch = StoreBatch(chunks: persist.chunks)
        if let range = persist.seal {
            batch.seals = [IntervalSeal(peer: peer.overlay, bin: bin, epoch: peerEpoch, range: range, requires: persist.requires)]
        }
        let id = persist.id
        context.writer.submit(batch) { result in
            Task { await self.persistDone(slot: slot, id: id, sealRange: persist.seal, result: result) }
        }
    }

    private func persistDone(slot: UInt32, id: UInt64, sealRange: ClosedRange<UInt64>?, result: Result<BatchResult, StoreError>) async {
        guard let bin = streams[slot].map({ Int($0.bin) }) else { return }
        switch result {
        case .success(let committed):
            status[bin]?.duplicates += committed.duplicates
            context.chunksReceived.add(committed.stored.count + committed.duplicates, ordering: .relaxed)
            context.chunksDuplicate.add(committed.duplicates, ordering: .relaxed)
            let sealed = committed.unsealed.isEmpty
            if sealed, let sealRange { status[bin]?.sealed += sealRange.upperBound - sealRange.lowerBound + 1 }
            await context.committed(committed)
            await onSlot(slot) { s, now in s.batchCommitted(id: id, sealed: sealed, now: now) }
        case .failure(let error):
            log(.error, "store write failed: \(error)")
            await onSlot(slot) { s, now in s.batchFailed(id: id, now: now) }
        }
    }

    // MARK: Server side

    private func performServer(_ actions: [SyncServer.Action]) async {
        var messages: [Message] = []
        var pending = actions
        while !pending.isEmpty {
            let action = pending.removeFirst()
            switch action {
            case .send(let message):
                messages.append(message)
            case .queryRange(let ruid, let bin, let from, let to, let limit):
                do {
                    let (entries, cursor) = try context.store.read { r in
                        (try r.range(bin: Int(bin), from: from, limit: limit).filter { $0.binID <= to }, try r.cursor(bin: Int(bin)))
                    }
                    pending += server.rangeRead(ruid: ruid, entries: entries, cursor: cursor, now: now)
                } catch {
                    log(.error, "store read failed: \(error)")
                    messages.append(.streamError(StreamError(ruid: ruid, code: .overloaded, message: "store read failed")))
                }
            case .deliver(let ruid, let addresses):
                if await !takeServeBudget(addresses.count) { return }
                messages += deliver(ruid: ruid, addresses: addresses)
            case .fault(let fault):
                await send(messages)
                messages = []
                await self.fault(fault)
            }
        }
        server.checkInvariants()
        await send(messages)
    }

    /// Takes `count` chunks from the serving budget, waiting (this peer only) until the bucket
    /// holds them. False when the session closed meanwhile.
    private func takeServeBudget(_ count: Int) async -> Bool {
        let rate = Double(context.limits.servedChunksPerSecondMax)
        guard rate > 0 else { return true }
        let needed = min(Double(count), rate)
        while true {
            let now = self.now
            serveTokens = min(rate, serveTokens + Double(now - serveToppedUpMs) * rate / 1000)
            serveToppedUpMs = now
            if serveTokens >= needed {
                serveTokens -= needed
                return true
            }
            let waitMs = UInt64(((needed - serveTokens) / rate * 1000).rounded(.up))
            serveWaitedMs += waitMs
            try? await Task.sleep(for: .milliseconds(Int64(waitMs)))
            if closing { return false }
        }
    }

    private func deliver(ruid: RequestID, addresses: [ChunkAddress]) -> [Message] {
        let chunks: [(span: UInt64, payload: [UInt8])?]
        do {
            chunks = try context.store.read { r in try addresses.map { try r.rawChunk($0) } }
        } catch {
            log(.error, "store read failed: \(error)")
            return [.streamError(StreamError(ruid: ruid, code: .overloaded, message: "store read failed"))]
        }
        let present = chunks.compactMap { $0 }.map { DeliveredChunk(span: $0.span, payload: $0.payload) }
        context.chunksServed.add(present.count, ordering: .relaxed)
        var messages: [Message] = []
        let frame = ProtocolLimits.deliveryChunksMax
        for start in stride(from: 0, to: present.count, by: frame) {
            messages.append(.chunkDelivery(ChunkDelivery(ruid: ruid, chunks: Array(present[start..<min(start + frame, present.count)]))))
        }
        if present.count < addresses.count {
            messages.append(.streamError(StreamError(ruid: ruid, code: .rangeEvicted,
                                                     message: "\(addresses.count - present.count) offered chunks are no longer stored")))
        }
        return messages
    }

    // MARK: Faults

    private func fault(_ fault: PeerFault) async {
        faults += 1
        score -= fault.dropsPeer ? 10 : 1
        if fault.dropsPeer {
            bannedForFault = bannedForFault ?? fault
            context.events.log("peer.dropped", level: .warning, "dropping peer for \(context.limits.banMs / 1000) s: \(fault)",
                               metadata: logger.handler.metadata)
            await goodbye(.protocolViolation, "\(fault)")
        } else {
            log(.info, "peer penalised: \(fault)")
        }
    }

    /// Writes the peer's record: where it can be reached, when it was last seen, its score
    /// (added to what earlier sessions left) and, after a dropping fault, until when it is banned.
    func persistPeerRecord() async {
        let nowMs = Store.wallClockMs()
        do {
            let previous = try context.store.read { try $0.peer(peer.overlay) }
            var addresses = peer.listenAddresses.filter { !$0.hasSuffix(":0") }
            if peer.outbound && !addresses.contains(peer.remoteAddress) { addresses.insert(peer.remoteAddress, at: 0) }
            if addresses.isEmpty { addresses = previous?.addresses ?? [] }
            var record = PeerRecord(addresses: addresses, lastSeenMs: nowMs,
                                    score: (previous?.score ?? 0) + Int64(score), banUntilMs: previous?.banUntilMs ?? 0)
            if bannedForFault != nil { record.banUntilMs = max(record.banUntilMs, nowMs + context.limits.banMs) }
            var batch = StoreBatch()
            batch.peerUpserts = [(peer.overlay, record)]
            _ = try await context.writer.apply(batch)
            score = 0  // now counted in the record
        } catch {
            log(.error, "cannot record the peer: \(error)")
        }
    }

    // MARK: Status

    func snapshot() -> PeerStatus {
        PeerStatus(overlay: peer.overlay.hex, address: peer.remoteAddress, outbound: peer.outbound, epoch: peerEpoch,
                   bins: status.keys.sorted().compactMap { status[$0] }, faults: faults, score: score,
                   serveWaitedMs: serveWaitedMs)
    }

    /// True when every history stream has finished (the peer's bins up to its cursors are ours).
    /// Whether a protocol fault ended (or is ending) this session.
    var droppedForFault: Bool { bannedForFault != nil }

    func historySynced() -> Bool {
        !status.isEmpty && status.values.allSatisfy(\.historyDone)
    }
}
