import Locking
import Logging
import NIOCore
import ShoalCore
import ShoalStore
import ShoalWire

/// Limits of one peer session: the sync machine's (`PeerSync.Limits`) and the shell's own.
public struct SessionLimits: Sendable {
    public var sync = PeerSync.Limits()
    /// How often the machine's timers are checked.
    public var tickIntervalMs: UInt64 = 100
    /// A peer dropped for a protocol violation is refused for this long (kept in `peers`, so
    /// a restart does not forget it).
    public var banMs: UInt64 = 10 * 60_000
    /// How long a goodbye may wait for room in the peer's socket before the connection is
    /// closed without it: a peer that reads nothing must not keep its session open.
    public var goodbyeWriteMs: UInt64 = 2_000
    /// Connection events (connected, disconnected, dropped) logged in full per kind and 10 s;
    /// beyond it they are summed up (`ThrottledLog`).
    public static let eventLinesPerWindow = 20

    public init() {}
}

/// One connected peer: a thin shell around its `PeerSync` machine. It feeds the machine the
/// peer's messages, timer ticks, store commits and the supervisor's subscriptions, and carries
/// out what the machine decides (send, read the store, persist, release claims, close). It
/// makes no protocol decision of its own.
///
/// Events from outside the session (our bins grew, subscribe, cancel) go through a mailbox
/// that is filled without awaiting the session, so a peer whose socket is full slows only
/// its own session.
actor PeerSession {
    nonisolated let peer: PeerInfo
    private let context: NodeContext
    private let supervisor: Supervisor
    /// Where retrieval requests we do not serve from the store, and answers to ours, go.
    private let retrieval: RetrievalService
    /// Where peers' pushes and the receipts for ours go.
    private let push: PushService
    /// Where answers to the downloader's requests (request IDs with `DownloadService.ruidFlag`) go.
    private let downloads: DownloadService
    /// The peer's hive traffic: rate limits and which entries are worth passing on.
    private var hive = HiveMachine()
    private let outbound: NIOAsyncChannelOutboundWriter<Message>
    private let closeChannel: @Sendable () -> Void
    private var logger: Logger
    private var machine: PeerSync
    private var closing = false
    /// A goodbye is being written; no second one starts.
    private var sayingGoodbye = false
    private let mailbox = Locked(Mailbox())
    private let wake: AsyncStream<Void>.Continuation
    private let wakes: AsyncStream<Void>

    /// What other parts of the node asked of this session since it last looked.
    private struct Mailbox {
        /// Our bins that grew, with their newest cursor.
        var grown: [UInt8: UInt64] = [:]
        /// Subscription changes not yet applied, the last word per bin (true: subscribe), so
        /// a session stuck on a full socket holds at most 32 whatever the supervisor decides.
        var bins: [UInt8: Bool] = [:]
        var radius: Int?
        /// Messages to send (hive), at most `outgoingMax`; beyond it they are dropped.
        var outgoing: [Message] = []
        /// Faults of the peer that other parts of the node found (retrieval: a wrong chunk),
        /// at most `outgoingMax`.
        var faults: [PeerFault] = []
    }

    /// Messages waiting in the mailbox at most: a peer that reads nothing does not make the
    /// supervisor's announcements pile up.
    static let outgoingMax = 64

    enum Change: Sendable, Equatable {
        case subscribe([UInt8])
        case cancel([UInt8])
    }

    init(peer: PeerInfo, context: NodeContext, supervisor: Supervisor, retrieval: RetrievalService, push: PushService,
         downloads: DownloadService, outbound: NIOAsyncChannelOutboundWriter<Message>, close: @escaping @Sendable () -> Void) {
        self.downloads = downloads
        self.peer = peer
        self.context = context
        self.supervisor = supervisor
        self.retrieval = retrieval
        self.push = push
        self.outbound = outbound
        self.closeChannel = close
        machine = PeerSync(peer: peer.overlay, base: context.overlay, epoch: peer.epoch, limits: context.limits.sync,
                           now: context.clock.nowMs())
        var logger = context.logger
        logger[metadataKey: "peer.overlay"] = "\(peer.overlay.hex.prefix(16))"
        logger[metadataKey: "peer.address"] = "\(peer.remoteAddress)"
        self.logger = logger
        (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    private var now: UInt64 { context.clock.nowMs() }

    // MARK: The mailbox (never awaits the session)

    /// Our store grew: live requests of the peer waiting on these bins can be answered.
    nonisolated func binsGrew(_ cursors: [UInt8: UInt64]) {
        mailbox.withLock { box in
            for (bin, cursor) in cursors { box.grown[bin] = max(box.grown[bin] ?? 0, cursor) }
        }
        wake.yield()
    }

    /// Start or stop syncing bins of this peer (the supervisor's decisions).
    nonisolated func change(_ change: Change) {
        mailbox.withLock { box in
            switch change {
            case .subscribe(let bins): for bin in bins { box.bins[bin] = true }
            case .cancel(let bins): for bin in bins { box.bins[bin] = false }
            }
        }
        wake.yield()
    }

    /// Sends messages others composed (the supervisor's hive traffic).
    nonisolated func send(_ messages: [Message]) {
        mailbox.withLock { box in
            box.outgoing += messages.prefix(max(0, Self.outgoingMax - box.outgoing.count))
        }
        wake.yield()
    }

    /// The peer misbehaved in a part of the node outside this session (retrieval): the
    /// session's machine scores it, or drops it, as it would a fault it found itself.
    nonisolated func reportFault(_ fault: PeerFault) {
        mailbox.withLock { box in
            if box.faults.count < Self.outgoingMax { box.faults.append(fault) }
        }
        wake.yield()
    }

    nonisolated func radiusChanged(_ radius: Int) {
        mailbox.withLock { $0.radius = radius }
        wake.yield()
    }

    private func drainMailbox() async {
        let box = mailbox.withLock { box -> Mailbox in
            defer { box = Mailbox() }
            return box
        }
        if let radius = box.radius { machine.radiusChanged(radius) }
        let cancels = box.bins.filter { !$0.value }.keys.sorted(), subscribes = box.bins.filter(\.value).keys.sorted()
        if !cancels.isEmpty { await perform(machine.cancel(cancels, now: now)) }
        if !subscribes.isEmpty { await perform(machine.subscribe(subscribes, now: now)) }
        await send(box.outgoing)
        for fault in box.faults { await perform(machine.faultDetected(fault)) }
        if !box.grown.isEmpty {
            let cursors = box.grown.sorted { $0.key < $1.key }.map { (bin: $0.key, cursor: $0.value) }
            await perform(machine.binsGrew(cursors, now: now))
        }
    }

    // MARK: Running

    /// Runs the session until the connection ends: reads messages, drives timers, takes mail.
    func run(inbound: NIOAsyncChannelInboundStream<Message>) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await message in inbound {
                        await self.receive(message)
                        if await self.closing { break }
                    }
                } catch let error as WireError {
                    // Bytes that are no frame: as much a protocol violation as a bad message.
                    await self.malformedFrame("\(error)")
                } catch {
                    await self.log(.debug, "connection ended: \(error)")
                }
            }
            group.addTask {
                while await !self.closing {
                    try? await self.context.clock.sleep(untilMs: self.now + self.context.limits.tickIntervalMs)
                    await self.tick()
                }
            }
            group.addTask {
                for await _ in self.wakes {
                    if await self.closing { break }
                    await self.drainMailbox()
                }
            }
            await group.next()
            closing = true
            wake.finish()
            group.cancelAll()
        }
        await end()
    }

    private func log(_ level: Logger.Level, _ message: String) {
        logger.log(level: level, "\(message)")
    }

    /// Everything this session claimed is given up. The peer's score (and a ban, if a fault
    /// dropped it) goes to its `peers` record.
    private func end() async {
        await persistPeerRecord()
        await perform(machine.end())
        closeChannel()
    }

    /// Sends Goodbye and closes (graceful shutdown of the node, a drop, idleness).
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
        switch message {
        case .offeredHashes(let offer):
            // The machine asks, per address, whether we store it or another stream fetches it.
            let stored: Set<ChunkAddress>
            do {
                stored = Set(zip(offer.addresses, try context.store.has(offer.addresses)).filter(\.1).map(\.0))
            } catch {
                log(.error, "store read failed: \(error)")
                return
            }
            let inFlight = context.inFlight
            // Chunks the peer claims in an offer the machine takes (asked for, in range, not
            // stored here) are hints for the downloader, collected only while it waits for some.
            var claimed: [ChunkAddress] = []
            let hinting = downloads.waitingForChunks.withLock { $0 }
            await perform(machine.received(message, now: now) { address in
                if stored.contains(address) { return .stored }
                if hinting { claimed.append(address) }
                return inFlight.claim(address) ? .claimed : .inFlightElsewhere
            })
            downloads.offered(claimed, by: peer.overlay)
        case .streamInfoResponse(let response):
            await perform(machine.received(message, now: now))
            do {
                let records = try context.store.read { try $0.allIntervals(peer: peer.overlay) }
                var known: [UInt8: (epoch: UInt64, set: IntervalSet)] = [:]
                for (key, record) in records { known[key.bin] = (record.epoch, record.set) }
                await perform(machine.streamInfoReceived(response, known: known, now: now))
            } catch {
                log(.error, "cannot read intervals: \(error)")
                await goodbye(.shutdown, "store error")
            }
        default:
            await perform(machine.received(message, now: now))
        }
    }

    private func tick() async {
        await perform(machine.tick(now: now))
    }

    private func malformedFrame(_ text: String) async {
        await perform(machine.faultDetected(.malformedFrame(text)))
    }

    // MARK: Carrying out the machine's actions

    private func perform(_ actions: [PeerSync.Action]) async {
        var pending = actions[...]
        var messages: [Message] = []
        while let action = pending.popFirst() {
            switch action {
            case .send(let out):
                messages += out
            case .answerStreamInfo(let bins):
                messages.append(.streamInfoResponse(context.streamInfo(bins: bins)))
            case .queryRange(let ruid, let bin, let from, let to, let limit):
                do {
                    let (entries, cursor) = try context.store.read { r in
                        (try r.range(bin: Int(bin), from: from, limit: limit).filter { $0.binID <= to }, try r.cursor(bin: Int(bin)))
                    }
                    pending += machine.rangeRead(ruid: ruid, entries: entries, cursor: cursor, now: now)
                } catch {
                    log(.error, "store read failed: \(error)")
                    messages.append(.streamError(StreamError(ruid: ruid, code: .overloaded, message: "store read failed")))
                }
            case .deliver(let ruid, let addresses):
                messages += deliver(ruid: ruid, addresses: addresses)
            case .persist(let persist):
                submit(persist)
            case .release(let addresses):
                context.inFlight.release(addresses)
            case .resetIntervals(let bins):
                var reset = StoreBatch()
                if let bins {
                    reset.binIntervalResets = bins.map { (peer.overlay, $0) }
                    log(.info, "peer's cursors went below what we synced of bins \(bins); those bins start over")
                } else {
                    reset.intervalResets = [peer.overlay]
                    log(.info, "peer epoch changed to \(machine.epoch); its intervals were reset")
                }
                // Submitted before any seal the new streams make: the writer commits in order.
                context.writer.submit(reset) { _ in }
            case .penalise(let fault):
                log(.info, "peer penalised: \(fault)")
            case .drop(let fault):
                await send(messages)
                messages = []
                await drop(fault)
            case .close(let reason, let text, let sayGoodbye):
                await send(messages)
                messages = []
                log(.info, "closing: \(reason) \(text)")
                if sayGoodbye {
                    await goodbye(reason, text)
                } else {
                    closing = true
                    closeChannel()
                }
            case .hive(let message):
                pending += await hiveReceived(message)
            case .retrieval(let message):
                let (answers, more) = await retrievalReceived(message)
                messages += answers
                pending += more
            }
        }
        machine.checkInvariants()
        await send(messages)
    }

    /// Hive: entries the peer's machine accepts go to the supervisor's address book; a request
    /// within the rate is answered with the peers the supervisor picks for this peer.
    private func hiveReceived(_ message: Message) async -> [PeerSync.Action] {
        switch message {
        case .peers(let peers):
            let outcome = hive.peersReceived(peers, from: peer.overlay, base: context.overlay, nowMs: now)
            hive.checkInvariants()
            if !outcome.accepted.isEmpty { await supervisor.learned(outcome.accepted) }
            return []
        case .peersRequest(let request):
            switch hive.requestReceived(request, nowMs: now) {
            case .answer(let limit):
                let candidates = await supervisor.hiveAnswer(for: peer.overlay, limit: limit)
                return [.send([.peers(HiveMachine.answer(candidates, limit: limit))])]
            case .fault(let fault):
                return machine.faultDetected(fault)
            }
        default:
            return []
        }
    }

    /// Retrieval, presence and push. A `retrieveRequest` is answered from our store when it
    /// holds the chunk, else handed to the node's retrieval (`RetrievalService`), which forwards
    /// it closer or refuses it; a `retrieveDelivery` answering one of ours is re-hashed here
    /// and handed over (a chunk that cannot be one is the peer's fault). A `wantHave` gets a
    /// `presence` bit for each address we store. A `pushChunk` is re-hashed and handed to the
    /// node's push (`PushService`), which stores it or forwards it closer; a `receipt` for one
    /// of ours goes there too. A `presence` answering the downloader's query (its request IDs
    /// have `DownloadService.ruidFlag`) goes to the downloader; any other is logged at debug and
    /// dropped, not a fault.
    private func retrievalReceived(_ message: Message) async -> (messages: [Message], actions: [PeerSync.Action]) {
        switch message {
        case .retrieveRequest(let request):
            do {
                if let chunk = try context.store.read({ try $0.rawChunk(request.address) }) {
                    context.chunksServed.add(1, ordering: .relaxed)
                    return ([.retrieveDelivery(RetrieveDelivery(ruid: request.ruid, outcome: .chunk(DeliveredChunk(span: chunk.span, payload: chunk.payload))))], [])
                }
            } catch {
                log(.error, "store read failed: \(error)")
                return ([.retrieveDelivery(RetrieveDelivery(ruid: request.ruid, outcome: .refused(Refusal(code: .overloaded, message: "store read failed"))))], [])
            }
            await retrieval.peerRequest(request, from: peer.overlay)
            return ([], [])
        case .retrieveDelivery(let delivery):
            // Re-hashed here, whoever asked: a chunk that cannot be one is the peer's fault.
            var chunk: Chunk?
            if case .chunk(let delivered) = delivery.outcome {
                do {
                    chunk = try Chunk(span: delivered.span, payload: delivered.payload)
                } catch {
                    return ([], machine.faultDetected(.invalidChunk("retrieval delivery: \(error)")))
                }
            }
            // The downloader's request IDs have the top bit set; retrieval's do not.
            if delivery.ruid & DownloadService.ruidFlag != 0 {
                await downloads.answered(delivery.ruid, from: peer.overlay, chunk: chunk)
            } else if let chunk {
                await retrieval.peerDelivered(chunk, from: peer.overlay, ruid: delivery.ruid)
            } else if case .refused(let refusal) = delivery.outcome {
                await retrieval.peerRefused(refusal, from: peer.overlay, ruid: delivery.ruid)
            }
            return ([], [])
        case .wantHave(let want):
            do {
                return ([.presence(Presence(ruid: want.ruid, present: try context.store.has(want.addresses)))], [])
            } catch {
                // Presence has no refusal: the asker's timeout takes it for unanswered, which it is.
                log(.error, "store read failed: \(error)")
                return ([], [])
            }
        case .pushChunk(let pushed):
            let chunk: Chunk
            do {
                chunk = try Chunk(span: pushed.chunk.span, payload: pushed.chunk.payload)
            } catch {
                return ([], machine.faultDetected(.invalidChunk("pushed chunk: \(error)")))
            }
            await push.taken(chunk, from: peer.overlay, ruid: pushed.ruid, hops: pushed.hopsLeft)
            return ([], [])
        case .receipt(let receipt):
            await push.answered(receipt, from: peer.overlay)
            return ([], [])
        case .presence(let presence) where presence.ruid & DownloadService.ruidFlag != 0:
            // An answer to the downloader's query; one it no longer waits for is dropped.
            if await !downloads.presenceAnswered(presence, from: peer.overlay) {
                log(.debug, "dropped a presence answer to no query of ours out (ruid \(presence.ruid))")
            }
            return ([], [])
        default:
            log(.debug, "dropped an unasked \(message.type) (not an answer to a presence query of ours)")
            return ([], [])
        }
    }

    private func drop(_ fault: PeerFault) async {
        context.events.log("peer.dropped", level: .warning, "dropping peer for \(context.limits.banMs / 1000) s: \(fault)",
                           metadata: logger.handler.metadata)
        await goodbye(.protocolViolation, "\(fault)")
    }

    private func submit(_ persist: PeerSync.Persist) {
        var batch = StoreBatch(chunks: persist.chunks)
        if let range = persist.seal {
            batch.seals = [IntervalSeal(peer: peer.overlay, bin: persist.bin, epoch: persist.epoch, range: range, requires: persist.requires)]
        }
        context.writer.submit(batch) { result in
            Task { await self.persistDone(persist, result: result) }
        }
    }

    private func persistDone(_ persist: PeerSync.Persist, result: Result<BatchResult, StoreError>) async {
        switch result {
        case .success(let committed):
            context.chunksReceived.add(committed.stored.count + committed.duplicates, ordering: .relaxed)
            context.chunksDuplicate.add(committed.duplicates, ordering: .relaxed)
            context.committed(committed)
            await perform(machine.batchCommitted(persist, sealed: committed.unsealed.isEmpty, duplicates: committed.duplicates, now: now))
        case .failure(let error):
            log(.error, "store write failed: \(error)")
            await perform(machine.batchFailed(persist, now: now))
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
        return ChunkDelivery.frames(ruid: ruid, present: present, wanted: addresses.count)
    }

    // MARK: The peer's record

    /// Writes the peer's record: where it can be reached, when it was last seen, its score
    /// (added to what earlier sessions left) and, after a dropping fault, until when it is banned.
    func persistPeerRecord() async {
        let nowMs = context.clock.wallMs()
        do {
            let previous = try context.store.read { try $0.peer(peer.overlay) }
            var addresses = peer.listenAddresses.filter { !$0.hasSuffix(":0") }
            if peer.outbound && !addresses.contains(peer.remoteAddress) { addresses.insert(peer.remoteAddress, at: 0) }
            if addresses.isEmpty { addresses = previous?.addresses ?? [] }
            var record = PeerRecord(addresses: addresses, lastSeenMs: nowMs,
                                    score: (previous?.score ?? 0) + Int64(machine.score), banUntilMs: previous?.banUntilMs ?? 0)
            if machine.droppedFor != nil { record.banUntilMs = max(record.banUntilMs, nowMs + context.limits.banMs) }
            var batch = StoreBatch()
            batch.peerUpserts = [(peer.overlay, record)]
            _ = try await context.writer.apply(batch)
            machine.scoreRecorded()
        } catch {
            log(.error, "cannot record the peer: \(error)")
        }
    }

    // MARK: Status

    func snapshot() -> PeerStatus {
        PeerStatus(overlay: peer.overlay.hex, address: peer.remoteAddress, outbound: peer.outbound, epoch: machine.epoch,
                   bins: machine.binStatus, faults: machine.faults, score: machine.score,
                   serveWaitedMs: machine.counters.serveWaitedMs, historyRequestsAllowed: machine.historyAllowed,
                   deliveryRate: Int(machine.deliveryRate), lateReplies: machine.counters.lateReplies,
                   penalties: machine.counters.penalties, hive: hive.counters)
    }

    /// Whether a protocol fault ended (or is ending) this session.
    var droppedForFault: Bool { machine.droppedFor != nil }

    /// True when every subscribed bin's history is synced.
    func historySynced() -> Bool { machine.historySynced }
}
