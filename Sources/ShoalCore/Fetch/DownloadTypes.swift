/// Names one download: one caller's intent to have a set of chunks, with its own progress and
/// its own cancel. The store keys downloads by root (`downloads: root → DownloadRecord`), so a
/// shell that persists a download gives it its root's address; two callers of the same root
/// share that download's events, or one of them takes an ID it does not persist.
public struct DownloadID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var key: Address32

    public init(_ key: Address32) { self.key = key }

    public static func < (a: DownloadID, b: DownloadID) -> Bool { a.key < b.key }

    public var description: String { "download \(key.hex.prefix(16))" }
}

/// What a download is for. The raw values are `DownloadRecord.Policy`'s.
public enum DownloadPolicy: UInt8, Sendable, Equatable {
    /// Fetch everything in the background; the shell pins the chunks when it completes.
    case eagerPin = 0
    /// A reader waits for these chunks: they go before every eager download's. (Fetching a
    /// file lazily is the shell's: it starts or extends an on-read download with what the
    /// reader needs next.)
    case onRead = 1
}

/// Why a chunk could not be fetched.
public enum FetchFailure: Equatable, Sendable, CustomStringConvertible {
    /// Every peer that was asked (`peers` of them) answered that it does not have the chunk,
    /// until the attempts ran out or nobody else was left to ask.
    case notFound(peers: Int)
    /// Requests timed out, failed or were cut off `attempts` times in all.
    case attemptsExhausted(attempts: Int)
    /// Nobody could be asked for `providerWaitMaxMs`: no hint, no connected peer, every hinted
    /// peer unreachable or dropped.
    case noProvider
    /// After a restart the downloader's budgets had no room for the chunk's download.
    case overBudget

    public var description: String {
        switch self {
        case .notFound(let peers): return "not found at \(peers) peer\(peers == 1 ? "" : "s")"
        case .attemptsExhausted(let attempts): return "no answer in \(attempts) attempts"
        case .noProvider: return "no peer to ask"
        case .overBudget: return "no room in the downloader after a restart"
        }
    }
}

public struct MissingChunk: Equatable, Sendable {
    public var address: ChunkAddress
    public var reason: FetchFailure

    public init(address: ChunkAddress, reason: FetchFailure) {
        (self.address, self.reason) = (address, reason)
    }
}

/// How a download ended.
public enum DownloadOutcome: Equatable, Sendable {
    /// Every chunk is stored.
    case completed
    /// Nothing is left to try and `missingCount` chunks could not be fetched; `missing` names
    /// the first `missingReportedMax` of them, in the download's order, with why.
    case failed(missing: [MissingChunk], missingCount: Int)
    /// The caller cancelled it. Chunks it shared with other downloads are still fetched for them.
    case cancelled
}

/// Where a download stands. `done` chunks are stored; `failed` could not be fetched (for now:
/// another download wanting the same chunk gives it a fresh budget).
public struct DownloadProgress: Equatable, Sendable, CustomStringConvertible {
    public var done: Int
    public var failed: Int
    public var total: Int

    public init(done: Int, failed: Int, total: Int) {
        (self.done, self.failed, self.total) = (done, failed, total)
    }

    public var pending: Int { total - done - failed }

    public var description: String { "\(done)/\(total) done, \(failed) failed" }
}

/// A download as the store keeps it. The raw values of `State` are `DownloadRecord.State`'s
/// (which also has `paused`, which this machine does not use).
public struct DownloadEntry: Equatable, Sendable {
    public enum State: UInt8, Sendable, Equatable {
        case active = 0
        case done = 2
        case failed = 3
    }

    public var policy: DownloadPolicy
    public var state: State
    /// Stored chunks. On a restart the machine counts them again from the fetch set
    /// (`chunksTotal` minus the chunks still in it), because a chunk leaves the fetch set in the
    /// same transaction that stores it, while this record is written after that commit.
    public var chunksDone: UInt64
    public var chunksTotal: UInt64
    /// What the caller gave at `start` (the shell passes wall time, for listing); orders
    /// downloads restored after a restart.
    public var createdMs: UInt64

    public init(policy: DownloadPolicy, state: State, chunksDone: UInt64, chunksTotal: UInt64, createdMs: UInt64) {
        (self.policy, self.state, self.chunksDone, self.chunksTotal, self.createdMs) =
            (policy, state, chunksDone, chunksTotal, createdMs)
    }
}

/// One chunk of the fetch set as the store keeps it (`fetch: address → FetchRecord`).
public struct FetchEntry: Equatable, Sendable {
    /// Failed requests (and failed stores) so far, over all peers.
    public var attempts: UInt32
    /// Not to be asked for before this (the machine's clock; 0: at once). The shell converts
    /// to and from the wall time the store keeps.
    public var nextAttemptMs: UInt64
    /// The downloads that want it, oldest first. `FetchRecord.group` holds only the first.
    public var groups: [DownloadID]
    /// Peers that may have it, best first, at most `hintsPerChunkMax`.
    public var hints: [OverlayAddress]
    /// Set when the chunk failed; the entry stays until every download wanting it has ended,
    /// so that a restart still knows why. `FetchRecord` cannot say it; a restored entry whose
    /// `attempts` reached `attemptsPerChunkMax` counts as failed.
    public var failure: FetchFailure?

    public init(attempts: UInt32 = 0, nextAttemptMs: UInt64 = 0, groups: [DownloadID], hints: [OverlayAddress] = [],
                failure: FetchFailure? = nil) {
        (self.attempts, self.nextAttemptMs, self.groups, self.hints, self.failure) =
            (attempts, nextAttemptMs, groups, hints, failure)
    }
}

/// One request for one chunk to one peer.
public struct FetchRequest: Equatable, Sendable, CustomStringConvertible {
    /// Unique for the machine's life: the shell maps its wire request to it.
    public var id: UInt64
    public var address: ChunkAddress
    public var peer: OverlayAddress
    /// Unanswered at this time, it times out (`tick`).
    public var deadlineMs: UInt64

    public init(id: UInt64, address: ChunkAddress, peer: OverlayAddress, deadlineMs: UInt64) {
        (self.id, self.address, self.peer, self.deadlineMs) = (id, address, peer, deadlineMs)
    }

    public var description: String { "request \(id) for \(address.hex.prefix(12)) to \(peer.hex.prefix(12))" }
}

/// One presence query (`WantHave`) to one peer: which of these chunks does it store?
public struct PresenceQuery: Equatable, Sendable, CustomStringConvertible {
    /// Unique for the machine's life, and never a request's ID: the shell maps its wire ID to it.
    public var id: UInt64
    public var peer: OverlayAddress
    /// 1…`presenceBatchMax` chunks of the fetch set, each once.
    public var addresses: [ChunkAddress]
    /// Unanswered at this time, it times out (`tick`).
    public var deadlineMs: UInt64

    public init(id: UInt64, peer: OverlayAddress, addresses: [ChunkAddress], deadlineMs: UInt64) {
        (self.id, self.peer, self.addresses, self.deadlineMs) = (id, peer, addresses, deadlineMs)
    }

    public var description: String { "presence query \(id) of \(addresses.count) chunks to \(peer.hex.prefix(12))" }
}

/// What the shell does after an event, in order. The `save…`/`remove…` actions of one event go
/// into one store batch, which commits before the shell tells any handle of `progress`,
/// `chunkFailed` or `finished` (persist first, then act).
public enum DownloadAction: Equatable, Sendable {
    /// Ask the peer for the chunk. Report `delivered`, `notFound` or `requestFailed`; silence
    /// until the deadline is a time-out (`tick`).
    case request(FetchRequest)
    /// Give up this request: it timed out, another peer delivered the chunk, or nobody wants
    /// it any more. An answer that still comes is harmless.
    case cancelRequest(FetchRequest)
    /// Ask the peer which of the query's chunks it stores (`WantHave`). Report its answer
    /// with `presence(id:from:bitvector:now:)`; silence until the deadline is a time-out (`tick`).
    case askPresence(PresenceQuery)
    /// Give up this query (it timed out, or its peer was dropped). An answer that still comes is harmless.
    case cancelPresence(PresenceQuery)
    /// Connect to this hinted peer. Report `peerConnected` or `dialFailed`.
    case dial(OverlayAddress)
    /// Store the chunk just delivered (the fetch entry leaves the fetch set in the same
    /// transaction), then report `stored`, or `storeFailed`.
    case storeChunk(ChunkAddress)
    /// Write the chunk's fetch entry (a store batch skips it when the chunk is stored).
    case saveFetch(ChunkAddress, FetchEntry)
    /// Remove the chunk's fetch entry: no download wants it any more.
    case removeFetch(ChunkAddress)
    case saveDownload(DownloadID, DownloadEntry)
    /// The download was cancelled: its record goes.
    case removeDownload(DownloadID)
    /// The download's progress changed (at most once per event).
    case progress(DownloadID, DownloadProgress)
    /// One chunk of the download could not be fetched. The download goes on with the others
    /// and fails when nothing is left; a reader may give up at once.
    case chunkFailed(DownloadID, MissingChunk)
    /// The download ended; nothing more comes for it.
    case finished(DownloadID, DownloadOutcome)
    /// The peer sent something no honest peer sends; the shell scores or drops it.
    case fault(OverlayAddress, PeerFault)
    /// The peer stayed silent through every back-off step and is out of every hint for
    /// `droppedHoldMs`. While it stays connected it is not asked; the shell may score it down
    /// or close the connection.
    case peerDropped(OverlayAddress)
}

/// A caller's request the machine refuses; nothing changed.
public struct DownloadRejected: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case duplicateDownload, unknownDownload, tooManyDownloads, tooManyChunks, fetchSetFull
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) { (self.code, self.message) = (code, message) }

    public var description: String { "\(code.rawValue): \(message)" }
}

/// What the downloader did, for the status page and for tests.
public struct DownloadCounters: Equatable, Sendable {
    public var requests = 0
    public var delivered = 0
    /// Delivered by a peer other than the one asked, or after the request was given up.
    public var deliveredUnasked = 0
    /// Delivered when nobody wanted the chunk (any more), or twice.
    public var deliveredUnwanted = 0
    public var notFound = 0
    public var timeouts = 0
    public var requestsFailed = 0
    /// Answers to requests given up already (not counted above).
    public var lateAnswers = 0
    public var stored = 0
    public var storesFailed = 0
    public var chunksFailed = 0
    public var dials = 0
    public var dialsFailed = 0
    /// Unresponsive peers backed off (one per step) and dropped.
    public var peersBackedOff = 0
    public var peersDropped = 0
    /// Presence queries sent, answered, timed out, and answered malformed (a fault).
    public var presenceQueries = 0
    public var presenceAnswers = 0
    public var presenceTimeouts = 0
    public var presenceMalformed = 0
    /// Claims (offers, presence) that turned out false, and peers whose claims were then
    /// ignored for a while (`falseClaimsMax`).
    public var falseClaims = 0
    public var peersDistrusted = 0

    public init() {}
}

/// A download's state for a query.
public struct DownloadStatus: Equatable, Sendable {
    public var policy: DownloadPolicy
    public var progress: DownloadProgress
    /// Its failed chunks, the first `missingReportedMax`, in its order.
    public var failed: [MissingChunk]
}
