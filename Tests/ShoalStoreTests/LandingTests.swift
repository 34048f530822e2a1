import Foundation
import LMDB
import ShoalCore
@testable import ShoalStore
import ShoalTestSupport
import Testing

/// New chunk records go to `landing` (appends) and are merged into `chunks` in address order.
struct LandingTests {
    @Test func storedChunksLandAndAMergeMovesThemInAddressOrder() throws {
        let t = try TemporaryStore()
        let chunks = t.chunks.chunks(count: 100)
        try t.store.apply(StoreBatch(chunks: chunks))
        #expect(try t.store.read { try $0.landingCount() } == 100)
        #expect(try t.store.read { try $0.isLanded(chunks[0].address) })
        for chunk in chunks { #expect(try t.store.get(chunk.address, verify: true) == chunk) }

        #expect(try t.store.mergeLanding() == 100)
        #expect(try t.store.read { try $0.landingCount() } == 0)
        #expect(try t.store.count() == 100)
        #expect(try t.store.read { try $0.isLanded(chunks[0].address) } == false)
        for chunk in chunks { #expect(try t.store.get(chunk.address, verify: true) == chunk) }
        var previous: ChunkAddress?
        try t.store.read { r in
            try r.forEachRecord { address, _ in
                if let previous { #expect(previous < address) }
                previous = address
                return true
            }
        }
        try expectClean(t.store)
        #expect(try t.store.mergeLanding() == 0)
    }

    @Test func aChunkIsStoredOnceWhereverItsRecordIs() throws {
        let t = try TemporaryStore()
        let merged = t.chunks.chunk(), landed = t.chunks.chunk()
        try t.store.apply(StoreBatch(chunks: [merged]))
        try t.store.mergeLanding()
        try t.store.apply(StoreBatch(chunks: [landed]))
        let again = try t.store.apply(StoreBatch(chunks: [merged, landed, landed]))
        #expect(again.stored.isEmpty)
        #expect(again.duplicates == 3)
        #expect(try t.store.count() == 2)
        // Twice in one batch: stored once.
        let fresh = t.chunks.chunk()
        let twice = try t.store.apply(StoreBatch(chunks: [fresh, fresh]))
        #expect(twice.stored.count == 1 && twice.duplicates == 1)
        try expectClean(t.store)
    }

    @Test func aFullLandingIsMergedInsideTheCommit() throws {
        let t = try TemporaryStore(overlay: Address32(w0: 9, w1: 9, w2: 9, w3: 9), seed: 4) { $0.landingMax = 10 }
        for _ in 0..<5 { try t.store.apply(StoreBatch(chunks: t.chunks.chunks(count: 4, size: 100))) }
        // 4, 8, then 12 ≥ 10 merged, 4, 8.
        #expect(try t.store.read { try $0.landingCount() } == 8)
        #expect(try t.store.count() == 20)
        try expectClean(t.store)
    }

    @Test func aReopenedOrReadOnlyStoreFindsLandedChunks() throws {
        let t = try TemporaryStore()
        let chunks = t.chunks.chunks(count: 30, size: 500)
        try t.store.apply(StoreBatch(chunks: chunks))
        try t.reopen(readOnly: true)
        for chunk in chunks { #expect(try t.store.get(chunk.address, verify: true) == chunk) }
        #expect(try t.store.count() == 30)
        try t.reopen()
        // The writable index is rebuilt from `landing`: duplicates are still recognised.
        let again = try t.store.apply(StoreBatch(chunks: chunks))
        #expect(again.duplicates == 30)
        try expectClean(t.store)
    }

    @Test func aReaderFromBeforeAMergeStillSeesItsChunks() throws {
        let t = try TemporaryStore()
        let chunks = t.chunks.chunks(count: 20, size: 200)
        try t.store.apply(StoreBatch(chunks: chunks))
        try t.store.read { r in
            // The merge commits while this snapshot is open: in it the records are still in `landing`.
            try t.store.mergeLanding()
            for chunk in chunks { #expect(try r.has(chunk.address)) }
        }
        // A write after the reader ended lets the index forget the merged entries.
        try t.store.apply(StoreBatch(chunks: [t.chunks.chunk()]))
        for chunk in chunks { #expect(try t.store.has(chunk.address)) }
        #expect(try t.store.read { try $0.landingCount() } == 1)
    }

    @Test func theWriterMergesWhenIdle() async throws {
        let t = try TemporaryStore()
        var limits = StoreWriter.Limits()
        limits.idleMergeAfterMs = 20
        let writer = StoreWriter(store: t.store, limits: limits)
        defer { writer.stop() }
        _ = try await writer.apply(StoreBatch(chunks: t.chunks.chunks(count: 10, size: 64)))
        let deadline = ContinuousClock.now + .seconds(30)
        while try t.store.read({ try $0.landingCount() }) > 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(try t.store.read { try $0.landingCount() } == 0)
        #expect(try t.store.count() == 10)
    }

    @Test func evictionRemovesLandedAndMergedChunksAlike() throws {
        let t = try TemporaryStore(capacity: 40)
        try t.store.apply(StoreBatch(chunks: t.chunks.chunks(count: 30, size: 64)))
        try t.store.mergeLanding()
        let result = try t.store.apply(StoreBatch(chunks: t.chunks.chunks(count: 30, size: 64)))
        #expect(result.evicted > 0)
        #expect(try t.store.count() <= 40)
        try expectClean(t.store)
    }

    @Test func aVersionOneStoreIsMigrated() throws {
        let t = try TemporaryStore()
        let chunks = t.chunks.chunks(count: 5)
        try t.store.apply(StoreBatch(chunks: chunks))
        try t.store.mergeLanding()
        // Make it look like a v1 store: no landing database, no landing_next, schema 1.
        try t.whileClosed { dir in
            try withRawEnvironment(dir) { env in
                let meta = try env.openDatabase(Schema.Name.meta)
                let landing = try env.openDatabase(Schema.Name.landing)
                try env.write { txn in
                    try txn.put(meta, Array(Schema.MetaKey.schemaVersion.utf8), LEUInt64(1).lmdbBytes)
                    _ = try txn.delete(meta, Array(Schema.MetaKey.landingNext.utf8))
                    try txn.dropDatabase(landing)
                }
            }
        }
        #expect(try t.store.read { try $0.schemaVersion() } == Schema.version)
        for chunk in chunks { #expect(try t.store.get(chunk.address, verify: true) == chunk) }
        try t.store.apply(StoreBatch(chunks: t.chunks.chunks(count: 3)))
        #expect(try t.store.count() == 8)
        try expectClean(t.store)
    }
}

struct SlotFileTests {
    @Test func stagedRunsReachTheFileAtSync() throws {
        let directory = try TemporaryDirectory("slots")
        let path = directory.sub("slots")
        let file = try SlotFile(path: path, slotSize: 4096, readOnly: false, stagingBytes: 3 * 4096)
        // A run of 5 (the buffer holds 3), a gap, a lone short payload, then an earlier slot.
        var payloads: [UInt64: [UInt8]] = [:]
        var source = SeededChunks(seed: 8)
        for slot: UInt64 in [0, 1, 2, 3, 4, 9, 6] {
            let bytes = source.bytes(slot == 9 ? 100 : 4096)
            payloads[slot] = bytes
            try bytes.withUnsafeBytes { try file.write(slot: slot, payload: $0) }
        }
        try file.sync()
        #expect(file.fileSize() == 10 * 4096)
        for (slot, bytes) in payloads {
            #expect(try file.read(slot: slot, length: bytes.count) == bytes)
        }
        // The rest of a short payload's slot is zeros.
        #expect(try file.read(slot: 9, length: 4096)[100...].allSatisfy { $0 == 0 })
        // What is staged and discarded never reaches the file.
        try [UInt8](repeating: 7, count: 4096).withUnsafeBytes { try file.write(slot: 5, payload: $0) }
        file.discardStaged()
        try file.sync()
        #expect(try file.read(slot: 5, length: 4096).allSatisfy { $0 == 0 })
    }
}
