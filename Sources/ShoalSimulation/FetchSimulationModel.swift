import ShoalCore

/// A link between two nodes; `a < b`. Down while either end has vanished; `dropped` for good
/// after a fault. Messages sent before it went down are lost (their generation is old).
struct FetchLink {
    let a: Int
    let b: Int
    let latencyMs: UInt64
    var up = true
    var dropped = false
    var generation = 0
    /// Per direction (from `a`, from `b`): when the last message arrives (order).
    var lastArrival: [UInt64] = [0, 0]

    func other(_ n: Int) -> Int { n == a ? b : a }
}

/// A request waiting on a node's fetch, and how it came: the nodes it passed and the hops from
/// its origin (a local caller: none).
struct WaiterPath {
    var waiter: Retrieval.Waiter
    var visited: [Int]
    var hops: Int
    /// A node on the way sent a peer's request farther from the address (a widened fetch).
    var climbed: Bool
}

struct RetrievalRecord {
    enum Outcome: Equatable {
        case pending
        /// The origin held the chunk already.
        case local
        case retrieved
        case failed(RetrievalFailure)

        var code: UInt64 {
            switch self {
            case .pending: 0
            case .local: 1
            case .retrieved: 2
            case .failed: 3
            }
        }
    }

    var origin: Int
    var chunk: Int
    var issuedMs: UInt64
    var concurrent: Bool
    var retrievable = false
    var route: [Int] = []
    var outcome = Outcome.pending
    var endedMs: UInt64?

    init(origin: Int, chunk: Int, issuedMs: UInt64, concurrent: Bool) {
        (self.origin, self.chunk, self.issuedMs, self.concurrent) = (origin, chunk, issuedMs, concurrent)
    }
}

/// One node's downloader: the machine and what its shell keeps (requests out by ID, chunks
/// delivered and waiting for their commit).
struct Downloader {
    let node: Int
    var machine: DownloadMachine
    let id: DownloadID
    let addresses: [ChunkAddress]
    let hints: [Int]
    let startMs: UInt64
    /// Its chunks an honest hinted peer held from the start.
    var honestlyHinted: Set<ChunkAddress> = []
    var requests: [UInt64: FetchRequest] = [:]
    var delivered: [ChunkAddress: Chunk] = [:]
    var tickAt: UInt64?
    var endedMs: UInt64?
    var outcome: DownloadOutcome?

    init(node: Int, machine: DownloadMachine, id: DownloadID, addresses: [ChunkAddress], hints: [Int], startMs: UInt64) {
        (self.node, self.machine, self.id, self.addresses, self.hints, self.startMs) = (node, machine, id, addresses, hints, startMs)
    }
}

/// What happened in a fetch run.
public struct FetchCounters: Sendable, Equatable {
    public var events: UInt64 = 0
    public var messages = 0, messagesLost = 0
    /// Retrieval requests sent, and received.
    public var asks = 0, asksReceived = 0
    /// Chunks forwarders kept (`keep`), new to their stores.
    public var kept = 0
    /// Answers a liar gave (asked by retrieval or a downloader).
    public var lies = 0
    public var retrievalFaults = 0, downloadFaults = 0
    public var linksDroppedForFaults = 0
    public var disconnects = 0
    public var vanished = 0, reappeared = 0
    public var downloadRequests = 0
    public var lateDownloadAnswers = 0
    public var dials = 0, dialsFailed = 0, dialled = 0
    public var downloadPeersDropped = 0
    /// Presence queries the downloaders sent.
    public var presenceQueries = 0
    /// Chunks downloads gave up on, by why.
    public var downloadChunkFailures: [String: Int] = [:]
}

/// The outcome of a fetch run.
public struct FetchSimulationReport: Sendable {
    public var config: FetchSimulationConfig
    public var simMs: UInt64
    public var counters: FetchCounters
    public var violations: FetchViolations
    /// Loops of the known issue (`FetchLedger.widenedLoops`): reported, not violations.
    public var widenedLoops = ViolationList()
    /// Nodes per kind, in `PeerKind` order.
    public var kinds: [(kind: String, nodes: Int)] = []
    /// Retrievals issued; the origin held it; retrieved over the network; failed; never ended.
    public var retrievals = 0, local = 0, retrieved = 0, failed = 0, pending = 0
    /// Retrievals that came with others at the same node for the same address.
    public var concurrent = 0
    /// Retrievable ones (check (a)), and those of them retrieved.
    public var retrievable = 0, retrievableRetrieved = 0
    /// Failed retrievals by why.
    public var failureReasons: [(reason: String, count: Int)] = []
    /// Hops from the nearest origin of the requests a store answered with the chunk.
    public var hopsP50 = 0, hopsMax = 0
    public var downloads = 0, downloadsCompleted = 0, downloadsFailed = 0
    public var downloadChunks = 0, downloadChunksMissing = 0
    /// Missing chunks that an honest hinted peer held from the start (it never vanished, lied or
    /// dropped messages).
    public var downloadChunksMissingHonestHint = 0
    public var downloadLongestMs: UInt64 = 0
    /// The most requests one downloader had out, in all and to one peer.
    public var downloadRequestsPeak = 0, downloadPerPeerPeak = 0
    public var digest = ""

    init(config: FetchSimulationConfig, simMs: UInt64, counters: FetchCounters, violations: FetchViolations) {
        (self.config, self.simMs, self.counters, self.violations) = (config, simMs, counters, violations)
    }
}

// The report a run ends with.
extension FetchSimulator {
    func makeReport() -> FetchSimulationReport {
        var r = FetchSimulationReport(config: config, simMs: now, counters: counters, violations: ledger.violations)
        r.widenedLoops = ledger.widenedLoops
        for kind in FetchSimulationConfig.PeerKind.allCases { r.kinds.append((kind.description, kinds.filter { $0 == kind }.count)) }
        r.retrievals = records.count
        var failures: [String: Int] = [:]
        for record in records {
            switch record.outcome {
            case .local: r.local += 1
            case .retrieved: r.retrieved += 1
            case .failed(let why):
                r.failed += 1
                failures[Self.failureName(why), default: 0] += 1
            case .pending: r.pending += 1
            }
            if record.retrievable {
                r.retrievable += 1
                if record.outcome == .retrieved { r.retrievableRetrieved += 1 }
            }
            if record.concurrent { r.concurrent += 1 }
        }
        r.failureReasons = failures.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        let hops = hitHops.sorted()
        r.hopsP50 = hops.isEmpty ? 0 : hops[hops.count / 2]
        r.hopsMax = hops.last ?? 0
        r.downloads = downloaders.count
        for d in downloaders {
            switch d.outcome {
            case .completed?: r.downloadsCompleted += 1
            case .failed(_, let count)?:
                r.downloadsFailed += 1
                r.downloadChunksMissing += count
            case .cancelled?, nil: break
            }
            r.downloadChunks += d.addresses.count
            for address in d.addresses where !stores[d.node].contains(address) && d.honestlyHinted.contains(address) {
                r.downloadChunksMissingHonestHint += 1
            }
            if let ended = d.endedMs { r.downloadLongestMs = max(r.downloadLongestMs, ended - d.startMs) }
        }
        r.downloadRequestsPeak = ledger.downloadRequestsPeak
        r.downloadPerPeerPeak = ledger.downloadPerPeerPeak
        r.digest = digest()
        return r
    }

    /// SHA-256 (ShoalCore's chunk hash) over every retrieval's outcome and end time, every
    /// download's, and the counters that say how the run went. Hex.
    func digest() -> String {
        var bytes: [UInt8] = []
        func put(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        for record in records {
            put(record.outcome.code)
            put(record.endedMs ?? .max)
        }
        for d in downloaders {
            put(d.endedMs ?? .max)
            put(UInt64(d.machine.counters.requests))
            put(UInt64(d.machine.counters.stored))
        }
        for v in [counters.events, UInt64(counters.messages), UInt64(counters.messagesLost), UInt64(counters.asks)] { put(v) }
        return Chunk.address(span: UInt64(bytes.count), payload: bytes).hex
    }
}
