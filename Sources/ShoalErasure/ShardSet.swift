/// A set of shard indices below 256 (GF(2^8) allows at most 256 shards), as a 256-bit map:
/// the key under which decode tables are cached.
struct ShardSet: Hashable, Sendable {
    private var w0: UInt64 = 0, w1: UInt64 = 0, w2: UInt64 = 0, w3: UInt64 = 0

    init() {}

    init(_ indices: some Sequence<Int>) {
        for index in indices { insert(index) }
    }

    /// `index` must be in 0..<256 (callers check shard counts first).
    mutating func insert(_ index: Int) {
        precondition((0..<256).contains(index), "shard index \(index) outside 0..<256")
        let bit = UInt64(1) << UInt64(index & 63)
        switch index >> 6 {
        case 0: w0 |= bit
        case 1: w1 |= bit
        case 2: w2 |= bit
        default: w3 |= bit
        }
    }

    func contains(_ index: Int) -> Bool {
        guard (0..<256).contains(index) else { return false }
        let bit = UInt64(1) << UInt64(index & 63)
        switch index >> 6 {
        case 0: return w0 & bit != 0
        case 1: return w1 & bit != 0
        case 2: return w2 & bit != 0
        default: return w3 & bit != 0
        }
    }

    var count: Int { w0.nonzeroBitCount + w1.nonzeroBitCount + w2.nonzeroBitCount + w3.nonzeroBitCount }
}
