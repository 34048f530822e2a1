import LMDB
import Locking
import ShoalCore
import ShoalStore
import ShoalTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

struct EventuallyTests {
    @Test func aConditionThatHoldsEndsTheWait() async {
        var asked = 0
        let held = await eventually(timeout: .seconds(5), pollMs: 1) {
            asked += 1
            return asked == 3
        }
        #expect(held && asked == 3)
    }

    @Test func aConditionThatNeverHoldsTimesOutAfterTheBound() async {
        let start = ContinuousClock.now
        let held = await eventually(timeout: .milliseconds(100), pollMs: 10) { false }
        let waited = ContinuousClock.now - start
        #expect(!held)
        #expect(waited >= .milliseconds(100) && waited < .seconds(10))
    }

    @Test func theThrowingWaitSaysWhatItAwaitedAndForHowLong() async throws {
        let error = try await #require(throws: WaitTimedOut.self) {
            try await eventually("the moon is made of cheese", within: .milliseconds(50), pollMs: 5) { false }
        }
        #expect(error.what == "the moon is made of cheese")
        #expect(error.waited >= .milliseconds(50))
        #expect(error.checks >= 2)
        #expect(error.description.hasPrefix("timed out after 0.0"))
        #expect(error.description.hasSuffix("waiting until: the moon is made of cheese"))
    }

    @Test func theConditionsErrorEndsTheWait() async {
        struct Broken: Error {}
        await #expect(throws: Broken.self) {
            try await eventually("never", within: .seconds(30)) { throw Broken() }
        }
    }
}

struct SeededChunksTests {
    @Test func theSameSeedMakesTheSameChunks() throws {
        var a = SeededChunks(seed: 42), b = SeededChunks(seed: 42), c = SeededChunks(seed: 43)
        let first = a.chunks(count: 5, size: 100)
        #expect(first == b.chunks(count: 5, size: 100))
        #expect(first != c.chunks(count: 5, size: 100))
        #expect(first == SeededChunks.chunks(count: 5, size: 100, seed: 42))
        #expect(first.allSatisfy { $0.payload.count == 100 })
        #expect(a.chunk() == b.chunk())
        #expect(a.chunk().payload.count == Chunk.payloadMax)
    }

    @Test func aChunkIsItsSeedsBytes() {
        var chunks = SeededChunks(seed: 9)
        #expect(chunks.chunk(size: 64).payload == seededBytes(64, seed: 9))
        var spanned = SeededChunks(seed: 9)
        let chunk = spanned.chunk(size: 64, span: 1 << 20)
        #expect(chunk.span == 1 << 20 && chunk.payload == seededBytes(64, seed: 9))
    }

    @Test(arguments: [0, 1, 5, 12])
    func aChunkInABinHasThatProximity(bin: Int) throws {
        let overlay = Address32(w0: 0x0123_4567_89AB_CDEF, w1: 7, w2: 8, w3: 9)
        var a = SeededChunks(seed: 5), b = SeededChunks(seed: 5)
        let chunk = try a.chunk(inBin: bin, of: overlay)
        #expect(chunk.address.proximity(to: overlay) == bin)
        #expect(try b.chunk(inBin: bin, of: overlay) == chunk)
    }

    @Test func aBinTooDeepToFindByDrawingIsAnErrorNotAHang() {
        var chunks = SeededChunks(seed: 1)
        #expect(throws: TestFailure.self) { try chunks.chunk(inBin: 31, of: .zero, size: 1) }
    }
}

struct TemporaryDirectoryTests {
    @Test func itIsFreshAndRemovedWithItsContents() throws {
        var path = ""
        do {
            let directory = try TemporaryDirectory("support")
            path = directory.path
            #expect(directory.names.isEmpty)
            let fd = open(directory.sub("file"), O_CREAT | O_WRONLY, 0o600)
            #expect(fd >= 0)
            close(fd)
            #expect(directory.names == ["file"])
            #expect(try TemporaryDirectory("support").path != path)
        }
        #expect(access(path, F_OK) != 0)
    }
}

struct TemporaryStoreTests {
    @Test func aStoreUsedOnlyThroughItsClosuresLeaksNothing() throws {
        let t = try TemporaryStore()
        try t.store.apply(StoreBatch(chunks: t.chunks.chunks(count: 3, size: 100)))
        #expect(try t.store.count() == 3)
        #expect(t.leaks() == [])
        try t.reopen(readOnly: true)
        #expect(try t.store.count() == 3)
        let directory = t.directory
        t.close()
        #expect(access(directory, F_OK) != 0)
    }

    @Test func aReadTransactionLeftOpenIsReported() async throws {
        let t = try TemporaryStore()
        try t.store.apply(StoreBatch(chunks: [t.chunks.chunk()]))
        let store = t.store
        try await holdingOpen({ inside in try store.read { _ in inside() } }) {
            let leaks = t.leaks()
            #expect(leaks.contains(.readTransactions(1)))
            #expect(leaks.contains { if case .readerSlot(.some) = $0 { true } else { false } })
            // The recording form fails the test that leaks.
            withKnownIssue("a deliberately open read transaction") {
                t.check()
            } matching: { issue in
                issue.comments.contains {
                    $0.rawValue.contains("1 read transaction(s) still open; a reader slot still holds snapshot")
                }
            }
        }
        #expect(t.leaks() == [])
        t.close()
    }

    @Test func releasingAStoreWithATransactionOpenFailsTheTestThatMadeIt() async throws {
        var t: TemporaryStore? = try TemporaryStore()
        let made = #_sourceLocation
        let store = try #require(t).store
        try await holdingOpen({ inside in try store.read { _ in inside() } }) {
            withKnownIssue("released while a read transaction is open") {
                t = nil
            } matching: { issue in
                issue.sourceLocation?.line == made.line - 1
                    && issue.comments.contains { $0.rawValue.contains("1 read transaction(s) still open") }
            }
        }
        // Left open rather than closed under the reader; it closes with its last reference.
        #expect(!store.environment.isClosed)
    }

    @Test func aWriteTransactionLeftOpenIsReported() async throws {
        let directory = try TemporaryDirectory("lmdb")
        let environment = try Environment(path: directory.path)
        defer { environment.close() }
        try await holdingOpen({ inside in try environment.write { _ in inside() } }) {
            #expect(TransactionLeak.find(in: environment) == [.writeTransactions(1)])
        }
        #expect(TransactionLeak.find(in: environment) == [])
    }
}

/// Runs `transaction` on a thread of its own, as a task the test forgot would, and `whileOpen`
/// while it is inside: `transaction` calls `inside`, which returns once `whileOpen` is done
/// (or after 30 s).
private func holdingOpen(
    _ transaction: @escaping @Sendable (_ inside: @Sendable () -> Void) throws -> Void,
    _ whileOpen: () async throws -> Void
) async throws {
    let entered = Locked(false), released = Locked(false)
    let holder = Task {
        try await onOwnThread {
            try transaction {
                entered.withLock { $0 = true }
                let deadline = ContinuousClock.now + .seconds(30)
                while !released.withLock({ $0 }) && ContinuousClock.now < deadline { usleep(1_000) }
            }
        }
    }
    defer { released.withLock { $0 = true } }
    try await eventually("the transaction is open") { entered.withLock { $0 } }
    try await whileOpen()
    released.withLock { $0 = true }
    try await holder.value
}
