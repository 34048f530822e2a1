import Foundation
import LMDB
import ShoalCore
@testable import ShoalStore
import ShoalTestSupport
import Testing

struct StoreTests {
    @Test func storedChunksReadBackAndSurviveAReopen() throws {
        let t = try TemporaryStore()
        let chunks = t.chunks.chunks(count: 100) + [try Chunk(span: 9000, payload: [1, 2, 3])]
        let result = try t.store.apply(StoreBatch(chunks: chunks))
        #expect(result.stored.count == chunks.count)
        #expect(result.duplicates == 0)
        let epoch = t.store.epoch
        try t.reopen()
        #expect(t.store.epoch == epoch)
        for chunk in chunks {
            #expect(try t.store.get(chunk.address, verify: true) == chunk)
        }
        #expect(try t.store.count() == chunks.count)
    }

    @Test func aChunkAlreadyStoredIsNotStoredTwice() throws {
        let t = try TemporaryStore()
        let chunks = t.chunks.chunks(count: 10)
        try t.store.apply(StoreBatch(chunks: chunks))
        let again = try t.store.apply(StoreBatch(chunks: chunks + [chunks[0]] + t.chunks.chunks(count: 2)))
        #expect(again.duplicates == 11)
        #expect(again.stored.count == 2)
        #expect(try t.store.count() == 12)
        // A duplicate takes no slot: 12 chunks, 12 slots.
        #expect(try t.store.read { try $0.slotsNext() } == 12)
        try expectClean(t.store)
    }

    @Test func binIDsIncreasePerBinFromOneAndCursorsFollow() throws {
        let t = try TemporaryStore()
        var chunks: [Chunk] = []
        for bin in [0, 0, 1, 0, 2, 1] { chunks.append(try t.chunks.chunk(inBin: bin, of: t.overlay)) }
        let result = try t.store.apply(StoreBatch(chunks: chunks))
        #expect(result.stored.map(\.bin) == [0, 0, 1, 0, 2, 1])
        #expect(result.stored.map(\.binID) == [1, 2, 1, 3, 1, 2])
        let (cursors, bin0) = try t.store.read { r in (try r.cursors(), try r.range(bin: 0)) }
        #expect(Array(cursors.prefix(4)) == [3, 2, 1, 0])
        #expect(bin0.map(\.address) == [chunks[0].address, chunks[1].address, chunks[3].address])
        let from2 = try t.store.read { try $0.range(bin: 0, from: 2, limit: 1) }
        #expect(from2.map(\.binID) == [2])
    }

    @Test func hasAnswersManyAtOnce() throws {
        let t = try TemporaryStore()
        let stored = t.chunks.chunks(count: 3), absent = t.chunks.chunks(count: 2)
        try t.store.apply(StoreBatch(chunks: stored))
        #expect(try t.store.has((stored + absent).map(\.address)) == [true, true, true, false, false])
    }

    @Test func intervalsAreSealedAndResetWhenThePeersEpochChanges() throws {
        let t = try TemporaryStore()
        let peer = Address32(w0: 9, w1: 9, w2: 9, w3: 9)
        var batch = StoreBatch(chunks: t.chunks.chunks(count: 2))
        batch.seals = [IntervalSeal(peer: peer, bin: 3, epoch: 7, range: 1...10),
                       IntervalSeal(peer: peer, bin: 3, epoch: 7, range: 12...20)]
        try t.store.apply(batch)
        try t.store.apply(StoreBatch(seals: [IntervalSeal(peer: peer, bin: 3, epoch: 7, range: 11...11)]))
        #expect(try t.store.read { try $0.intervals(peer: peer, bin: 3) } == IntervalRecord(epoch: 7, set: IntervalSet([1...20])))
        // The peer lost its store: ranges of the old epoch no longer mean anything.
        try t.store.apply(StoreBatch(seals: [IntervalSeal(peer: peer, bin: 3, epoch: 8, range: 5...6)]))
        #expect(try t.store.read { try $0.intervals(peer: peer, bin: 3) } == IntervalRecord(epoch: 8, set: IntervalSet([5...6])))
    }

    @Test func aSealWaitsForChunksAnotherStreamIsFetching() throws {
        let t = try TemporaryStore()
        let peer = Address32(w0: 4, w1: 4, w2: 4, w3: 4)
        let elsewhere = t.chunks.chunk()
        let seal = IntervalSeal(peer: peer, bin: 1, epoch: 1, range: 1...8, requires: [elsewhere.address])
        let early = try t.store.apply(StoreBatch(chunks: t.chunks.chunks(count: 2), seals: [seal]))
        #expect(early.unsealed == [0])
        #expect(try t.store.read { try $0.intervals(peer: peer, bin: 1) } == nil)
        let later = try t.store.apply(StoreBatch(chunks: [elsewhere], seals: [seal]))
        #expect(later.unsealed == [])
        #expect(try t.store.read { try $0.intervals(peer: peer, bin: 1) }?.ranges == [1...8])
    }

    @Test func resettingOnePeerLeavesTheOthers() throws {
        let t = try TemporaryStore()
        let a = Address32(w0: 1, w1: 0, w2: 0, w3: 0), b = Address32(w0: 2, w1: 0, w2: 0, w3: 0)
        try t.store.apply(StoreBatch(seals: [IntervalSeal(peer: a, bin: 0, epoch: 1, range: 1...5),
                                             IntervalSeal(peer: a, bin: 4, epoch: 1, range: 1...5),
                                             IntervalSeal(peer: b, bin: 0, epoch: 1, range: 1...5)]))
        var reset = StoreBatch()
        reset.intervalResets = [a]
        try t.store.apply(reset)
        let all = try t.store.read { try $0.allIntervals() }
        #expect(all.map(\.key) == [IntervalKey(peer: b, bin: 0)])
    }

    @Test func aChunkLeavesTheFetchSetInTheTransactionThatStoresIt() throws {
        let t = try TemporaryStore()
        let wanted = t.chunks.chunks(count: 3)
        let hint = Address32(w0: 7, w1: 7, w2: 7, w3: 7)
        var batch = StoreBatch()
        batch.fetchUpserts = wanted.map { ($0.address, FetchRecord(attempts: 1, nextAttemptMs: 5, group: nil, hints: [hint])) }
        try t.store.apply(batch)
        #expect(try t.store.read { try $0.fetchSet() }.count == 3)
        try t.store.apply(StoreBatch(chunks: [wanted[1]]))
        let left = try t.store.read { try $0.fetchSet() }
        #expect(Set(left.map(\.address)) == Set([wanted[0].address, wanted[2].address]))
        #expect(left.first?.record.hints == [hint])
        // An entry for a chunk already stored is not added.
        var again = StoreBatch()
        again.fetchUpserts = [(wanted[1].address, FetchRecord())]
        try t.store.apply(again)
        #expect(try t.store.read { try $0.fetchSet() }.count == 2)
        try expectClean(t.store)
    }

    @Test func peersDownloadsAndABoundedJournal() throws {
        let t = try TemporaryStore()
        let peer = Address32(w0: 3, w1: 3, w2: 3, w3: 3)
        var batch = StoreBatch()
        batch.peerUpserts = [(peer, PeerRecord(addresses: ["127.0.0.1:1634"], lastSeenMs: 10, score: -3, banUntilMs: 99))]
        batch.downloadUpserts = [(peer, DownloadRecord(policy: .eagerPin, state: .active, chunksDone: 1, chunksTotal: 9, createdMs: 4))]
        batch.journal = ["first"]
        try t.store.apply(batch)
        #expect(try t.store.read { try $0.peers() }.first?.record.addresses == ["127.0.0.1:1634"])
        #expect(try t.store.read { try $0.downloads() }.first?.record.chunksTotal == 9)
        var many = StoreBatch()
        many.journal = (0..<(Schema.journalEntriesMax + 5)).map { "entry \($0)" }
        try t.store.apply(many)
        let journal = try t.store.read { try $0.journal() }
        #expect(journal.count == Schema.journalEntriesMax)
        #expect(journal.last?.entry.text == "entry \(Schema.journalEntriesMax + 4)")
        #expect(journal.first?.entry.text == "entry 5", "the oldest entries were dropped")
    }

    @Test func aStoreFromANewerSchemaIsRefused() throws {
        let t = try TemporaryStore()
        try t.whileClosed { dir in
            try withRawEnvironment(dir) { env in
                let meta = try env.openDatabase(Schema.Name.meta)
                try env.write { try $0.put(meta, Array(Schema.MetaKey.schemaVersion.utf8), LEUInt64(Schema.version + 1).lmdbBytes) }
            }
            let error = #expect(throws: StoreError.self) { try Store(directory: dir, options: Store.Options(overlay: t.overlay)) }
            #expect(error?.code == .schemaTooNew)
            // Restore it so the reopen after this closure works.
            try withRawEnvironment(dir) { env in
                let meta = try env.openDatabase(Schema.Name.meta)
                try env.write { try $0.put(meta, Array(Schema.MetaKey.schemaVersion.utf8), LEUInt64(Schema.version).lmdbBytes) }
            }
        }
    }

    @Test func anotherNodesStoreIsRefused() throws {
        let t = try TemporaryStore()
        t.store.close()
        let error = #expect(throws: StoreError.self) {
            try Store(directory: t.directory, options: Store.Options(overlay: Address32(w0: 1, w1: 1, w2: 1, w3: 1)))
        }
        #expect(error?.code == .overlayMismatch)
        try t.reopen()
    }

    @Test func aStoreIsNotOpenedTwiceInOneProcess() throws {
        let t = try TemporaryStore()
        // A second writer is refused by the writer lock, before LMDB is asked.
        let error = #expect(throws: StoreError.self) { try Store(directory: t.directory, options: Store.Options(overlay: t.overlay)) }
        #expect(error?.code == .inUse)
        #expect(error?.message.contains("this process (pid \(getpid()))") == true, "\(String(describing: error))")
        // A reader beside a writer in one process is refused by LMDB's own rule.
        let reader = #expect(throws: StoreError.self) { try Store(directory: t.directory, options: Store.Options(readOnly: true)) }
        #expect((reader?.underlying as? LMDBError)?.name == "EBUSY")
    }

    @Test func closingAWritableStoreLetsTheNextWriterIn() throws {
        let t = try TemporaryStore()
        try t.store.apply(StoreBatch(chunks: t.chunks.chunks(count: 2)))
        try t.reopen()
        #expect(try t.store.count() == 2)
        #expect(FileManager.default.fileExists(atPath: t.directory + "/writer.lock"))
        // A read-only open never takes (or creates) the lock.
        t.store.close()
        try FileManager.default.removeItem(atPath: t.directory + "/writer.lock")
        try t.reopen(readOnly: true)
        #expect(!FileManager.default.fileExists(atPath: t.directory + "/writer.lock"))
        try t.reopen()
    }

    @Test func readOnlyOpenOfNothingIsNotAStore() throws {
        let empty = try TemporaryDirectory("empty")
        let dir = empty.path
        let error = #expect(throws: StoreError.self) { try Store(directory: dir, options: Store.Options(readOnly: true)) }
        #expect(error?.code == .notAStore)
        let noOverlay = #expect(throws: StoreError.self) { try Store(directory: dir + "/new", options: Store.Options()) }
        #expect(noOverlay?.code == .notAStore)
    }

    @Test func aReadOnlyStoreRefusesWrites() throws {
        let t = try TemporaryStore()
        try t.store.apply(StoreBatch(chunks: t.chunks.chunks(count: 1)))
        try t.reopen(readOnly: true)
        let error = #expect(throws: StoreError.self) { try t.store.apply(StoreBatch(chunks: t.chunks.chunks(count: 1))) }
        #expect(error?.code == .readOnly)
        #expect(try t.store.count() == 1)
    }

    @Test func aFullMapFailsTheBatchCleanlyAndStoresNothingOfIt() throws {
        let t = try TemporaryStore(mapSize: 1 << 20, mapSizeMax: 1 << 20)
        try t.store.apply(StoreBatch(chunks: t.chunks.chunks(count: 10)))
        let big = t.chunks.chunks(count: 20_000, size: 16)
        let error = #expect(throws: StoreError.self) { try t.store.apply(StoreBatch(chunks: big)) }
        #expect((error?.underlying as? LMDBError)?.name == "MDB_MAP_FULL")
        #expect(try t.store.count() == 10)
        #expect(try t.store.read { try $0.slotsNext() } == 10)
        try expectClean(t.store)
    }

    @Test func theMapGrowsFromOneMebibyteAsChunksArrive() throws {
        let t = try TemporaryStore(mapSize: 1 << 20)
        for _ in 0..<10 { try t.store.apply(StoreBatch(chunks: t.chunks.chunks(count: 2000, size: 32))) }
        #expect(try t.store.count() == 20_000)
        #expect(t.store.environment.mapSize > 1 << 20)
        try expectClean(t.store)
    }

    @Test func invalidSealsAreRefusedBeforeAnythingIsWritten() throws {
        let t = try TemporaryStore()
        var batch = StoreBatch(chunks: t.chunks.chunks(count: 1))
        batch.seals = [IntervalSeal(peer: .zero, bin: 32, epoch: 1, range: 1...1)]
        let error = #expect(throws: StoreError.self) { try t.store.apply(batch) }
        #expect(error?.code == .invalidBatch)
        #expect(try t.store.count() == 0)
    }
}
