import Locking
import ShoalCore

/// The node-wide set of chunks some stream is fetching, so no chunk is wanted from two peers
/// at once. A stream claims an address when it wants it and releases it when the chunk is
/// committed or the stream gives it up.
public final class InFlightChunks: Sendable {
    private let claimed = Locked<Set<ChunkAddress>>([])
    /// At most this many claims at once; past it, offers are answered "in flight elsewhere"
    /// and the range is retried later (a bound on memory, not expected in practice).
    public let claimsMax: Int

    public init(claimsMax: Int = 1 << 20) { self.claimsMax = claimsMax }

    /// Claims `address` unless someone holds it; true if this caller now holds it.
    public func claim(_ address: ChunkAddress) -> Bool {
        claimed.withLock { set in
            guard set.count < claimsMax else { return false }
            return set.insert(address).inserted
        }
    }

    public func release(_ addresses: [ChunkAddress]) {
        claimed.withLock { set in for a in addresses { set.remove(a) } }
    }

    public var count: Int { claimed.withLock { $0.count } }
}
