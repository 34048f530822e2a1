import ShoalCore
import ShoalTestSupport
import Testing

@testable import ShoalFiles

/// A source a repair writes back into, as the node's store is.
actor RepairableSource: ChunkSource {
    var chunks: [ChunkAddress: Chunk]
    init(_ source: MemorySource) { chunks = source.chunks }
    func chunk(_ address: ChunkAddress) async throws -> Chunk? { chunks[address] }
    func has(_ address: ChunkAddress) -> Bool { chunks[address] != nil }
    func has(_ addresses: [ChunkAddress]) -> [Bool] { addresses.map { chunks[$0] != nil } }
    func store(_ new: [Chunk]) { for c in new { chunks[c.address] = c } }
}

@Suite struct RepairTests {
    @Test("lost data and parity chunks of every intermediate are rebuilt and stored, and the tree is whole again",
          arguments: RedundancyTests.levels)
    func rebuildsWhatParityAllows(level: RedundancyLevel) async throws {
        let bytes = seededBytes(2 * level.dataShards * 4096 + 5 * 4096 + 9, seed: 31)
        let file = try split(bytes, redundancy: level)
        var source = file.source
        var rng = SplitMix64(seed: 100 + UInt64(level.rawValue))
        var dropped = 0
        for node in try RedundancyTests.intermediates(file) {
            // Up to the parity count of the node's children, data and parity mixed.
            let lose = Array((0..<node.references.count).shuffled(using: &rng).prefix(node.parityCount))
            for index in lose where node.references[index] != file.root { source.chunks[node.references[index]] = nil }
            dropped += lose.count
        }
        #expect(dropped > 0)
        let repairable = RepairableSource(source)
        let reader = try await FileReader.open(root: file.root, source: repairable)
        let outcome = try await reader.rebuildMissing(present: { await repairable.has($0) },
                                                     store: { await repairable.store($0) })
        #expect(outcome.lost == [])
        #expect(outcome.rebuilt == file.chunks.count - source.chunks.count)
        for chunk in file.chunks { #expect(await repairable.has(chunk.address)) }
        // A second pass finds nothing to do.
        let again = try await reader.rebuildMissing(present: { await repairable.has($0) }, store: { _ in Issue.record("nothing to store") })
        #expect(again == RepairOutcome())
    }

    @Test("too many lost, or no parity at all: named as lost, nothing made up")
    func namesWhatIsLost() async throws {
        let plain = try split(seededBytes(3 * 4096, seed: 32))
        var source = plain.source
        let leaf = try #require(plain.chunks.first { $0.address != plain.root })
        source.chunks[leaf.address] = nil
        let reader = try await FileReader.open(root: plain.root, source: source)
        let outcome = try await reader.rebuildMissing(present: { $0.map { source.chunks[$0] != nil } }, store: { _ in Issue.record("nothing to store") })
        #expect(outcome.rebuilt == 0 && outcome.lost == [leaf.address])

        let level = RedundancyLevel.medium
        let coded = try split(seededBytes(40 * 4096, seed: 33), redundancy: level)
        var lossy = coded.source
        let node = try #require(try RedundancyTests.intermediates(coded).first)
        let lose = Array(node.references.prefix(node.parityCount + 1))
        for reference in lose { lossy.chunks[reference] = nil }
        let codedReader = try await FileReader.open(root: coded.root, source: lossy)
        let lost = try await codedReader.rebuildMissing(present: { $0.map { lossy.chunks[$0] != nil } }, store: { _ in Issue.record("nothing to store") })
        #expect(lost.rebuilt == 0)
        #expect(lost.lost == lose)
    }
}
