import Foundation
import LMDB
import ShoalCore
@testable import ShoalStore
import ShoalTestSupport
import Testing

struct VerifyRepairTests {
    /// A store with chunks in several bins, intervals, fetch entries and a peer; with `merged`,
    /// the chunk records are in `chunks`, else still in `landing`.
    static func populated(merged: Bool = false) throws -> (TemporaryStore, [Chunk]) {
        let t = try TemporaryStore()
        let chunks = t.chunks.chunks(count: 40)
        var batch = StoreBatch(chunks: chunks)
        batch.seals = [IntervalSeal(peer: Address32(w0: 1, w1: 2, w2: 3, w3: 4), bin: 2, epoch: 5, range: 1...40)]
        batch.fetchUpserts = [(t.chunks.chunk().address, FetchRecord(attempts: 2))]
        batch.peerUpserts = [(Address32(w0: 1, w1: 2, w2: 3, w3: 4), PeerRecord(addresses: ["127.0.0.1:9"]))]
        try t.store.apply(batch)
        if merged { #expect(try t.store.mergeLanding() == chunks.count) }
        #expect(try t.store.read { try $0.landingCount() } == (merged ? 0 : chunks.count))
        return (t, chunks)
    }

    @Test(arguments: [false, true]) func aHealthyStoreVerifiesClean(merged: Bool) throws {
        let (t, chunks) = try Self.populated(merged: merged)
        let report = try t.store.verify()
        #expect(report.problems == [])
        #expect(report.chunksChecked == chunks.count)
        #expect(report.pullEntriesChecked == chunks.count)
        #expect(report.fetchEntriesChecked == 1)
        #expect(try t.store.repairPlan().isEmpty)
    }

    @Test(arguments: [false, true]) func aDamagedPayloadIsFoundDroppedAndItsIntervalsReset(merged: Bool) throws {
        let (t, chunks) = try Self.populated(merged: merged)
        let victim = chunks[7]
        let slot = try #require(try t.store.read { try $0.record(victim.address) }).slot
        try t.whileClosed { _ in try overwrite(file: t.slotFilePath, at: Int(slot) * 4096 + 100, with: [0xde, 0xad]) }
        let report = try t.store.verify()
        #expect(report.problems.map(\.kind) == ["hash-mismatch"])
        #expect(report.problems.first?.key == victim.address.hex)

        let dryRun = try t.store.repairPlan()
        #expect(dryRun.actions.contains { $0.kind == "drop-chunk" && $0.key == victim.address.hex
                                          && $0.database == (merged ? "chunks" : "landing") })
        #expect(dryRun.actions.contains { $0.kind == "delete-pull-entry" })
        #expect(dryRun.actions.contains { $0.kind == "free-slot" && $0.key == "\(slot)" })
        #expect(try t.store.verify().problems.count == 1, "a dry run changes nothing")

        let applied = try t.store.repair()
        #expect(applied.actions == dryRun.actions)
        try expectClean(t.store)
        #expect(try t.store.has(victim.address) == false)
        #expect(try t.store.count() == chunks.count - 1)
        // The peer's interval for the bin the dropped chunk lies in is gone, so it is synced again.
        let peer = Address32(w0: 1, w1: 2, w2: 3, w3: 4)
        if Proximity.bin(of: victim.address, relativeTo: peer) == 2 {
            #expect(try t.store.read { try $0.intervals(peer: peer, bin: 2) } == nil)
        }
    }

    @Test(arguments: [false, true]) func aLostIndexEntryIsRebuilt(merged: Bool) throws {
        let (t, chunks) = try Self.populated(merged: merged)
        let record = try #require(try t.store.read { try $0.record(chunks[3].address) })
        try t.whileClosed { dir in
            try withRawEnvironment(dir) { env in
                let pull = try env.openDatabase(Schema.Name.pull)
                try env.write { _ = try $0.delete(pull, PullKey(bin: record.bin, binID: record.binID).lmdbBytes) }
            }
        }
        #expect(try t.store.verify().problems.map(\.kind) == ["pull-missing"])
        let plan = try t.store.repair()
        #expect(plan.actions.map(\.kind) == ["add-pull-entry"])
        try expectClean(t.store)
        #expect(try t.store.read { try $0.range(bin: Int(record.bin), from: record.binID, limit: 1) }.first?.address == chunks[3].address)
    }

    @Test func aTruncatedRecordIsReportedNotCrashedOn() throws {
        let (t, chunks) = try Self.populated()
        try t.whileClosed { dir in
            try withRawEnvironment(dir) { env in
                let db = try env.openDatabase(Schema.Name.chunks)
                try env.write { try $0.put(db, chunks[0].address.bytes, [1, 2, 3]) }
                let intervals = try env.openDatabase(Schema.Name.intervals)
                try env.write { try $0.put(intervals, [UInt8](repeating: 1, count: 33), [9]) }
            }
        }
        let kinds = try t.store.verify().problems.map(\.kind)
        #expect(kinds.contains("undecodable"))
        #expect(kinds.filter { $0 == "undecodable" }.count == 2)
        // The chunk's record is gone, so reading it says so rather than crashing.
        #expect(throws: StoreError.self) { try t.store.get(chunks[0].address) }
        try t.store.repair()
        try expectClean(t.store)
        #expect(try t.store.get(chunks[0].address) == nil)
    }

    @Test func orphanAndDoubleFreeSlotsAreFound() throws {
        let (t, _) = try Self.populated()
        try t.whileClosed { dir in
            // Two more slots in the file (as a crash after writing payloads leaves them)…
            try overwrite(file: t.slotFilePath, at: 41 * 4096, with: [0])
            try withRawEnvironment(dir) { env in
                let meta = try env.openDatabase(Schema.Name.meta)
                // …and claimed by slots_next without a chunk or a free entry: both orphans.
                try env.write { try $0.put(meta, Array(Schema.MetaKey.slotsNext.utf8), LEUInt64(42).lmdbBytes) }
                let slots = try env.openDatabase(Schema.Name.slots)
                try env.write { txn in
                    try txn.put(slots, FreeSlotKey(freedIn: 1, slot: 41).bytes, [UInt8]())
                    try txn.put(slots, FreeSlotKey(freedIn: 2, slot: 41).bytes, [UInt8]())
                    try txn.put(slots, FreeSlotKey(freedIn: 2, slot: 3).bytes, [UInt8]())
                }
            }
        }
        let kinds = Set(try t.store.verify().problems.map(\.kind))
        #expect(kinds == ["slot-double-free", "slot-used-and-free", "slot-orphan"])
        try t.store.repair()
        try expectClean(t.store)
    }

    @Test func aChunkRecordedTwiceKeepsOneRecord() throws {
        let (t, chunks) = try Self.populated(merged: true)
        let victim = chunks[5]
        let record = try #require(try t.store.read { try $0.record(victim.address) })
        try t.whileClosed { dir in
            try withRawEnvironment(dir) { env in
                let landing = try env.openDatabase(Schema.Name.landing)
                try env.write { try $0.put(landing, UInt64(999).lmdbBytes, LandingEntry(address: victim.address, record: record).lmdbBytes) }
            }
        }
        #expect(try t.store.verify().problems.map(\.kind) == ["chunk-duplicate"])
        let plan = try t.store.repair()
        #expect(plan.actions.map(\.kind) == ["delete-duplicate"])
        try expectClean(t.store)
        #expect(try t.store.get(victim.address, verify: true) == victim)
    }

    @Test func aCursorBehindItsBinIsRaised() throws {
        let (t, chunks) = try Self.populated()
        let record = try #require(try t.store.read { try $0.record(chunks[0].address) })
        try t.whileClosed { dir in
            try withRawEnvironment(dir) { env in
                let pull = try env.openDatabase(Schema.Name.pull)
                try env.write { try $0.put(pull, PullKey.cursor(record.bin).lmdbBytes, LEUInt64(0).lmdbBytes) }
            }
        }
        #expect(try t.store.verify().problems.contains { $0.kind == "cursor-behind" })
        try t.store.repair()
        try expectClean(t.store)
    }

    @Test func aBackupIsACompactedCopyOfTheSameStore() throws {
        let t = try TemporaryStore(capacity: 30)
        let chunks = t.chunks.chunks(count: 60)
        try t.store.apply(StoreBatch(chunks: chunks))  // evicts bins, leaving free slots
        let before = try t.store.read { r in (try r.chunkCount(), try r.cursors(), try r.freeSlotCount()) }
        #expect(before.2 > 0)
        let dest = t.directory + "-backup"
        defer { try? FileManager.default.removeItem(atPath: dest) }
        let report = try t.store.backup(to: dest)
        #expect(report.chunks == before.0)
        let copy = try Store(directory: dest, options: Store.Options(readOnly: true))
        defer { copy.close() }
        #expect(copy.epoch == t.store.epoch)
        #expect(copy.overlay == t.overlay)
        let after = try copy.read { r in (try r.chunkCount(), try r.cursors(), try r.freeSlotCount(), try r.slotsNext()) }
        #expect(after.0 == before.0)
        #expect(after.1 == before.1)
        #expect(after.2 == 0)
        #expect(after.3 == UInt64(before.0))
        try expectClean(copy)
        for chunk in chunks where try t.store.has(chunk.address) {
            #expect(try copy.get(chunk.address, verify: true) == chunk)
        }
        #expect(throws: StoreError.self) { try t.store.backup(to: dest) }
    }
}

struct DamagedNumbersTests {
    @Test func aHugeSlotNumberIsAnErrorNotACrash() throws {
        let t = try TemporaryStore()
        let chunk = t.chunks.chunk()
        try t.store.apply(StoreBatch(chunks: [chunk]))
        try t.whileClosed { dir in
            try withRawEnvironment(dir) { env in
                let chunks = try env.openDatabase(Schema.Name.chunks)
                let record = ChunkRecord(span: chunk.span, slot: .max, binID: 1, length: 4096,
                                         bin: UInt8(Proximity.bin(of: chunk.address, relativeTo: t.overlay)))
                try env.write { try $0.put(chunks, chunk.address.bytes, record.lmdbBytes) }
            }
        }
        let error = #expect(throws: StoreError.self) { try t.store.get(chunk.address) }
        #expect(error?.code == .slotMissing)
        #expect(try t.store.verify().problems.map(\.kind).contains("slot-out-of-range"))
        #expect(throws: StoreError.self) { try t.store.backup(to: t.directory + "-bk") }
        try? FileManager.default.removeItem(atPath: t.directory + "-bk")
    }

    @Test func aHugeSlotsNextIsReportedNotAllocated() throws {
        let t = try TemporaryStore()
        try t.store.apply(StoreBatch(chunks: t.chunks.chunks(count: 3)))
        try t.whileClosed { dir in
            try withRawEnvironment(dir) { env in
                let meta = try env.openDatabase(Schema.Name.meta)
                try env.write { try $0.put(meta, Array(Schema.MetaKey.slotsNext.utf8), LEUInt64(1 << 56).lmdbBytes) }
            }
        }
        #expect(try t.store.verify().problems.map(\.kind) == ["meta-slots-next"])
    }
}
