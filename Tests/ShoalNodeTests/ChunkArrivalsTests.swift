import Foundation
import Locking
import ShoalCore
@testable import ShoalNode
import Testing

struct ChunkArrivalsTests {
    private func address(_ n: UInt64) -> ChunkAddress { Address32(w0: n, w1: 0, w2: 0, w3: 0) }

    @Test func aWaitEndsWhenItsChunkIsStored() async throws {
        let arrivals = ChunkArrivals()
        async let waited = arrivals.wait(for: address(1), timeout: .seconds(60)) { false }
        // Bounded: under a loaded full run the waiting task may take seconds to be scheduled.
        for _ in 0..<3000 where arrivals.waiting == 0 { try await Task.sleep(for: .milliseconds(10)) }
        try #require(arrivals.waiting == 1, "the waiter registered")
        let start = ContinuousClock.now
        arrivals.stored([address(2), address(1)])
        #expect(await waited)
        #expect(ContinuousClock.now - start < .seconds(30), "woken by the store, not by its 60 s timeout")
        #expect(arrivals.waiting == 0)
    }

    @Test func aWaitTimesOutAndOtherAddressesDoNotWakeIt() async {
        let arrivals = ChunkArrivals()
        async let waited = arrivals.wait(for: address(1), timeout: .milliseconds(150)) { false }
        arrivals.stored([address(2)])
        #expect(await waited == false)
        #expect(arrivals.waiting == 0)
    }

    @Test func aChunkAlreadyStoredEndsTheWaitAtOnce() async {
        let arrivals = ChunkArrivals()
        let start = ContinuousClock.now
        #expect(await arrivals.wait(for: address(1), timeout: .seconds(20)) { true })
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(arrivals.waiting == 0)
    }

    @Test func cancellingTheWaitingTaskEndsItsWait() async throws {
        let arrivals = ChunkArrivals()
        let task = Task { await arrivals.wait(for: address(1), timeout: .seconds(60)) { false } }
        for _ in 0..<3000 where arrivals.waiting == 0 { try await Task.sleep(for: .milliseconds(10)) }
        task.cancel()
        #expect(await task.value == false)
        #expect(arrivals.waiting == 0)
    }

    @Test func manyWaitersOfOneChunkAllWake() async throws {
        let arrivals = ChunkArrivals()
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<50 {
                group.addTask { await arrivals.wait(for: self.address(7), timeout: .seconds(60)) { false } }
            }
            for _ in 0..<3000 where arrivals.waiting < 50 { try await Task.sleep(for: .milliseconds(10)) }
            try #require(arrivals.waiting == 50)
            arrivals.stored([address(7)])
            var woken = 0
            for try await ok in group where ok { woken += 1 }
            #expect(woken == 50)
        }
        #expect(arrivals.waiting == 0)
    }
}
