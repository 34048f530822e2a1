import Foundation
import ShoalCore
import ShoalStore
import ShoalTestSupport
import Testing

struct WriterTests {
    @Test func concurrentBatchesAreGroupedAndEachCallerResumesAfterItsCommit() async throws {
        let t = try TemporaryStore()
        let writer = StoreWriter(store: t.store)
        defer { writer.stop() }
        let batches = (0..<64).map { _ in t.chunks.chunks(count: 20, size: 256) }
        let results = try await withThrowingTaskGroup(of: BatchResult.self) { group in
            for chunks in batches { group.addTask { try await writer.apply(StoreBatch(chunks: chunks)) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.count == 64)
        #expect(results.allSatisfy { $0.stored.count == 20 })
        #expect(writer.groupCommits <= 64)
        // When a caller resumed, its chunks were committed: a new snapshot sees all of them.
        #expect(try t.store.count() == 64 * 20)
        try expectClean(t.store)
    }

    @Test func aBadBatchFailsAloneInItsGroup() async throws {
        let t = try TemporaryStore()
        let writer = StoreWriter(store: t.store)
        defer { writer.stop() }
        var bad = StoreBatch(chunks: t.chunks.chunks(count: 1))
        bad.seals = [IntervalSeal(peer: .zero, bin: 99, epoch: 1, range: 1...2)]
        let good = t.chunks.chunks(count: 5)
        async let a = writer.apply(StoreBatch(chunks: good))
        async let b: Result<BatchResult, StoreError> = { () async -> Result<BatchResult, StoreError> in
            do throws(StoreError) { return .success(try await writer.apply(bad)) } catch { return .failure(error) }
        }()
        #expect(try await a.stored.count == 5)
        let failed = await b
        #expect(throws: StoreError.self) { try failed.get() }
        #expect(try t.store.count() == 5)
    }

    @Test func stopCommitsWhatIsQueuedThenRefuses() async throws {
        let t = try TemporaryStore()
        let writer = StoreWriter(store: t.store)
        let done = DispatchSemaphore(value: 0)
        for _ in 0..<10 { writer.submit(StoreBatch(chunks: t.chunks.chunks(count: 3, size: 100))) { _ in done.signal() } }
        writer.stop()
        for _ in 0..<10 { #expect(done.wait(timeout: .now() + 10) == .success) }
        #expect(try t.store.count() == 30)
        await #expect(throws: StoreError.self) { try await writer.apply(StoreBatch(chunks: t.chunks.chunks(count: 1))) }
    }
}
