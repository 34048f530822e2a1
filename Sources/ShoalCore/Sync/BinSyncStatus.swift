/// Progress of syncing one bin from one peer, as the API and logs show it.
public struct BinSyncStatus: Sendable, Equatable, Codable {
    public var bin: Int
    /// The peer's cursor when we subscribed, and how far the live stream has reached.
    public var historyEnd: UInt64
    public var historyDone: Bool
    public var liveFrom: UInt64
    public var offered = 0
    public var wanted = 0
    public var delivered = 0
    /// Chunks delivered that the store already held (counted at commit).
    public var duplicates = 0
    /// Chunks or offers rejected as invalid.
    public var invalid = 0
    /// Bin IDs of the peer's bin sealed as synced.
    public var sealed: UInt64 = 0
}
