import ShoalCore

/// One connected peer, as the API shows it.
public struct PeerStatus: Sendable, Equatable, Codable {
    public var overlay: String
    public var address: String
    public var outbound: Bool
    public var epoch: UInt64
    public var bins: [BinSyncStatus]
    public var faults: Int
    /// Score change in this session not yet written to the peer's record.
    public var score: Int
    /// Milliseconds our deliveries to this peer waited for its serving budget
    /// (`SessionLimits.servedChunksPerSecondMax`).
    public var serveWaitedMs: UInt64
    /// History requests this node may have out to the peer at once now (adapted to its
    /// delivery rate), and that rate in chunks a second.
    public var historyRequestsAllowed: Int
    public var deliveryRate: Int
    /// Replies to requests given up on (ignored), and penalties (batch timeouts).
    public var lateReplies: Int
    public var penalties: Int
    /// Hive traffic from the peer.
    public var hive: HiveCounters
}
