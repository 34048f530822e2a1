import ShoalCore
import Testing
@testable import ShoalErasure

/// Encode, lose shards, rebuild: the data comes back byte for byte.
struct RoundTripTests {
    /// Swarm's splits per 128-reference intermediate (medium, strong, insane, paranoid) and
    /// small shapes, each at the 4104-byte shard of a serialized chunk.
    @Test(arguments: [(119, 9), (107, 21), (97, 31), (37, 89), (1, 1), (2, 1), (3, 2), (16, 4), (10, 0), (255, 1), (128, 128), (1, 255)])
    func worstCaseLossIsRepaired(k: Int, m: Int) throws {
        var random = SplitMix64(seed: UInt64(k * 1000 + m))
        let code = try ReedSolomon(dataShards: k, parityShards: m)
        let data = (0..<k).map { _ in random.bytes(4104) }
        let parity = try code.encode(data, shardSize: 4104)
        #expect(parity.count == m)
        #expect(parity.allSatisfy { $0.count == 4104 })
        // As many data shards lost as there is parity (all of them when m > k).
        var shards: [[UInt8]?] = data + parity
        for index in 0..<min(k, m) { shards[index] = nil }
        let rebuilt = try code.reconstructData(shards, shardSize: 4104)
        #expect(rebuilt == data)
    }

    /// Every subset of shards lost, for small codes: up to m lost rebuilds the data exactly;
    /// more than m lost is `tooFewShards` with the counts.
    @Test(arguments: [(1, 1), (1, 3), (2, 2), (3, 2), (4, 3), (5, 4), (3, 5), (6, 2), (4, 0)])
    func everyErasurePattern(k: Int, m: Int) throws {
        var random = SplitMix64(seed: UInt64(k * 31 + m))
        let size = 37
        let code = try ReedSolomon(dataShards: k, parityShards: m)
        let data = (0..<k).map { _ in random.bytes(size) }
        let all = data + (try code.encode(data, shardSize: size))
        let n = k + m
        for mask in 0..<(1 << n) {
            let shards: [[UInt8]?] = (0..<n).map { mask & (1 << $0) != 0 ? nil : all[$0] }
            let lostCount = mask.nonzeroBitCount
            if lostCount <= m {
                #expect(try code.reconstructData(shards, shardSize: size) == data, "lost mask \(mask)")
            } else {
                #expect(throws: ErasureError.tooFewShards(present: n - lostCount, needed: k)) {
                    try code.reconstructData(shards, shardSize: size)
                }
            }
        }
    }

    /// The contiguous fast path rebuilds in place what the array API rebuilds.
    @Test(arguments: [(119, 9), (107, 21), (97, 31), (37, 89), (16, 4)])
    func contiguousBuffersRoundTrip(k: Int, m: Int) throws {
        var random = SplitMix64(seed: UInt64(k + m * 1000))
        let size = 4104
        let code = try ReedSolomon(dataShards: k, parityShards: m)
        let data = random.bytes(k * size)
        var stripe = data + [UInt8](repeating: 0, count: m * size)
        try stripe.withUnsafeMutableBytes { raw in
            try code.encode(
                shardSize: size, data: UnsafeRawBufferPointer(rebasing: raw[0..<(k * size)]),
                parity: UnsafeMutableRawBufferPointer(rebasing: raw[(k * size)...]))
        }
        let dataShards = (0..<k).map { Array(data[($0 * size)..<(($0 + 1) * size)]) }
        let parity = try code.encode(dataShards, shardSize: size)
        #expect(Array(stripe[(k * size)...]) == parity.flatMap { $0 })

        // Lose min(k, m) data shards at random (their bytes overwritten), plus a spare parity.
        var lost = Set<Int>()
        while lost.count < min(k, m) { lost.insert(Int.random(in: 0..<k, using: &random)) }
        var present = [Bool](repeating: true, count: k + m)
        for index in lost {
            present[index] = false
            for b in (index * size)..<((index + 1) * size) { stripe[b] = 0xEE }
        }
        if m > k { present[k + m - 1] = false }
        let rebuilt = try stripe.withUnsafeMutableBytes { raw in
            try code.reconstructData(shardSize: size, shards: raw, present: present)
        }
        #expect(rebuilt == lost.sorted())
        #expect(Array(stripe[0..<(k * size)]) == data)
    }

    /// The address-list fast paths agree with the array API.
    @Test func addressListsRoundTrip() throws {
        var random = SplitMix64(seed: 99)
        let (k, m, size) = (10, 4, 1000)
        let code = try ReedSolomon(dataShards: k, parityShards: m)
        let buffers = (0..<(k + m)).map { _ in UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64) }
        defer { buffers.forEach { $0.deallocate() } }
        let data = (0..<k).map { _ in random.bytes(size) }
        for i in 0..<k { data[i].withUnsafeBytes { buffers[i].copyMemory(from: $0.baseAddress!, byteCount: size) } }
        let sources = buffers[0..<k].map { UnsafeRawPointer($0) }
        try sources.withUnsafeBufferPointer { d in
            try Array(buffers[k...]).withUnsafeBufferPointer { p in try code.encode(shardSize: size, data: d, parity: p) }
        }
        let parity = (k..<(k + m)).map { Array(UnsafeRawBufferPointer(start: buffers[$0], count: size)) }
        #expect(parity == (try code.encode(data, shardSize: size)))

        var present = [Bool](repeating: true, count: k + m)
        for index in [0, 3, 7, 9] {
            present[index] = false
            buffers[index].initializeMemory(as: UInt8.self, repeating: 0, count: size)
        }
        let rebuilt = try buffers.withUnsafeBufferPointer { try code.reconstructData(shardSize: size, shards: $0, present: present) }
        #expect(rebuilt == [0, 3, 7, 9])
        #expect((0..<k).map { Array(UnsafeRawBufferPointer(start: buffers[$0], count: size)) } == data)
    }

    /// Many tasks rebuilding different patterns at once share the caches and all get their data.
    @Test func concurrentDecodesShareTheCache() async throws {
        let (k, m, size) = (20, 6, 256)
        var random = SplitMix64(seed: 7)
        let code = try ReedSolomon(dataShards: k, parityShards: m)
        let data = (0..<k).map { _ in random.bytes(size) }
        let all = data + (try code.encode(data, shardSize: size))
        let results = try await withThrowingTaskGroup(of: Bool.self) { group in
            for task in 0..<32 {
                group.addTask {
                    var shards: [[UInt8]?] = all
                    for i in 0..<m { shards[(task * 3 + i * 5) % (k + m)] = nil }
                    return try code.reconstructData(shards, shardSize: size) == data
                }
            }
            var all: [Bool] = []
            for try await ok in group { all.append(ok) }
            return all
        }
        #expect(results.count == 32 && results.allSatisfy { $0 })
    }
}
