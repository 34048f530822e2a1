import Testing
@testable import ShoalErasure

/// Encode, lose shards, rebuild: the data comes back byte for byte.
struct RoundTripTests {
    /// Swarm's splits per 128-reference intermediate (medium, strong, insane, paranoid) and
    /// small shapes, each at the 4104-byte shard of a serialized chunk.
    @Test(arguments: [(119, 9), (107, 21), (97, 31), (37, 89), (1, 1), (2, 1), (3, 2), (16, 4), (10, 0)])
    func worstCaseLossIsRepaired(k: Int, m: Int) throws {
        var random = SeededRandom(seed: UInt64(k * 1000 + m))
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
}

/// SplitMix64: a seeded generator, so a failing case replays.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        for i in 0..<count { out[i] = UInt8(truncatingIfNeeded: next()) }
        return out
    }
}
