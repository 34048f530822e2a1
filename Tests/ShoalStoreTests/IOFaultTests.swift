import Locking
import Foundation
import LMDB
import ShoalCore
import ShoalStore
import ShoalTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What the store promises when the disk fails a write (decision 0011): the write that hit the
/// fault is not acknowledged, what was acknowledged before stays readable, a full disk fails
/// only its batch, any other failure stops writes until a restart, and after a restart the
/// store holds exactly what was acknowledged and verifies clean.
///
/// Faults are injected with `_Failpoints`, armed only for each test's own store directory, so
/// suites running beside this one never see them. Serialized: one armed store at a time.
@Suite(.serialized) struct IOFaultTests {
    enum Fault: String, CaseIterable, CustomTestStringConvertible {
        case pwriteENOSPC, pwriteEIO, fdatasyncEIO, fdatasyncENOSPC, commitEIO, commitENOSPC
        var testDescription: String { rawValue }

        var site: _Failpoints.Site {
            switch self {
            case .pwriteENOSPC, .pwriteEIO: return .pwrite
            case .fdatasyncEIO, .fdatasyncENOSPC: return .fdatasync
            case .commitEIO, .commitENOSPC: return .commit
            }
        }

        var errno: Int32 {
            switch self {
            case .pwriteENOSPC, .fdatasyncENOSPC, .commitENOSPC: return ENOSPC
            case .pwriteEIO, .fdatasyncEIO, .commitEIO: return EIO
            }
        }

        /// A full disk fails only its batch, unless it was the sync that failed: after a
        /// failed `fdatasync` nothing written since the last good one can be trusted.
        var stopsWrites: Bool { !(errno == ENOSPC && site != .fdatasync) }
    }

    @Test(arguments: Fault.allCases)
    func aWriteThatHitsAFaultIsNotAcknowledgedAndTheStoreReopensAtItsLastCommit(_ fault: Fault) async throws {
        let t = try TemporaryStore(seed: 11)
        let writer = StoreWriter(store: t.store, limits: .withoutIdleMerge)
        let acknowledged = t.chunks.chunks(count: 24, size: 1000) + t.chunks.chunks(count: 8, size: 4096)
        for part in [acknowledged.prefix(16), acknowledged.dropFirst(16)] {
            _ = try await writer.apply(StoreBatch(chunks: Array(part)))
        }
        let slotsBefore = try t.store.verify().slotsNext

        _Failpoints.arm(fault.site, after: 0, errno: fault.errno, under: t.directory)
        defer { _Failpoints.disarm(under: t.directory) }
        let refused = t.chunks.chunks(count: 12, size: 4096)
        let error = try await #require(throws: StoreError.self) { try await writer.apply(StoreBatch(chunks: refused)) }
        #expect(_Failpoints.injectedCount(under: t.directory) == 1, "the armed fault fired once")
        expect(error, isThe: fault)

        // Reads go on: what was acknowledged is there, byte for byte; nothing of the refused batch is.
        try expectHolds(t.store, exactly: acknowledged, notAny: refused)
        #expect(try t.store.verify().slotsNext == slotsBefore, "the refused batch took no slot")

        let later = t.chunks.chunks(count: 5, size: 2000)
        if fault.stopsWrites {
            // The fault fired once; the disk "works" again, and still nothing is written.
            let again = try await #require(throws: StoreError.self) { try await writer.apply(StoreBatch(chunks: later)) }
            #expect(again.code == .writerFailed)
            #expect((again.underlying as? StoreError)?.systemErrno == fault.errno, "names the first failure: \(again)")
            #expect(t.store.writeFailure?.systemErrno == fault.errno)
            #expect(throws: StoreError.self) { try t.store.mergeLanding() }
            try expectHolds(t.store, exactly: acknowledged, notAny: refused + later)
        } else {
            #expect(try await writer.apply(StoreBatch(chunks: later)).stored.count == later.count, "a full disk fails only its batch")
            #expect(t.store.writeFailure == nil)
        }
        writer.stop()

        // A restart: LMDB's last commit is the store.
        try t.reopen()
        let kept = fault.stopsWrites ? acknowledged : acknowledged + later
        try expectHolds(t.store, exactly: kept, notAny: refused)
        try expectClean(t.store)
        #expect(t.store.writeFailure == nil, "a reopened store writes again")
        let afterRestart = t.chunks.chunks(count: 3)
        #expect(try t.store.apply(StoreBatch(chunks: refused + afterRestart)).stored.count == refused.count + afterRestart.count)
        try expectHolds(t.store, exactly: kept + refused + afterRestart, notAny: [])
        try expectClean(t.store)
    }

    /// Group commit: several callers share one transaction, so a fault in it is every one's.
    /// None of them is retried alone (a one-shot fault would then let them through).
    @Test(arguments: [Fault.pwriteENOSPC, .fdatasyncEIO, .commitEIO])
    func everyCallerOfAFailedGroupGetsTheError(_ fault: Fault) async throws {
        let t = try TemporaryStore(seed: 12)
        let writer = StoreWriter(store: t.store, limits: .withoutIdleMerge)
        defer { writer.stop() }
        let acknowledged = t.chunks.chunks(count: 10, size: 3000)

        // Park the writer thread in the completion of a first batch, so the next ones queue up
        // and go into one group when it is let go.
        let parked = Atomic<Bool>(false)
        let release = DispatchSemaphore(value: 0)
        writer.submit(StoreBatch(chunks: acknowledged)) { _ in
            parked.store(true, ordering: .releasing)
            _ = release.wait(timeout: .now() + 30)
        }
        try await eventually("the writer thread is parked", pollMs: 5) { parked.load(ordering: .acquiring) }

        _Failpoints.arm(fault.site, after: 0, errno: fault.errno, under: t.directory)
        defer { _Failpoints.disarm(under: t.directory) }
        let batches = (0..<4).map { _ in t.chunks.chunks(count: 3, size: 4096) }
        let results = Locked<[Int: Result<BatchResult, StoreError>]>([:])
        for (i, batch) in batches.enumerated() {
            writer.submit(StoreBatch(chunks: batch)) { result in results.withLock { $0[i] = result } }
        }
        release.signal()
        try await eventually("every caller has an answer", pollMs: 5) { results.withLock { $0.count } == batches.count }

        let answers = results.withLock { $0 }
        for i in batches.indices {
            guard case .failure(let error)? = answers[i] else {
                Issue.record("batch \(i) of the failed group was acknowledged: \(String(describing: answers[i]))")
                continue
            }
            expect(error, isThe: fault)
        }
        #expect(writer.groupCommits == 1, "only the first batch committed; nothing was retried")
        #expect(_Failpoints.injectedCount(under: t.directory) == 1, "one fault, for the whole group")
        try expectHolds(t.store, exactly: acknowledged, notAny: batches.flatMap { $0 })
        writer.stop()
        try t.reopen()
        try expectHolds(t.store, exactly: acknowledged, notAny: batches.flatMap { $0 })
        try expectClean(t.store)
    }

    /// An idle merge of `landing` is a write like any other.
    @Test func aFailedCommitOfAMergeStopsWritesAndLosesNothing() throws {
        let t = try TemporaryStore(seed: 13)
        let acknowledged = t.chunks.chunks(count: 20, size: 500)
        try t.store.apply(StoreBatch(chunks: acknowledged))
        _Failpoints.arm(.commit, after: 0, errno: EIO, under: t.directory)
        defer { _Failpoints.disarm(under: t.directory) }
        let error = try #require(throws: StoreError.self) { try t.store.mergeLanding() }
        #expect(error.code == .writerFailed)
        #expect(try t.store.read { try $0.landingCount() } == acknowledged.count, "the merge is not visible")
        #expect(throws: StoreError.self) { try t.store.apply(StoreBatch(chunks: t.chunks.chunks(count: 1))) }
        try expectHolds(t.store, exactly: acknowledged, notAny: [])
        try t.reopen()
        try expectHolds(t.store, exactly: acknowledged, notAny: [])
        try expectClean(t.store)
    }

    @Test func anArmedFaultTouchesOnlyTheStoreItWasArmedFor() throws {
        let armed = try TemporaryStore(seed: 14)
        let other = try TemporaryStore(seed: 15)
        _Failpoints.arm(.fdatasync, after: 0, errno: EIO, under: armed.directory)
        defer { _Failpoints.disarm(under: armed.directory) }
        #expect(try other.store.apply(StoreBatch(chunks: other.chunks.chunks(count: 4))).stored.count == 4)
        #expect(other.store.writeFailure == nil)
        #expect(throws: StoreError.self) { try armed.store.apply(StoreBatch(chunks: armed.chunks.chunks(count: 4))) }
    }

    // MARK: Helpers

    /// The error a caller sees for `fault`: the fault itself for a full disk, else the refusal
    /// that names it.
    private func expect(_ error: StoreError, isThe fault: Fault, sourceLocation: SourceLocation = #_sourceLocation) {
        let cause: StoreError
        if fault.stopsWrites {
            #expect(error.code == .writerFailed, "\(error)", sourceLocation: sourceLocation)
            guard let first = error.underlying as? StoreError else {
                Issue.record("no first failure in \(error)", sourceLocation: sourceLocation)
                return
            }
            cause = first
        } else {
            cause = error
        }
        #expect(cause.systemErrno == fault.errno, "\(error)", sourceLocation: sourceLocation)
        switch fault.site {
        case .pwrite, .fdatasync:
            #expect(cause.code == .system, "\(error)", sourceLocation: sourceLocation)
            #expect(cause.systemCall?.name == fault.site.rawValue, "\(error)", sourceLocation: sourceLocation)
        case .commit:
            #expect(cause.code == .lmdb, "\(error)", sourceLocation: sourceLocation)
            #expect((cause.underlying as? LMDBError)?.operation == "mdb_txn_commit", "\(error)", sourceLocation: sourceLocation)
        }
    }

    /// The store holds every chunk of `expected` (re-hashed) and nothing else; none of `absent`.
    private func expectHolds(_ store: Store, exactly expected: [Chunk], notAny absent: [Chunk],
                             sourceLocation: SourceLocation = #_sourceLocation) throws {
        for chunk in expected {
            #expect(try store.get(chunk.address, verify: true) == chunk, sourceLocation: sourceLocation)
        }
        for chunk in absent {
            #expect(try store.has(chunk.address) == false, "half there: \(chunk.address)", sourceLocation: sourceLocation)
        }
        #expect(try store.count() == expected.count, sourceLocation: sourceLocation)
    }

}

extension StoreWriter.Limits {
    /// No merge while idle: it would be a write the test did not ask for.
    static var withoutIdleMerge: Self {
        var limits = Self()
        limits.idleMergeAfterMs = 600_000
        return limits
    }
}
