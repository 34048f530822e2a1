/// The downloader's decisions, as a value: which chunks are wanted and by which downloads,
/// which peer is asked for which chunk and when, which hinted peer is dialled, how failures
/// back off, and when a download has completed or failed. Performs no I/O and reads no clock:
/// each event takes `now` (milliseconds of a monotonic clock) and returns the actions the
/// shell carries out. Randomness (retry jitter) comes from a seeded `SplitMix64`. No output
/// depends on the iteration order of a set or dictionary, so a seed and a sequence of events
/// give the same actions in every process.
///
/// - **Downloads** (intents) name chunks; several may want the same chunk, which is then
///   fetched once (one request at a time), and each download counts its own progress.
///   Cancelling one never cancels a chunk another still wants.
/// - **The fetch set** holds, per chunk, its downloads (groups), provider hints, attempts and
///   back-off, per peer asked: attempts and back-off (`DownloadLimits`).
/// - **Peers asked** for a chunk are, best first: peers that delivered chunks of one of its
///   downloads, peers that offered it or said they have it, peers a caller named, and the
///   connected peers closest to its address. Of those that can be asked now, the least busy.
/// - **Presence.** A chunk nobody can be asked for now goes into a presence query
///   (`askPresence`) to the closest connected peer not yet asked about it: at most
///   `presenceQueriesInFlightMax` queries out, one per peer, `presenceBatchMax` chunks each.
///   A yes makes the peer a confirmed hint; silence is the peer's silence, a malformed answer
///   its fault; a peer whose claims keep turning out false is not believed for a while.
/// - **A chunk completes** only on `stored`: the store commit that removed it from the fetch
///   set, whether the chunk came from a request of ours or from pull sync.
///
/// Invariants (`checkInvariants`, and `checkKeepsPeersBusy` in tests): every chunk of the
/// fetch set is wanted by a live download; at most one request per chunk; request counts
/// within both limits and equal to the peers' counts; presence queries within theirs, one per
/// peer, to connected peers; dials within their limit; every
/// waiting chunk is in the queue or under a timer; with requests to spare, no waiting chunk
/// has a peer that could be asked now.
public struct DownloadMachine: Sendable {
    public let limits: DownloadLimits
    var rng: SplitMix64

    var downloads: [DownloadID: Download] = [:]
    /// Live downloads in the order they started (ascending `sequence`).
    var downloadOrder: [DownloadID] = []
    var nextSequence: UInt64 = 1

    var fetches: [ChunkAddress: Fetch] = [:]
    var requests: [UInt64: InFlight] = [:]
    /// Presence queries out, by ID (from `nextRequestID` too: an ID names one or the other).
    var presenceQueries: [UInt64: PresenceOut] = [:]
    var nextRequestID: UInt64 = 1

    var peers: [OverlayAddress: Peer] = [:]
    /// Connected peers, sorted by address (for the closest peers to an address).
    var connected: [OverlayAddress] = []
    var dialsInFlight = 0
    var droppedPeers = 0

    /// Chunks in `.ready`, in the order they are to be asked for. Lazy: stale entries skipped.
    var ready = MinHeap<ReadyEntry>()
    /// When delayed and parked chunks wake, and when peers' back-offs end. Lazy as well.
    var timers = MinHeap<Timer>()
    /// Chunks waiting for a peer to ask (`.parked`, or `.delayed` by back-offs): woken when the
    /// peers that could be asked change.
    var waiting: Set<ChunkAddress> = []
    /// Waiting chunks to put in presence queries, in queue order. Lazy: an entry whose chunk
    /// no longer waits, is in a query already or has used its queries is skipped.
    var presenceQueue = MinHeap<ReadyEntry>()

    var lastNow: UInt64 = 0
    /// Whether the last scheduling pass stopped at `scheduleScanMax` with work maybe left.
    var lastPassCutShort = false

    public internal(set) var counters = DownloadCounters()

    public init(limits: DownloadLimits = DownloadLimits(), seed: UInt64) {
        if let problem = limits.problem { preconditionFailure("download limits: \(problem)") }
        self.limits = limits
        rng = SplitMix64(seed: seed)
    }

    // MARK: State

    /// Where one chunk of the fetch set stands.
    enum FetchState: Equatable, Sendable {
        /// In the ready queue under its key: due, no request out.
        case ready
        /// Not asked before `until`. `fixed`: the time is a download's initial delay or a
        /// restored next-attempt time; otherwise every peer that could be asked is backing off
        /// (the chunk is in `waiting`), and `until` is the first back-off's end or the give-up time.
        case delayed(until: UInt64, fixed: Bool)
        /// Nobody to ask (no usable hint, nobody close connected, hinted peers being dialled);
        /// in `waiting`. Fails at `giveUpAt` unless a peer turns up.
        case parked(giveUpAt: UInt64)
        /// One request is out, under this ID.
        case inFlight(UInt64)
        /// Delivered; the shell stores it. Completes on `stored`. The answer to a request of
        /// ours keeps its peer's slot (`Fetch.deliveredBy`) until then.
        case storing
        /// Could not be fetched. Kept until every download wanting it has ended, so that a
        /// restart still knows; another download wanting it brings it back with a fresh budget.
        case failed(FetchFailure)
    }

    /// A peer that may have a chunk. `confirmed`: it offered the chunk, or said it has it;
    /// otherwise a caller named it.
    struct Hint: Equatable, Sendable {
        var peer: OverlayAddress
        var confirmed: Bool
    }

    enum TryFailure: Equatable, Sendable {
        case notFound, timeout, failed, disconnected, dropped
        /// Said in a presence answer that it lacks the chunk (no attempt spent).
        case absent
    }

    /// What asking one peer for one chunk has cost so far.
    struct PeerTry: Equatable, Sendable {
        var peer: OverlayAddress
        var attempts: Int
        var notBeforeMs: UInt64
        var lastFailure: TryFailure
    }

    /// A chunk's place in the ready queue: readers' downloads first, then older downloads,
    /// then the order the download named its chunks in. Unique per chunk.
    struct FetchKey: Comparable, Sendable {
        var rank: UInt8
        var download: UInt64
        var position: Int

        static func < (a: FetchKey, b: FetchKey) -> Bool {
            (a.rank, a.download, a.position) < (b.rank, b.download, b.position)
        }
    }

    struct Fetch: Sendable {
        var state: FetchState
        /// Downloads that want it, oldest first.
        var groups: [DownloadID]
        var hints: [Hint] = []
        var tries: [PeerTry] = []
        var attempts = 0
        var key: FetchKey
        /// Since when no peer could be asked (nil: one could, or was asked, last time it was looked at).
        var noProviderSince: UInt64?
        /// While `storing` the answer to our request to this peer: the slot it holds there.
        var deliveredBy: OverlayAddress?
        /// The presence query it is in now, if any (one at a time).
        var inPresence: UInt64?
        /// Presence queries it went into (at most `presencePeersPerChunkMax`, then no more
        /// until it gets a fresh budget).
        var presenceAsked = 0
    }

    struct Download: Sendable {
        var sequence: UInt64
        var policy: DownloadPolicy
        var createdMs: UInt64
        /// Its chunks are not asked for before this (the initial delay: sync may bring them).
        var startAtMs: UInt64
        /// The chunks it named, each once, in order (a restored download knows only the ones
        /// still in the fetch set).
        var chunks: [ChunkAddress]
        var position: [ChunkAddress: Int]
        var total: Int
        var done = 0
        var failed = 0
        /// Peers the caller named for all of its chunks.
        var hints: [OverlayAddress]
        /// Peers that delivered chunks of it, latest first: asked first for the rest.
        var servedBy: [OverlayAddress] = []

        var pending: Int { total - done - failed }

        var progress: DownloadProgress { DownloadProgress(done: done, failed: failed, total: total) }
    }

    struct Peer: Sendable {
        var connected = false
        var inFlight = 0
        /// Chunks it delivered in answer to our requests that are being stored: they keep their
        /// request slots until the commit, so a crash loses at most `requestsPerPeerMax` of a
        /// peer's chunks, asked or delivered.
        var storing = 0
        /// Slots taken: requests out and answers being stored.
        var busy: Int { inFlight + storing }
        var dialDeadlineMs: UInt64?
        var dialStartedMs: UInt64 = 0
        /// Silences in a row (0: responsive); above `unresponsiveBackoffMs.count`: dropped.
        var step = 0
        var lastSilenceMs: UInt64?
        /// Backing off (or dropped) until the timer at this time fires.
        var backoffUntilMs: UInt64?
        var dropped = false
        /// The presence query out to it, if any (one at a time).
        var presenceOut: UInt64?
        /// Its claims (offers, presence bits) that turned out false since it last delivered.
        var falseClaims = 0
        /// Its claims are ignored, and it is asked no presence, before this.
        var distrustedUntilMs: UInt64?

        func isDistrusted(at now: UInt64) -> Bool { distrustedUntilMs.map { now < $0 } ?? false }
    }

    struct PresenceOut: Sendable {
        var peer: OverlayAddress
        var addresses: [ChunkAddress]
        var sentMs: UInt64
        var deadlineMs: UInt64
    }

    struct InFlight: Sendable {
        var address: ChunkAddress
        var peer: OverlayAddress
        var sentMs: UInt64
        var deadlineMs: UInt64
    }

    struct ReadyEntry: Comparable, Sendable {
        var key: FetchKey
        var address: ChunkAddress

        static func < (a: ReadyEntry, b: ReadyEntry) -> Bool {
            a.key < b.key || (a.key == b.key && a.address < b.address)
        }
    }

    enum TimerTarget: Hashable, Comparable, Sendable {
        case fetch(ChunkAddress)
        case peer(OverlayAddress)
    }

    struct Timer: Hashable, Comparable, Sendable {
        var at: UInt64
        var target: TimerTarget

        static func < (a: Timer, b: Timer) -> Bool { (a.at, a.target) < (b.at, b.target) }
    }

    /// What one event produces: actions, and the downloads whose progress changed.
    struct Effects {
        var actions: [DownloadAction] = []
        var touched: Set<DownloadID> = []

        mutating func emit(_ action: DownloadAction) { actions.append(action) }
    }

    /// The clock never goes back for the machine, whatever the shell passes.
    mutating func advance(_ now: UInt64) -> UInt64 {
        lastNow = max(lastNow, now)
        return lastNow
    }

    // MARK: Queries

    /// The next time `tick` has something to do, if any.
    public var nextDeadline: UInt64? {
        var next = timers.min?.at
        for request in requests.values { next = min(next ?? .max, request.deadlineMs) }
        for query in presenceQueries.values { next = min(next ?? .max, query.deadlineMs) }
        for peer in peers.values { if let d = peer.dialDeadlineMs { next = min(next ?? .max, d) } }
        return next
    }

    /// Live downloads, oldest first.
    public var downloadIDs: [DownloadID] { downloadOrder }

    public func progress(of id: DownloadID) -> DownloadProgress? { downloads[id]?.progress }

    public func status(of id: DownloadID) -> DownloadStatus? {
        guard let download = downloads[id] else { return nil }
        return DownloadStatus(policy: download.policy, progress: download.progress,
                              failed: failedChunks(of: id, download, limit: limits.missingReportedMax))
    }

    /// The download's chunks that are not stored yet (waiting, asked for, or failed), in its
    /// order, at most `limit`.
    public func missing(of id: DownloadID, limit: Int = .max) -> [ChunkAddress] {
        guard let download = downloads[id] else { return [] }
        var out: [ChunkAddress] = []
        for address in download.chunks where out.count < limit {
            if fetches[address]?.groups.contains(id) == true { out.append(address) }
        }
        return out
    }

    /// The chunk's entry as it would be saved now; nil when it is not in the fetch set.
    public func fetchEntry(_ address: ChunkAddress) -> FetchEntry? {
        fetches[address].map { entry(for: $0) }
    }

    /// Requests out, by ID.
    public var requestsInFlight: [FetchRequest] {
        requests.keys.sorted().map { id in
            let r = requests[id]!
            return FetchRequest(id: id, address: r.address, peer: r.peer, deadlineMs: r.deadlineMs)
        }
    }

    /// Presence queries out, by ID.
    public var presenceInFlight: [PresenceQuery] {
        presenceQueries.keys.sorted().map { id in
            let q = presenceQueries[id]!
            return PresenceQuery(id: id, peer: q.peer, addresses: q.addresses, deadlineMs: q.deadlineMs)
        }
    }

    /// Chunks in the fetch set (waiting, asked for, storing, or failed and kept).
    public var fetchSetCount: Int { fetches.count }

    /// Whether the peer is backing off or dropped after silences; nil when it is not.
    public func backoff(of peer: OverlayAddress) -> (untilMs: UInt64, dropped: Bool)? {
        guard let p = peers[peer], let until = p.backoffUntilMs else { return nil }
        return (until, p.dropped)
    }

    func failedChunks(of id: DownloadID, _ download: Download, limit: Int) -> [MissingChunk] {
        var out: [MissingChunk] = []
        guard download.failed > 0 else { return out }
        for address in download.chunks where out.count < limit {
            if let fetch = fetches[address], case .failed(let reason) = fetch.state, fetch.groups.contains(id) {
                out.append(MissingChunk(address: address, reason: reason))
            }
        }
        return out
    }

    /// The chunk's entry for the store: hints merged best first (peers that served its
    /// downloads, its own hints, its downloads' hints).
    func entry(for fetch: Fetch) -> FetchEntry {
        var hints: [OverlayAddress] = []
        func add(_ peer: OverlayAddress) {
            if hints.count < limits.hintsPerChunkMax && !hints.contains(peer) { hints.append(peer) }
        }
        for group in fetch.groups { downloads[group]?.servedBy.forEach(add) }
        fetch.hints.forEach { add($0.peer) }
        for group in fetch.groups { downloads[group]?.hints.forEach(add) }
        var next: UInt64 = 0
        var failure: FetchFailure?
        switch fetch.state {
        case .delayed(let until, _): next = until
        case .failed(let reason): failure = reason
        default: break
        }
        return FetchEntry(attempts: UInt32(clamping: fetch.attempts), nextAttemptMs: next, groups: fetch.groups,
                          hints: hints, failure: failure)
    }
}
