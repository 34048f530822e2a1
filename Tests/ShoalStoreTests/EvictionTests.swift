import Foundation
import LMDB
import ShoalCore
@testable import ShoalStore
import ShoalTestSupport
import Testing

struct EvictionTests {
    @Test func overCapacityTheFarthestBinsGoFirstAndWhole() throws {
        let t = try TemporaryStore(capacity: 10)
        let bin0 = try (0..<6).map { _ in try t.chunks.chunk(inBin: 0, of: t.overlay) }
        let bin1 = try (0..<3).map { _ in try t.chunks.chunk(inBin: 1, of: t.overlay) }
        let bin2 = try (0..<3).map { _ in try t.chunks.chunk(inBin: 2, of: t.overlay) }
        try t.store.apply(StoreBatch(chunks: bin1 + bin2))
        let result = try t.store.apply(StoreBatch(chunks: bin0))
        // 12 > 10: bin 0 goes whole (6 chunks), leaving 6.
        #expect(result.evicted == 6)
        #expect(result.radius == 1)
        #expect(try t.store.has(bin0.map(\.address)).allSatisfy { !$0 })
        #expect(try t.store.has((bin1 + bin2).map(\.address)).allSatisfy { $0 })
        let (radius, cursor0, counts) = try t.store.read { r in (try r.radius(), try r.cursor(bin: 0), try r.binCounts()) }
        #expect(radius == 1)
        #expect(cursor0 == 6, "bin IDs never repeat, even after eviction")
        #expect(counts.prefix(3) == [0, 3, 3])
        try expectClean(t.store)
        // Freed slots are reused by later chunks: the slot file does not grow.
        let before = try t.store.read { try $0.slotsNext() }
        try t.store.apply(StoreBatch(chunks: (0..<4).map { _ in try t.chunks.chunk(inBin: 3, of: t.overlay) }))
        #expect(try t.store.read { try $0.slotsNext() } == before)
        try expectClean(t.store)
    }

    @Test func evictionResetsOnlyTheIntervalsThatMayCoverEvictedChunks() throws {
        let t = try TemporaryStore(capacity: 4)
        // A peer far away (proximity 0 to us) and a neighbour (proximity ≥ 5).
        var far = t.overlay
        far.w0 ^= 1 << 63
        var near = t.overlay
        near.w3 ^= 1
        var seals: [IntervalSeal] = []
        for bin in [0, 1, 5] {
            seals.append(IntervalSeal(peer: far, bin: UInt8(bin), epoch: 1, range: 1...3))
            seals.append(IntervalSeal(peer: near, bin: UInt8(bin), epoch: 1, range: 1...3))
        }
        try t.store.apply(StoreBatch(seals: seals))
        let chunks = try (0..<3).map { _ in try t.chunks.chunk(inBin: 0, of: t.overlay) }
            + (0..<2).map { _ in try t.chunks.chunk(inBin: 2, of: t.overlay) }
        let result = try t.store.apply(StoreBatch(chunks: chunks))
        #expect(result.radius == 1)
        let left = try t.store.read { try $0.allIntervals() }.map(\.key)
        // far has proximity 0 < radius 1: any of its bins may hold an evicted chunk → all reset.
        // near has proximity ≥ 1: only its bins below the radius (bin 0) may.
        #expect(Set(left) == Set([IntervalKey(peer: near, bin: 1), IntervalKey(peer: near, bin: 5)]))
    }

    @Test func aFreedSlotIsNotReusedWhileAReaderMaySeeTheOldEntry() async throws {
        let t = try TemporaryStore(capacity: 2)
        let old = try t.chunks.chunk(inBin: 0, of: t.overlay)
        try t.store.apply(StoreBatch(chunks: [old]))
        let writer = StoreWriter(store: t.store)
        defer { writer.stop() }
        // Hold a snapshot that still sees `old`, evict it from another thread, store new chunks,
        // and read `old` through the snapshot: its slot must still hold its payload.
        let store = t.store
        let newcomers = try (0..<3).map { _ in try t.chunks.chunk(inBin: 4, of: t.overlay) } + (0..<2).map { _ in try t.chunks.chunk(inBin: 5, of: t.overlay) }
        let seenThroughOldSnapshot: Chunk? = try store.read { r in
            let done = DispatchSemaphore(value: 0)
            writer.submit(StoreBatch(chunks: Array(newcomers.prefix(3)))) { _ in done.signal() }
            #expect(done.wait(timeout: .now() + 20) == .success)
            writer.submit(StoreBatch(chunks: Array(newcomers.suffix(2)))) { _ in done.signal() }
            #expect(done.wait(timeout: .now() + 20) == .success)
            return try r.chunk(old.address, verify: true)
        }
        #expect(seenThroughOldSnapshot == old)
        #expect(try store.has(old.address) == false)
        try expectClean(store)
    }
}
