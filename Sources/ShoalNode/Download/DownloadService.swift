import Locking
import Logging
import ShoalCore
import ShoalStore

/// The downloader on this node: a thin shell around the `DownloadMachine`. It feeds the machine
/// callers' downloads, peers' answers, connects and disconnects, store commits and timer ticks,
/// and carries out its actions: a request goes into the peer's session mailbox as a
/// `retrieveRequest` (request IDs with the top bit set, so the session routes the answer here
/// and not to retrieval), and a presence query as a `wantHave` in the same way; offers peers
/// make in pull sync are hints (`offered`); everything one event persists (chunks delivered,
/// fetch entries, download records) goes into one store batch, and only after that batch
/// commits are stores reported to the machine and progress published (persist first, then act).
///
/// A caller's start and cancel return after their batch committed. Events from peers and
/// ticks hand their batch to the writer and return: the commit comes back as an event of its
/// own, and batches handed on while a commit runs go into the next one together. (A session
/// that waited for them read a peer's next answer only after two durable commits per chunk,
/// one after the other: 0.55 MB/s from four peers.) Chunks handed to the writer and not
/// committed yet are bounded (`uncommittedChunksMax`): beyond it, an answer waits for commits
/// before its session reads on.
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
    /// Presence queries out, by wire request ID (the machine's ID with the flag: the machine
    /// never gives a query and a request the same ID).
    private var presenceQueries: [RequestID: PresenceQuery] = [:]
    /// Offers being handed to the machine as hints (`offered`), at most `offerHintTasksMax`.
    private nonisolated let offerHintTasks = Locked(0)
    /// Beyond this many offers on their way to the machine, an offer's hints are let go: they
    /// are advice, and pull sync must not wait for the downloader.
    static let offerHintTasksMax = 64
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
    /// Delivered chunks handed to the writer whose commit has not come back, and the answers
    /// waiting for that number to fall below `uncommittedChunksMax`.
    private var uncommitted = 0
    private var commitWaiters: [CheckedContinuation<Void, Never>] = []
    /// About 4 MiB of payload. The machine keeps each peer's answers being stored within its
    /// request slots (`requestsPerPeerMax`, 8), so this holds only with more than 128 peers
    /// answering at once: it bounds what the downloader holds in memory then.
    static let uncommittedChunksMax = 1024

    /// How `perform` writes what an event persists.
    private enum Durability {
        /// Waits for the commit, and carries out what follows it before returning.
        case awaited
        /// Hands the batch to the writer and returns; the commit comes back to `committed`.
        case submitted
    }

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
        await perform(actions, .awaited)
        // A download of chunks all stored ends at once.
        return await status(id) ?? DownloadReport(id: id, status: nil, missing: [], outcome: .completed)
    }

    /// Cancels a download; chunks other downloads want are still fetched for them.
    func cancel(_ id: DownloadID) async -> Bool {
        await restoreOnce()
        guard machine.status(of: id) != nil else { return false }
        await perform(machine.cancel(id, now: now), .awaited)
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
            await perform(actions, .awaited)
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
        presenceQueries = presenceQueries.filter { $0.value.peer != peer }
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
        // The peer's session reads on unless the writer is this far behind.
        while uncommitted >= Self.uncommittedChunksMax {
            await withCheckedContinuation { commitWaiters.append($0) }
        }
    }

    /// A `presence` answer whose `ruid` carries `ruidFlag`. False when no query of ours to this
    /// peer is out under it (timed out, or never asked): the session drops it.
    func presenceAnswered(_ presence: Presence, from peer: OverlayAddress) async -> Bool {
        guard let query = presenceQueries[presence.ruid], query.peer == peer else { return false }
        presenceQueries[presence.ruid] = nil
        await perform(machine.presence(id: query.id, from: peer, bitvector: presence.bitvector, now: now))
        return true
    }

    /// A peer's pull-sync offer named these chunks (ones it did not find stored here). Called
    /// by its session in the offer's path, so it returns at once: nothing when no download
    /// waits for chunks, else the machine takes them as hints in a task of their own. The
    /// order of those tasks does not matter: a hint is advice, a hint for a chunk no longer
    /// wanted is ignored, and one from a peer that has disconnected meanwhile is let go
    /// (`hinted`). At most `offerHintTasksMax` are on their way; beyond that an offer's hints
    /// are let go.
    nonisolated func offered(_ addresses: [ChunkAddress], by peer: OverlayAddress) {
        guard !addresses.isEmpty, waitingForChunks.withLock({ $0 }) else { return }
        let admitted = offerHintTasks.withLock { tasks in
            guard tasks < Self.offerHintTasksMax else { return false }
            tasks += 1
            return true
        }
        guard admitted else { return }
        Task {
            await self.hinted(addresses, by: peer)
            self.offerHintTasks.withLock { $0 -= 1 }
        }
    }

    /// The peer claims these chunks: those in the fetch set take it as a hint. A peer with no
    /// session now (it disconnected since) is let go, or the machine would dial it.
    private func hinted(_ addresses: [ChunkAddress], by peer: OverlayAddress) async {
        guard restored, machine.fetchSetCount > 0, context.sessions.withLock({ $0[peer] }) != nil else { return }
        await perform(machine.hinted(addresses, by: peer, now: now))
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
    /// commits, reports the stores and publishes progress: before returning (`awaited`), or
    /// when the commit comes back (`submitted`, see `committed`).
    private func perform(_ actions: [DownloadAction], _ durability: Durability = .submitted) async {
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
                case .askPresence(let query):
                    let ruid = Self.ruidFlag | RequestID(truncatingIfNeeded: query.id & 0x7FFF_FFFF)
                    if let session = context.sessions.withLock({ $0[query.peer] }) {
                        presenceQueries[ruid] = query
                        session.send([.wantHave(WantHave(ruid: ruid, addresses: query.addresses))])
                    }
                    // Without a session the peer's disconnect is on its way, and ends the
                    // query in the machine; or the query times out.
                case .cancelPresence(let query):
                    presenceQueries = presenceQueries.filter { $0.value != query }
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
            pending = after
            guard !batch.isEmpty else {
                told(endings)
                continue
            }
            switch durability {
            case .awaited:
                let result: Result<BatchResult, StoreError>
                do {
                    result = .success(try await context.writer.apply(batch))
                } catch {
                    result = .failure(error)
                }
                pending += afterCommit(result, storing: storing)
                told(endings)
            case .submitted:
                uncommitted += storing.count
                let handed = storing, ended = endings
                context.writer.submit(batch) { result in
                    Task { await self.committed(result, storing: handed, endings: ended) }
                }
            }
        }
        checkInvariants()
        waitingForChunks.withLock { $0 = machine.fetchSetCount > 0 }
        startTicking()
    }

    /// A batch handed to the writer committed (or failed): the event that follows it.
    private func committed(_ result: Result<BatchResult, StoreError>, storing: [ChunkAddress],
                           endings: [(DownloadID, DownloadOutcome)]) async {
        uncommitted -= storing.count
        if uncommitted < Self.uncommittedChunksMax && !commitWaiters.isEmpty {
            let waiters = commitWaiters
            commitWaiters = []
            for waiter in waiters { waiter.resume() }
        }
        let actions = afterCommit(result, storing: storing)
        told(endings)
        if actions.isEmpty {
            waitingForChunks.withLock { $0 = machine.fetchSetCount > 0 }
        } else {
            await perform(actions)
        }
    }

    /// Downloads that ended, once the batch with their records committed: callers hear of them now.
    private func told(_ endings: [(DownloadID, DownloadOutcome)]) {
        for (id, outcome) in endings {
            endingIDs.remove(id)
            remember(id, outcome)
            logger.info("download ended", metadata: ["download": "\(id.key.hex.prefix(16))", "outcome": "\(outcome)"])
        }
    }

    /// Tells readers and sessions of a commit, then the machine of the chunks stored (or not).
    private func afterCommit(_ result: Result<BatchResult, StoreError>, storing: [ChunkAddress]) -> [DownloadAction] {
        var actions: [DownloadAction] = []
        switch result {
        case .success(let committed):
            context.committed(committed)
            for address in storing { actions += machine.stored(address, now: now) }
        case .failure(let error):
            // Once per batch while the disk is full or failing: throttled.
            context.events.log("download.storeFailed", level: .error, "download store write failed: \(error)")
            for address in storing { actions += machine.storeFailed(address, now: now) }
        }
        return actions
    }

    /// The machine's invariant check looks at every chunk of the fetch set (up to 262,144). Run
    /// after every event, it made a download's work grow with the square of its size: 86% of a
    /// downloading node's CPU at 10,000 chunks. The node runs it once the events since the last
    /// check add up to the fetch set's size over this, so each event pays for about this many
    /// entries (at 64 the checks still took half the CPU of a 60,000-chunk download); a fetch
    /// set of this many chunks or fewer is checked after every event. The machine's own tests
    /// check after every event.
    static let invariantEntriesPerEvent = 4
    private var eventsSinceCheck = 0
    /// Fetch-set entries the invariant checks looked at since the node started (for tests).
    private(set) var invariantEntriesChecked = 0

    /// After an event: the machine's invariants, when their turn has come.
    private func checkInvariants() {
        eventsSinceCheck += 1
        let size = machine.fetchSetCount
        guard eventsSinceCheck * Self.invariantEntriesPerEvent >= size else { return }
        eventsSinceCheck = 0
        invariantEntriesChecked += size
        machine.checkInvariants()
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
