import ShoalCore

/// Everything that decides a fetch simulation run (`FetchSimulator`): retrieval and downloads
/// over a network of honest, slow, lossy, lying and vanishing peers. Two runs with equal
/// configurations are the same run, event for event.
public struct FetchSimulationConfig: Sendable, Equatable {
    /// How a node behaves, chosen per node from the seed.
    public enum PeerKind: Int, Sendable, Equatable, CaseIterable, CustomStringConvertible {
        /// Answers from its store, forwards what it lacks, on time.
        case honest
        /// Every message to or from it takes its link's latency × `slowFactor`: attempts to it
        /// time out now and then.
        case slow
        /// Drops `lossRate` of the messages it sends and receives.
        case lossy
        /// Asked for a chunk, answers with another chunk (a wrong one), or says it has none
        /// although it holds it (`lieNotFoundRate`). It never forwards.
        case lying
        /// Disconnects from every peer at a time in `vanishMs`; `reconnectFraction` of them
        /// come back after `reconnectAfterMs` (honest meanwhile and after).
        case vanishing

        public var description: String {
            switch self {
            case .honest: "honest"
            case .slow: "slow"
            case .lossy: "lossy"
            case .lying: "lying"
            case .vanishing: "vanishing"
            }
        }
    }

    public var nodes: Int
    public var seed: UInt64
    /// Distinct chunks; each is held by the `replication` nodes closest to it (XOR).
    public var chunks: Int
    public var replication = 4
    /// Connections: per node and Kademlia bin up to this many peers (chosen from the seed),
    /// plus the `neighbourhood` nodes closest to it; links are both ways.
    public var peersPerBin = 4
    public var neighbourhood = 8
    /// One-way latency of a link, drawn once per link from this range.
    public var latencyMs: ClosedRange<UInt64> = 1...50
    /// A message to or from a slow node takes its latency × a factor drawn from this range.
    public var slowFactor: ClosedRange<UInt64> = 20...60
    /// Share of messages a lossy node drops (sent and received).
    public var lossRate = 0.3
    /// Share of requests for a chunk it holds that a liar answers with "not found" (the rest:
    /// a wrong chunk).
    public var lieNotFoundRate = 0.5
    /// Shares of nodes of each faulty kind (the rest are honest). Downloading nodes are honest.
    public var slowFraction = 0.05
    public var lossyFraction = 0.05
    public var lyingFraction = 0.05
    public var vanishingFraction = 0.05
    public var vanishMs: ClosedRange<UInt64> = 2_000...60_000
    public var reconnectFraction = 0.5
    public var reconnectAfterMs: ClosedRange<UInt64> = 5_000...30_000
    /// Retrievals of random chunks at random nodes, issued at random times in the window;
    /// `concurrentShare` of them come as 2–4 callers at the same node for the same address
    /// within a few milliseconds (they share one fetch).
    public var retrievals: Int
    public var concurrentShare = 0.1
    public var retrievalWindowMs: ClosedRange<UInt64> = 0...60_000
    /// Nodes running a downloader, each with one download of `chunksPerDownload` chunks it
    /// lacks, all held by its `hintsPerDownload` hinted peers (which may lie or vanish).
    public var downloaders = 4
    public var chunksPerDownload = 100
    public var hintsPerDownload = 4
    /// A downloaded chunk's store commit comes this long after the machine asks for it.
    public var commitDelayMs: ClosedRange<UInt64> = 1...5
    /// A peer that faults (a wrong chunk) is disconnected for good, as the session drops it.
    public var dropOnFault = true
    public var retrieval = RetrievalLimits()
    public var download = DownloadLimits()
    /// Every download must end within this of its start (check (e)). Nil: the bound the
    /// download limits give (`derivedDownloadEndBoundMs`).
    public var downloadEndBoundMs: UInt64?
    /// The run stops here even if events remain (nil: the retrieval window, the download
    /// bound and a minute more).
    public var maxSimMs: UInt64?
    /// The machines check their invariants after every event they take.
    public var checkInvariants = true
    /// Test-only breakage, so tests can show a check fails.
    public var breakage: Breakage = .none

    public enum Breakage: Sendable, Equatable {
        case none
        /// Honest holders refuse retrieval requests (they still count as holders): retrievable
        /// chunks are not retrieved.
        case holdersRefuseRetrieval
    }

    public init(nodes: Int = 300, chunks: Int = 3_000, retrievals: Int = 2_000, seed: UInt64) {
        (self.nodes, self.chunks, self.retrievals, self.seed) = (nodes, chunks, retrievals, seed)
    }

    /// A bound on a download's life from the downloader's limits: the wait for a provider, every
    /// attempt of a chunk timing out and backing off as long as it can, a connected peer
    /// climbing every silence step, and a dial.
    public var derivedDownloadEndBoundMs: UInt64 {
        let d = download
        return d.providerWaitMaxMs + UInt64(d.attemptsPerChunkMax) * (d.requestTimeoutMs + d.retryDelayMaxMs)
            + d.unresponsiveBackoffMs.reduce(0, +) + d.dialTimeoutMs
    }

    var endBoundMs: UInt64 { downloadEndBoundMs ?? derivedDownloadEndBoundMs }

    var stopMs: UInt64 { maxSimMs ?? retrievalWindowMs.upperBound + endBoundMs + 60_000 }

    /// Why the configuration cannot run; nil when it can.
    public var problem: String? {
        if nodes < 2 { return "a fetch simulation needs at least 2 nodes" }
        if chunks < 1 || replication < 1 || replication > nodes { return "chunks need holders (1 ≤ replication ≤ nodes)" }
        if peersPerBin < 1 || neighbourhood < 0 { return "nodes need peers" }
        let shares = [slowFraction, lossyFraction, lyingFraction, vanishingFraction, lossRate, lieNotFoundRate,
                      reconnectFraction, concurrentShare]
        if shares.contains(where: { $0 < 0 || $0 > 1 }) || slowFraction + lossyFraction + lyingFraction + vanishingFraction > 1 {
            return "shares must be within 0…1 and the faulty kinds at most 1 together"
        }
        if downloaders < 0 || downloaders > nodes || chunksPerDownload < 1 || hintsPerDownload < 1 { return "bad download shape" }
        if retrievals < 0 { return "retrievals must not be negative" }
        if let p = download.problem { return "download limits: \(p)" }
        return nil
    }
}
