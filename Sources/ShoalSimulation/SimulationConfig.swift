import ShoalCore

/// Everything that decides a simulation run. Two runs with equal configurations are the same
/// run, event for event.
public struct SimulationConfig: Sendable, Equatable {
    public var nodes: Int
    public var chunks: Int
    public var seed: UInt64
    /// One-way latency of a link, drawn once per pair of nodes from this range.
    public var latencyMs: ClosedRange<UInt64> = 1...50
    /// Bytes a link carries per millisecond each way (nil: unlimited).
    public var bandwidthBytesPerMs: UInt64?
    /// Connection resets, per node and minute on average (each reset drops one connection,
    /// seen by both ends), while faults last.
    public var resetsPerMinute: Double = 0
    public var partitions: [Partition] = []
    /// Nodes that crash (at random times while faults last), each restarting after `restartDelayMs`.
    public var crashes = 0
    public var restartDelayMs: ClosedRange<UInt64> = 2_000...10_000
    /// The run gives up (not converged) at this simulated time.
    public var maxSimSeconds: UInt64 = 600
    /// How many earlier nodes each node is told of at start (as `--peer`).
    public var bootstrapPeers = 2
    /// Nodes start one after another over this window.
    public var startWindowMs: UInt64 = 2_000
    /// Chunks are uploaded at random times in this window (to random running nodes).
    public var uploadWindowMs: ClosedRange<UInt64> = 3_000...15_000
    public var payloadBytes = 32
    /// Faults (resets, crashes) happen until this time; partitions have their own times.
    public var faultsUntilMs: UInt64 = 30_000
    /// A store write commits this long after it is submitted (writes submitted meanwhile
    /// commit with it, as the store writer's group commit does).
    public var commitDelayMs: ClosedRange<UInt64> = 1...5
    /// How often the supervisor dials and prunes.
    public var superviseIntervalMs: UInt64 = 1_000
    /// Convergence is checked this often once faults and uploads are over.
    public var checkIntervalMs: UInt64 = 2_000
    /// Every node's depth must have stayed the same this long.
    public var depthStableMs: UInt64 = 10_000
    /// Every machine checks its invariants after every event (slower).
    public var checkInvariants = true
    public var topology = TopologyLimits()
    public var sync = PeerSync.Limits()
    /// Test-only breakage of the store model, so tests can show the check fails.
    public var breakage: Breakage = .none

    public enum Breakage: Sendable, Equatable {
        case none
        /// Seals are applied even when a chunk they require is missing.
        case sealsIgnoreRequirements
    }

    /// A set of nodes cut from the rest from `startMs` to `endMs`: their connections across
    /// drop and dials across fail.
    public struct Partition: Sendable, Equatable {
        public var startMs: UInt64
        public var endMs: UInt64
        /// The share of nodes cut off (chosen from the seed).
        public var fraction: Double

        public init(startMs: UInt64, endMs: UInt64, fraction: Double) {
            (self.startMs, self.endMs, self.fraction) = (startMs, endMs, fraction)
        }

        /// Parses `START-END:FRACTION` in seconds, e.g. `10-30:0.25`.
        public init?(parsing text: String) {
            let parts = text.split(separator: ":")
            guard parts.count == 2, let fraction = Double(parts[1]), fraction > 0, fraction < 1 else { return nil }
            let times = parts[0].split(separator: "-")
            guard times.count == 2, let start = Double(times[0]), let end = Double(times[1]), start >= 0, end > start else { return nil }
            self.init(startMs: UInt64(start * 1000), endMs: UInt64(end * 1000), fraction: fraction)
        }
    }

    public init(nodes: Int, chunks: Int, seed: UInt64) {
        self.nodes = nodes
        self.chunks = chunks
        self.seed = seed
    }

    /// When the last fault ends (partitions included).
    var quietFromMs: UInt64 {
        var t = max(uploadWindowMs.upperBound, startWindowMs)
        if resetsPerMinute > 0 || crashes > 0 { t = max(t, faultsUntilMs) }
        for p in partitions { t = max(t, p.endMs) }
        return t
    }
}
