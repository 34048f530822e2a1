import ShoalCore
import Testing
@testable import ShoalErasure

/// ISA-L's parity and decode matrices agree with a plain reference implementation of the field.
struct ParityTests {
    @Test func knownVectorFromTheFieldByHand() throws {
        // k = 2, m = 2: parity rows are (1/2, 1/3) and (1/3, 1/2); in GF(2^8) mod 0x11D,
        // 1/2 = 0x8E and 1/3 = 0xF4, so data (0x57, 0xA3) gives 0xC4 and 0x19.
        let code = try ReedSolomon(dataShards: 2, parityShards: 2)
        let parity = try code.encode([[0x57, 0x01], [0xA3, 0x00]], shardSize: 2)
        #expect(parity == [[0xC4, 0x8E], [0x19, 0xF4]])
    }

    @Test func referenceFieldAgreesWithTheHandVector() {
        #expect(ReferenceField.inv(2) == 0x8E)
        #expect(ReferenceField.inv(3) == 0xF4)
        #expect(ReferenceField.parity(of: [[0x57], [0xA3]], parityShards: 2) == [[0xC4], [0x19]])
    }

    /// Sizes below, at and past the kernels' 32- and 64-byte strides, and a whole chunk.
    @Test(arguments: [(1, 1, 1), (3, 2, 31), (4, 4, 33), (10, 6, 65), (16, 4, 4096), (119, 9, 4104), (37, 89, 200), (1, 255, 40)])
    func parityMatchesTheReference(k: Int, m: Int, size: Int) throws {
        var random = SplitMix64(seed: UInt64(k << 20 | m << 10 | size))
        let data = (0..<k).map { _ in random.bytes(size) }
        let code = try ReedSolomon(dataShards: k, parityShards: m)
        #expect(try code.encode(data, shardSize: size) == ReferenceField.parity(of: data, parityShards: m))
    }

    /// The e × e shortcut gives exactly the lost rows of the inverse of the k × k survivor matrix.
    @Test(arguments: [(119, 9), (107, 21), (97, 31), (37, 89), (5, 3)])
    func decodeMatrixIsTheLostRowsOfTheFullInverse(k: Int, m: Int) throws {
        var random = SplitMix64(seed: UInt64(k * 7 + m))
        let lostCount = min(k, m)
        var lost = Set<Int>()
        while lost.count < lostCount { lost.insert(Int.random(in: 0..<k, using: &random)) }
        var present = ShardSet((0..<(k + m)).filter { !lost.contains($0) })
        // Drop one more parity shard when there is a spare, so the plan must skip it.
        if m > lostCount { present = ShardSet((0..<(k + m)).filter { !lost.contains($0) && $0 != k }) }
        let code = try ReedSolomon(dataShards: k, parityShards: m)
        let plan = try DecodePlan(code: code.code, present: present)
        #expect(plan.lost == lost.sorted())
        #expect(plan.survivors.count == k)
        #expect(plan.survivors.allSatisfy { present.contains($0) })

        let survivorMatrix = plan.survivors.flatMap { ReferenceField.codingRow($0, k: k) }
        let inverse = try #require(ReferenceField.invert(survivorMatrix, n: k))
        let expected = plan.lost.flatMap { row in inverse[(row * k)..<((row + 1) * k)] }
        #expect(plan.matrix == expected)
    }
}
