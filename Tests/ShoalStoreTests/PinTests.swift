import Foundation
import LMDB
import ShoalCore
@testable import ShoalStore
import ShoalTestSupport
import Testing

struct PinTests {
    @Test func aPinNeedsEveryChunkStoredAndCountsEachOnce() throws {
        let t = try TemporaryStore()
        let tree = t.chunks.chunks(count: 4)
        let root = tree[0].address
        try t.store.apply(StoreBatch(chunks: Array(tree.prefix(3))))

        // One chunk of the tree is not stored: refused, nothing written.
        var batch = StoreBatch()
        batch.pins = [PinRequest(root: root, chunks: tree.map(\.address), bytes: 12_000)]
        var result = try t.store.apply(batch)
        #expect(result.pinOutcomes == [.missing(count: 1, sample: [tree[3].address])])
        #expect(try t.store.read { try $0.pin(root) } == nil)
        #expect(try t.store.read { try $0.pinnedChunkCount() } == 0)

        // Stored in the same batch as the pin: the pin sees it.
        batch.chunks = [tree[3]]
        // A chunk listed twice (a file of repeated content) still counts once.
        batch.pins[0].chunks.append(tree[1].address)
        result = try t.store.apply(batch)
        #expect(result.pinOutcomes == [.pinned])
        let record = try #require(try t.store.read { try $0.pin(root) })
        #expect(record.chunks == 4 && record.bytes == 12_000)
        #expect(try t.store.read { r in try tree.map { try r.pinCount($0.address) } } == [1, 1, 1, 1])

        batch.chunks = []
        #expect(try t.store.apply(batch).pinOutcomes == [.alreadyPinned])
        #expect(try t.store.read { r in try tree.map { try r.pinCount($0.address) } } == [1, 1, 1, 1])
        try expectClean(t.store)
    }

    @Test func twoPinsShareChunksAndUnpinningOneKeepsTheOther() throws {
        let t = try TemporaryStore()
        let shared = t.chunks.chunks(count: 2)
        let a = t.chunks.chunks(count: 2), b = t.chunks.chunks(count: 2)
        try t.store.apply(StoreBatch(chunks: shared + a + b))
        var batch = StoreBatch()
        batch.pins = [PinRequest(root: a[0].address, chunks: (a + shared).map(\.address), bytes: 1),
                      PinRequest(root: b[0].address, chunks: (b + shared).map(\.address), bytes: 2)]
        #expect(try t.store.apply(batch).pinOutcomes == [.pinned, .pinned])
        #expect(try t.store.read { try $0.pinCount(shared[0].address) } == 2)
        #expect(try t.store.read { try $0.pins() }.map(\.root) == [a[0].address, b[0].address].sorted())

        var unpin = StoreBatch()
        unpin.unpins = [UnpinRequest(root: a[0].address, chunks: (a + shared).map(\.address)),
                        UnpinRequest(root: a[0].address, chunks: (a + shared).map(\.address))]
        // The second is for a root no longer pinned.
        #expect(try t.store.apply(unpin).unpinned == [true, false])
        #expect(try t.store.read { try $0.pinCount(shared[0].address) } == 1)
        #expect(try t.store.read { try $0.pinCount(a[1].address) } == 0)
        #expect(try t.store.read { try $0.pinnedChunkCount() } == 4)
        try expectClean(t.store)
    }

    @Test func evictionNeverTakesAPinnedChunk() throws {
        let t = try TemporaryStore(capacity: 10)
        // Bin 0 holds 6 chunks, 2 of them pinned; bins 1 and 2 hold 3 each.
        let bin0 = try (0..<6).map { _ in try t.chunks.chunk(inBin: 0, of: t.overlay) }
        let bin1 = try (0..<3).map { _ in try t.chunks.chunk(inBin: 1, of: t.overlay) }
        let bin2 = try (0..<3).map { _ in try t.chunks.chunk(inBin: 2, of: t.overlay) }
        var batch = StoreBatch(chunks: bin0)
        batch.pins = [PinRequest(root: bin0[0].address, chunks: [bin0[0].address, bin0[1].address], bytes: 2)]
        #expect(try t.store.apply(batch).pinOutcomes == [.pinned])
        try t.store.apply(StoreBatch(chunks: bin1))
        // 12 > 10: bin 0 is evicted but for its 2 pinned chunks; 8 remain.
        let result = try t.store.apply(StoreBatch(chunks: bin2))
        #expect(result.evicted == 4)
        #expect(result.radius == 1)
        #expect(try t.store.has(bin0.map(\.address)) == [true, true, false, false, false, false])
        #expect(try t.store.count() == 8)
        try expectClean(t.store)
    }

    @Test func morePinnedThanCapacityEvictsEverythingElseAndStops() throws {
        let t = try TemporaryStore(capacity: 3)
        let pinned = try (0..<2).map { _ in try t.chunks.chunk(inBin: 0, of: t.overlay) }
            + (0..<2).map { _ in try t.chunks.chunk(inBin: 3, of: t.overlay) }
        var batch = StoreBatch(chunks: pinned)
        batch.pins = [PinRequest(root: pinned[0].address, chunks: pinned.map(\.address), bytes: 4)]
        try t.store.apply(batch)
        let loose = try (0..<2).map { _ in try t.chunks.chunk(inBin: 1, of: t.overlay) }
            + (0..<2).map { _ in try t.chunks.chunk(inBin: 5, of: t.overlay) }
        let result = try t.store.apply(StoreBatch(chunks: loose))
        // Every unpinned chunk goes (bins 1 and 5 are above some pinned ones), the 4 pinned stay;
        // the radius ends above the last bin anything was evicted from.
        #expect(result.evicted == 4)
        #expect(result.radius == 6)
        #expect(try t.store.has(pinned.map(\.address)).allSatisfy { $0 })
        #expect(try t.store.has(loose.map(\.address)).allSatisfy { !$0 })
        try expectClean(t.store)

        // Unpinned, they may go like any other chunk.
        var unpin = StoreBatch()
        unpin.unpins = [UnpinRequest(root: pinned[0].address, chunks: pinned.map(\.address))]
        try t.store.apply(unpin)
        try t.store.apply(StoreBatch(chunks: [try t.chunks.chunk(inBin: 6, of: t.overlay)]))
        #expect(try t.store.count() <= 3)
        try expectClean(t.store)
    }

    @Test func pinsSurviveAReopen() throws {
        let t = try TemporaryStore()
        let tree = t.chunks.chunks(count: 3)
        var batch = StoreBatch(chunks: tree)
        batch.pins = [PinRequest(root: tree[0].address, chunks: tree.map(\.address), bytes: 3)]
        try t.store.apply(batch)
        try t.reopen()
        #expect(try t.store.read { try $0.pins() }.count == 1)
        #expect(try t.store.read { try $0.pinCount(tree[2].address) } == 1)

        // A backup carries them.
        let dest = t.directory + "-backup"
        defer { try? FileManager.default.removeItem(atPath: dest) }
        _ = try t.store.backup(to: dest)
        let copy = try Store(directory: dest, options: Store.Options(readOnly: true))
        defer { copy.close() }
        #expect(try copy.read { try $0.pins() }.map(\.root) == [tree[0].address])
        #expect(try copy.read { try $0.pinnedChunkCount() } == 3)
    }
}
