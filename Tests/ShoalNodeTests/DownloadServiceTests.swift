import Locking
import Logging
import ShoalCore
@testable import ShoalNode
import ShoalStore
import ShoalTestSupport
import Testing

/// The downloader's shell on its own, over a temporary store: no peer, events fed by hand.
struct DownloadServiceTests {
    /// The machine's invariants look at every chunk of the fetch set. Checked after every
    /// event, a download of n chunks cost n² looks (86% of a downloading node's CPU at 10,000
    /// chunks); the node pays a fixed amount per event instead, whatever the fetch set's size.
    @Test(.timeLimit(.minutes(1)))
    func checkingTheInvariantsCostsAFixedAmountPerEvent() async throws {
        let temporary = try TemporaryStore(mapSize: 1 << 28)
        let writer = StoreWriter(store: temporary.store)
        defer { writer.stop() }
        let context = NodeContext(overlay: temporary.overlay, store: temporary.store, writer: writer, inFlight: InFlightChunks(),
                                  logger: Logger(label: "test"), limits: SessionLimits(), clock: SystemClock())
        let service = DownloadService(context: context, supervisor: Supervisor(context: context, seed: 1), limits: DownloadLimits(), seed: 1)
        let addresses = SeededChunks.chunks(count: 4096, size: 32, seed: 46).map(\.address)
        _ = try await service.start(DownloadID(Address32(w0: 1, w1: 2, w2: 3, w3: 4)), addresses: addresses, policy: .eagerPin, hints: [])
        let atStart = await service.invariantEntriesChecked
        // Pull sync brings the chunks one at a time: one event each, the fetch set shrinking from 4,096.
        for address in addresses { await service.stored([address]) }
        let looked = await service.invariantEntriesChecked - atStart
        #expect(looked <= addresses.count * DownloadService.invariantEntriesPerEvent + addresses.count,
                "\(looked) entries looked at over \(addresses.count) events")
        #expect(await service.status(DownloadID(Address32(w0: 1, w1: 2, w2: 3, w3: 4)))?.outcome == .completed)
    }
}

/// What every commit costs the node's commit observer (the downloader's hook): the same for the
/// 50,000th commit as for the first. Kept as `Locked`'s generic closure value, the observer
/// gained two re-abstraction thunks on every read through `withLock`, so each call walked all
/// the thunks of the commits before it (30 % of a downloading node's CPU at 20,000 chunks).
struct CommitObserverTests {
    @Test(.timeLimit(.minutes(1)))
    func theObserverCostsTheSameAfterFiftyThousandCommits() async throws {
        let temporary = try TemporaryStore(mapSize: 1 << 24)
        let writer = StoreWriter(store: temporary.store)
        defer { writer.stop() }
        let context = NodeContext(overlay: temporary.overlay, store: temporary.store, writer: writer, inFlight: InFlightChunks(),
                                  logger: Logger(label: "test"), limits: SessionLimits(), clock: SystemClock())
        let calls = Locked(0)
        context.storedObserver.withLock { $0 = StoredObserver { _ in calls.withLock { $0 += 1 } } }
        let result = try await writer.apply(StoreBatch(chunks: SeededChunks.chunks(count: 1, size: 10, seed: 47)))
        try #require(result.stored.count == 1)
        /// The fastest of 10 blocks of 100 commits (the minimum is what a preemption cannot inflate).
        func fastestBlock() -> Duration {
            (0..<10).map { _ in
                let start = ContinuousClock.now
                for _ in 0..<100 { context.committed(result) }
                return ContinuousClock.now - start
            }.min()!
        }
        let early = fastestBlock()
        for _ in 0..<50_000 { context.committed(result) }
        let late = fastestBlock()
        #expect(calls.withLock { $0 } == 52_000)
        #expect(late < early * 20 + .milliseconds(1), "100 commits took \(early) at first, \(late) after 50,000")
    }
}
