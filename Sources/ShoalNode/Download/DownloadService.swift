import Locking
import Logging
import ShoalCore
import ShoalStore

/// The downloader on this node: a thin shell around the `DownloadMachine`. It feeds the machine
/// callers' downloads, peers' answers, connects and disconnects, store commits and timer ticks,
/// and carries out its actions: a request goes into the peer's session mailbox as a
/// `retrieveRequest` (request IDs with the top bit set, so the session routes the answer here
/// and not to retrieval); everything one event persists (chunks delivered, fetch entries,
/// download records) goes into one store batch, and only after that batch commits are stores
/// reported to the machine and progress published (persist first, then act).
///
/// After a restart `restore()` rebuilds the machine from `fetch` and `downloads`: what is
/// stored is not fetched again.
actor DownloadService: DeadlineTicking {
    /// Request IDs on the wire: the downloader's have the top bit set.
    static let ruidFlag: RequestID = 1 << 31

    private let context: NodeContext
    private let supervisor: Supervisor
    private var machine: DownloadMachine
    private var logger: Logger
    /// Chunks delivered and verified, waiting for the machine's `storeChunk`.
    private var delivered: [ChunkAddress: Chunk] = [:]
    /// Requests out, by wire request ID (the machine's ID with the flag).
    private var requests: [RequestID: FetchRequest] = [:]
    /// Downloads that ended since the node started, with how, for `status`.
    private var ended: [DownloadID: DownloadOutcome] = [:]
    /// Downloads the machine ended whose records are being committed: neither running nor
    /// ended yet for a caller, who waits the moment it takes.
    private var endingIDs = Set<DownloadID>()
    private var endedOrder: [DownloadID] = []
    private static let endedKept = 256
    var ticking = false
    private var restored = false
    /// Whether any chunk is in the fetch set, readable without the actor: commits (pull sync
    /// makes hundreds a second) tell the downloader of their chunks only while it waits for some.
    nonisolated let waitingForChunks = Locked(false)
    static let tickStepMs: UInt64 = 100

    init(context: NodeContext, supervisor: Supervisor, limits: DownloadLimits, seed: UInt64) {
        self.context = context
        self.supervisor = supervisor
        machine = DownloadMachine(limits: limits, seed: seed)
        logger = context.logger
    }

    private var now: UInt64 { context.clock.nowMs() }

    // MARK: Callers

    /// Starts downloading `addresses`; chunks already stored count as done at once. The
    /// download's record and its chunks' fetch entries commit before this returns.
    func start(_ id: DownloadID, addresses: [ChunkAddress], policy: DownloadPolicy, hints: [OverlayAddress]) async throws -> DownloadReport {
        await restoreOnce()
        let store = context.store
        let actions = try machine.start(id, addresses: addresses, policy: policy, hints: hints, createdMs: context.clock.wallMs(),
                                        now: now) { (try? store.has($0)) == true }
        ended[id] = nil
        await perform(actions)
        // A download of chunks all stored ends at once.
        return await status(id) ?? DownloadReport(id: id, status: nil, missing: [], outcome: .completed)
    }

    /// Cancels a download; chunks other downloads want are still fetched for them.
    func cancel(_ id: DownloadID) async -> Bool {
        await restoreOnce()
        guard machine.status(of: id) != nil else { return false }
        await perform(machine.cancel(id, now: now))
        return true
    }

    /// A live download's status, or how an ended one ended.
    func status(_ id: DownloadID) async -> DownloadReport? {
        await restoreOnce()
        var waited = 0
        while endingIDs.contains(id) && waited < 5_000 {
            try? await Task.sleep(for: .milliseconds(1))
            waited += 1
        }
        if let status = machine.status(of: id) {
            return DownloadReport(id: id, status: status, missing: machine.missing(of: id, limit: DownloadReport.missingListed), outcome: nil)
        }
        if let outcome = ended[id] { return DownloadReport(id: id, status: nil, missing: [], outcome: outcome) }
        // Ended before a restart: the store's record says how (without the chunks it missed).
        guard let record = try? context.store.read({ try $0.download(id.key) }) else { return nil }
        switch record.state {
        case .done: return DownloadReport(id: id, status: nil, missing: [], outcome: .completed)
        case .failed:
            let missing = Int(record.chunksTotal - min(record.chunksTotal, record.chunksDone))
            return DownloadReport(id: id, status: nil, missing: [], outcome: .failed(missing: [], missingCount: missing))
        case .active, .paused: return nil
        }
    }

    func list() async -> [DownloadReport] {
        await restoreOnce()
        var reports: [DownloadReport] = []
        for id in machine.downloadIDs {
            if let status = machine.status(of: id) { reports.append(DownloadReport(id: id, status: status, missing: [], outcome: nil)) }
        }
        for id in endedOrder { if let outcome = ended[id] { reports.append(DownloadReport(id: id, status: nil, missing: [], outcome: outcome)) } }
        return reports
    }

    // MARK: Restart

    /// Rebuilds the machine from the store (once, before anything else touches it).
    func restoreOnce() async {
        guard !restored else { return }
        restored = true
        let store = context.store
        do {
            let (downloads, fetches) = try store.read { r in (try r.downloads(), try r.fetchSet()) }
            guard !downloads.isEmpty || !fetches.isEmpty else { return }
            let wall = context.clock.wallMs(), mono = now
            let savedDownloads = downloads.map { (id: DownloadID($0.root), entry: Self.entry($0.record)) }
            let savedFetches = fetches.map { (address: $0.address, entry: Self.entry($0.record, wallMs: wall, monoMs: mono)) }
            let actions = machine.restore(downloads: savedDownloads, fetches: savedFetches, now: mono) { (try? store.has($0)) == true }
            logger.info("downloads restored", metadata: ["downloads": "\(machine.downloadIDs.count)", "chunks": "\(machine.fetchSetCount)"])
            await perform(actions)
        } catch {
            logger.error("cannot restore downloads: \(error)")
        }
    }

    // MARK: Peers

    func peerConnected(_ peer: OverlayAddress) async {
        await restoreOnce()
        await perform(machine.peerConnected(peer, now: now))
    }

    func peerDisconnected(_ peer: OverlayAddress) async {
        // The machine counts them failed; their IDs go too (an answer on a later connection is not theirs).
        requests = requests.filter { $0.value.peer != peer }
        await perform(machine.peerDisconnected(peer, now: now))
    }

    /// An answer to one of our requests (`ruid` carries `ruidFlag`); the session re-hashed a
    /// delivered chunk. An answer for a request no longer out is ignored.
    func answered(_ ruid: RequestID, from peer: OverlayAddress, chunk: Chunk?) async {
        guard let request = requests[ruid], request.peer == peer else { return }
        requests[ruid] = nil
        guard let chunk else {
            await perform(machine.notFound(request.address, from: peer, now: now))
            return
        }
        guard chunk.address == request.address else {
            await perform(machine.wrongChunk(request.address, from: peer, got: chunk.address, now: now))
            return
        }
        delivered[chunk.address] = chunk
        await perform(machine.delivered(chunk.address, from: peer, now: now))
        // The machine asks to store what it still wants; anything else is let go.
        if delivered[chunk.address] != nil && machine.fetchEntry(chunk.address) == nil { delivered[chunk.address] = nil }
    }

    /// Chunks committed by anyone (pull sync too): downloads waiting for them complete.
    func stored(_ addresses: [ChunkAddress]) async {
        guard restored else { return }
        var actions: [DownloadAction] = []
        for address in addresses where machine.fetchEntry(address) != nil {
            actions += machine.stored(address, now: now)
        }
        if !actions.isEmpty { await perform(actions) }
    }

    // MARK: Carrying out the machine's actions

    /// Sends requests at once; collects what the event persists into one batch and, after it
    /// commits, reports the stores and publishes progress.
    private func perform(_ actions: [DownloadAction]) async {
        var pending = actions
        while !pending.isEmpty {
            var batch = StoreBatch()
            var storing: [ChunkAddress] = []
            var after: [DownloadAction] = []
            /// Downloads that ended: told only once the batch with their records committed.
            var endings: [(DownloadID, DownloadOutcome)] = []
            let wall = context.clock.wallMs(), mono = now
            for action in pending {
                switch action {
                case .request(let request):
                    let ruid = Self.ruidFlag | RequestID(truncatingIfNeeded: request.id & 0x7FFF_FFFF)
                    requests[ruid] = request
                    if let session = context.sessions.withLock({ $0[request.peer] }) {
                        session.send([.retrieveRequest(RetrieveRequest(ruid: ruid, address: request.address, hopsLeft: 0))])
                    } else {
                        requests[ruid] = nil
                        after += machine.requestFailed(request.address, peer: request.peer, now: mono)
                    }
                case .cancelRequest(let request):
                    requests = requests.filter { $0.value != request }
                case .dial(let peer):
                    // The supervisor dials it if its table knows an address; a connect comes
                    // back as `peerConnected`, and a dial that never reports times out in the machine.
                    if await !supervisor.dialKnown(peer) { after += machine.dialFailed(peer, now: mono) }
                case .storeChunk(let address):
                    if let chunk = delivered.removeValue(forKey: address) {
                        batch.chunks.append(chunk)
                        storing.append(address)
                    } else {
                        after += machine.storeFailed(address, now: mono)
                    }
                case .saveFetch(let address, let entry):
                    batch.fetchUpserts.append((address, Self.record(entry, wallMs: wall, monoMs: mono)))
                case .removeFetch(let address):
                    batch.fetchRemovals.append(address)
                case .saveDownload(let id, let entry):
                    batch.downloadUpserts.append((id.key, Self.record(entry)))
                case .removeDownload(let id):
                    batch.downloadRemovals.append(id.key)
                case .progress, .chunkFailed:
                    break
                case .finished(let id, let outcome):
                    endings.append((id, outcome))
                    endingIDs.insert(id)
                case .fault(let peer, let fault):
                    context.sessions.withLock { $0[peer] }?.reportFault(fault)
                case .peerDropped(let peer):
                    logger.info("download peer dropped from every hint after staying silent", metadata: ["peer.overlay": "\(peer.hex.prefix(16))"])
                }
            }
            machine.checkInvariants()
            pending = after
            if !batch.isEmpty {
                do {
                    let result = try await context.writer.apply(batch)
                    context.committed(result)
                    for address in storing { pending += machine.stored(address, now: now) }
                } catch {
                    // Once per batch while the disk is full or failing: throttled.
                    context.events.log("download.storeFailed", level: .error, "download store write failed: \(error)")
                    for address in storing { pending += machine.storeFailed(address, now: now) }
                }
            }
            for (id, outcome) in endings {
                endingIDs.remove(id)
                remember(id, outcome)
                logger.info("download ended", metadata: ["download": "\(id.key.hex.prefix(16))", "outcome": "\(outcome)"])
            }
        }
        machine.checkInvariants()
        waitingForChunks.withLock { $0 = machine.fetchSetCount > 0 }
        startTicking()
    }

    private func remember(_ id: DownloadID, _ outcome: DownloadOutcome) {
        if ended[id] == nil { endedOrder.append(id) }
        ended[id] = outcome
        while endedOrder.count > Self.endedKept { ended[endedOrder.removeFirst()] = nil }
    }

    // MARK: Timers (`DeadlineTicking`)

    var clock: any ShoalClock { context.clock }
    var machineDeadline: UInt64? { machine.nextDeadline }

    func tick(now: UInt64) async {
        let actions = machine.tick(now: now)
        if !actions.isEmpty { await perform(actions) }
    }

    // MARK: Records

    /// A fetch entry as the store keeps it: one group (the first download wanting the chunk;
    /// `FetchRecord` holds one, decision 0025) and wall-clock times.
    static func record(_ entry: FetchEntry, wallMs: UInt64, monoMs: UInt64) -> FetchRecord {
        let next = entry.nextAttemptMs > monoMs ? wallMs + (entry.nextAttemptMs - monoMs) : 0
        return FetchRecord(attempts: entry.attempts, nextAttemptMs: next, group: entry.groups.first?.key, hints: entry.hints)
    }

    static func entry(_ record: FetchRecord, wallMs: UInt64, monoMs: UInt64) -> FetchEntry {
        let next = record.nextAttemptMs > wallMs ? monoMs + (record.nextAttemptMs - wallMs) : 0
        return FetchEntry(attempts: record.attempts, nextAttemptMs: next, groups: record.group.map { [DownloadID($0)] } ?? [],
                          hints: record.hints)
    }

    static func record(_ entry: DownloadEntry) -> DownloadRecord {
        // The two state enums share their raw values (`paused`, 1, is the store's alone).
        DownloadRecord(policy: entry.policy == .eagerPin ? .eagerPin : .onRead, state: DownloadRecord.State(rawValue: entry.state.rawValue) ?? .active,
                       chunksDone: entry.chunksDone, chunksTotal: entry.chunksTotal, createdMs: entry.createdMs)
    }

    static func entry(_ record: DownloadRecord) -> DownloadEntry {
        DownloadEntry(policy: record.policy == .eagerPin ? .eagerPin : .onRead, state: DownloadEntry.State(rawValue: record.state.rawValue) ?? .active,
                      chunksDone: record.chunksDone, chunksTotal: record.chunksTotal, createdMs: record.createdMs)
    }
}

/// A download as the API shows it.
public struct DownloadReport: Sendable, Equatable {
    /// Missing chunks listed at most, per report.
    public static let missingListed = 256
    public var id: DownloadID
    /// Nil once it ended.
    public var status: DownloadStatus?
    /// Chunks still to fetch (at most `missingListed`).
    public var missing: [ChunkAddress]
    /// How it ended; nil while it runs.
    public var outcome: DownloadOutcome?
}
