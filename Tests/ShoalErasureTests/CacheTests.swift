import ShoalCore
import Testing
@testable import ShoalErasure

/// The table caches stay within their byte bounds and evict the least recently used first.
struct CacheTests {
    @Test func leastRecentlyUsedGoesFirst() {
        var cache = TableCache<Int, String>(bytesMax: 30)
        cache.insert("a", bytes: 10, for: 1)
        cache.insert("b", bytes: 10, for: 2)
        cache.insert("c", bytes: 10, for: 3)
        #expect(cache.value(for: 1) == "a")  // 1 is now newer than 2
        cache.insert("d", bytes: 10, for: 4)
        #expect(cache.value(for: 2) == nil)
        #expect(cache.value(for: 1) == "a")
        #expect(cache.value(for: 3) == "c")
        #expect(cache.value(for: 4) == "d")
        #expect(cache.bytes == 30 && cache.count == 3)
    }

    @Test func aValueLargerThanTheBoundIsNotKept() {
        var cache = TableCache<Int, String>(bytesMax: 30)
        cache.insert("a", bytes: 10, for: 1)
        cache.insert("huge", bytes: 31, for: 2)
        #expect(cache.value(for: 2) == nil)
        #expect(cache.value(for: 1) == "a")
        cache.insert("a2", bytes: 25, for: 1)  // replacing counts the new size only
        #expect(cache.bytes == 25 && cache.count == 1)
    }

    /// Hundreds of distinct worst-case patterns of the paranoid split (≈ 100 KB of tables each)
    /// would take tens of MB unbounded; the cache holds at most its bound.
    @Test func decodePlansStayWithinTheirBound() throws {
        let (k, m, size) = (37, 89, 64)
        var random = SplitMix64(seed: 5)
        let code = try ReedSolomon(dataShards: k, parityShards: m)
        let data = (0..<k).map { _ in random.bytes(size) }
        let all = data + (try code.encode(data, shardSize: size))
        for pattern in 0..<150 {
            // All data lost, rebuilt from a different run of 37 parity shards each time.
            var shards: [[UInt8]?] = Array(repeating: nil, count: k + m)
            for i in 0..<k { shards[k + (pattern * 3 + i * 2) % m] = all[k + (pattern * 3 + i * 2) % m] }
            guard shards.compactMap({ $0 }).count >= k else { continue }
            #expect(try code.reconstructData(shards, shardSize: size) == data)
            let statistics = CodingCache.statistics
            #expect(statistics.planBytes <= CodingCache.decodeBytesMax)
            #expect(statistics.codeBytes <= CodingCache.codeBytesMax)
        }
    }
}
