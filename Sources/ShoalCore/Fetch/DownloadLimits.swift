/// Every bound of the downloader (`DownloadMachine`). The starting numbers are DESIGN §4's;
/// Docs/Decisions/0025-downloader-core.md says where the others come from.
public struct DownloadLimits: Sendable, Equatable {
    /// Requests out at once over all peers: keeps the node from flooding its own link (other
    /// downloaders allow about 50).
    public var requestsInFlightMax = 64
    /// Requests out at once to one peer, with the answers of it that are being stored: so no
    /// peer is asked for more than it serves in parallel, and a crash loses at most this many of
    /// a peer's chunks (asked, or delivered and not committed yet).
    public var requestsPerPeerMax = 8
    /// Connections being dialled at once for hinted peers that are not connected.
    public var dialsInFlightMax = 8
    /// A dial not reported (connected or failed) within this counts as failed.
    public var dialTimeoutMs: UInt64 = 10_000
    /// A request not answered within this times out, and the peer counts as unresponsive
    /// (DESIGN §4's batch timeout).
    public var requestTimeoutMs: UInt64 = 10_000
    /// After the n-th failed request of a chunk to a peer, that peer is not asked for the chunk
    /// again for `retryDelayMinMs × 2^(n-1)`, ±25 % jitter, at most `retryDelayMaxMs`.
    public var retryDelayMinMs: UInt64 = 250
    public var retryDelayMaxMs: UInt64 = 60_000
    /// Failed requests of one chunk to one peer before that peer is not asked for it again.
    public var attemptsPerPeerMax = 8
    /// Failed requests of one chunk over all peers (and failed stores of it) before it fails.
    /// Four peers' worth of `attemptsPerPeerMax`.
    public var attemptsPerChunkMax = 32
    /// A peer that stays silent (a request times out, a dial fails) is not asked or dialled
    /// for the next of these, one step further each time; silent once more after the last
    /// step, it is dropped. About ×3 a step, 20 s to 10 min.
    public var unresponsiveBackoffMs: [UInt64] = [20_000, 60_000, 180_000, 600_000]
    /// A dropped peer is out of every hint, and neither asked nor dialled, for this long.
    public var droppedHoldMs: UInt64 = 3_600_000
    /// How long the back-off step of a disconnected peer is remembered after its last silence
    /// (long enough that a dead peer, dialled again after each back-off, climbs the steps).
    public var peerMemoryMs: UInt64 = 1_800_000
    /// Disconnected peers remembered for their back-off, at most; the longest silent go first.
    public var peersRememberedMax = 1024
    /// A chunk that has had no peer to ask for this long fails. A peer that is only busy counts
    /// as one to ask, and so does a connected peer backing off after silences (it answers or
    /// is dropped within the steps of `unresponsiveBackoffMs`); a peer backing off from this
    /// chunk, or one we cannot reach, does not.
    public var providerWaitMaxMs: UInt64 = 120_000
    /// A peer that said in a presence answer that it lacks a chunk is not asked for it for this long.
    public var absentRetryMs: UInt64 = 30_000
    /// Presence queries (`WantHave`) out at once over all peers, one per peer at most; 0 asks
    /// none. They take no request slot: an answer is a few bits, and a query asks about chunks
    /// that nobody is being asked for.
    public var presenceQueriesInFlightMax = 8
    /// Addresses in one presence query, at most the wire's `ProtocolLimits.presenceBatchMax`.
    public var presenceBatchMax = ProtocolLimits.presenceBatchMax
    /// A presence query not answered within this is a silence of the peer, as a request's is.
    public var presenceTimeoutMs: UInt64 = 10_000
    /// Connected peers closest to a chunk's address that presence may ask about it; and the
    /// queries one chunk goes into, at most, until it gets a fresh budget.
    public var presencePeersPerChunkMax = 16
    /// Claims (an offer, a presence bit) that turn out false in a row (the peer answers a
    /// request for the chunk with not-found, and delivers nothing in between) before the
    /// peer's claims are ignored, and it is asked no presence, for `distrustHoldMs`.
    public var falseClaimsMax = 4
    public var distrustHoldMs: UInt64 = 600_000
    /// Downloads alive at once.
    public var downloadsMax = 64
    /// Distinct chunks one download may name (a file's tree is added in parts as it is read).
    public var chunksPerDownloadMax = 65_536
    /// Distinct chunks in the fetch set, over all downloads.
    public var fetchSetMax = 262_144
    /// Provider hints kept per chunk, best first (the store keeps 16: `FetchRecord.hintsMax`).
    public var hintsPerChunkMax = 16
    /// Hints a caller gives for a whole download.
    public var hintsPerDownloadMax = 16
    /// Connected peers closest to a chunk's address (XOR distance) that are asked besides its hints.
    public var closestPeersPerChunk = 3
    /// Peers that delivered chunks of a download, remembered to be asked first for the rest.
    public var groupPeersMax = 4
    /// Peers whose attempts and back-off are remembered per chunk.
    public var peersTriedPerChunkMax = 16
    /// Missing chunks named in a failed download's error (the count names them all).
    public var missingReportedMax = 64
    /// Waiting chunks looked at in one scheduling pass: bounds the work of one event.
    public var scheduleScanMax = 1024

    public init() {}

    /// A reason the machine cannot work with these limits; nil when they are usable.
    public var problem: String? {
        if requestsInFlightMax < 1 || requestsPerPeerMax < 1 || dialsInFlightMax < 0 { return "request and dial limits must be positive" }
        if attemptsPerPeerMax < 1 || attemptsPerChunkMax < 1 { return "attempt budgets must be positive" }
        if retryDelayMinMs < 1 || retryDelayMaxMs < retryDelayMinMs { return "retry delays must be positive and ordered" }
        if unresponsiveBackoffMs.isEmpty || unresponsiveBackoffMs.contains(0) { return "unresponsive back-off needs positive steps" }
        if requestTimeoutMs < 1 || dialTimeoutMs < 1 || providerWaitMaxMs < 1 || droppedHoldMs < 1 { return "timeouts must be positive" }
        if downloadsMax < 1 || chunksPerDownloadMax < 1 || fetchSetMax < 1 { return "download budgets must be positive" }
        if hintsPerChunkMax < 1 || hintsPerDownloadMax < 0 || closestPeersPerChunk < 0 || groupPeersMax < 0 { return "hint bounds must not be negative" }
        if presenceQueriesInFlightMax < 0 || !(1...ProtocolLimits.presenceBatchMax).contains(presenceBatchMax)
            || presenceTimeoutMs < 1 || presencePeersPerChunkMax < 0 || falseClaimsMax < 1 || distrustHoldMs < 1 {
            return "presence bounds must be positive, and a query at most \(ProtocolLimits.presenceBatchMax) addresses"
        }
        if peersTriedPerChunkMax < 1 || missingReportedMax < 0 || scheduleScanMax < 1 || peersRememberedMax < 0 { return "bounds must be positive" }
        return nil
    }
}
