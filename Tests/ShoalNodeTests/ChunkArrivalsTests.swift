import Foundation
import Locking
import ShoalCore
@testable import ShoalNode
import Testing

struct ChunkArrivalsTests {
    private func address(_ n: UInt64) -> ChunkAddress { Address32(w0: n, w1: 0, w2: 0, w3: 0) }

    @Test func aWaitEndsWhenItsChunkIsStored() async throws {
        let arrivals = ChunkArrivals()
        let start = ContinuousClock.now
        async let waited = arrivals.wait(for: address(1), timeout: .seconds(20)) { false }
        // Bounded: the waiter registers within 2 s, or the test fails below.
        for _ in 0..<200 where arrivals.waiting == 0 { try await Task.sleep(for: .milliseconds(10)) }
        arrivals.stored([address(2), address(1)])
        #expect(await waited)
        #expect(ContinuousClock.now - start < .seconds(10))
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
        let task = Task { await arrivals.wait(for: address(1), timeout: .seconds(20)) { false } }
        for _ in 0..<200 where arrivals.waiting == 0 { try await Task.sleep(for: .milliseconds(10)) }
        task.cancel()
        #expect(await task.value == false)
        #expect(arrivals.waiting == 0)
    }

    @Test func manyWaitersOfOneChunkAllWake() async throws {
        let arrivals = ChunkArrivals()
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<50 {
                group.addTask { await arrivals.wait(for: self.address(7), timeout: .seconds(20)) { false } }
            }
            for _ in 0..<500 where arrivals.waiting < 50 { try await Task.sleep(for: .milliseconds(10)) }
            arrivals.stored([address(7)])
            var woken = 0
            for try await ok in group where ok { woken += 1 }
            #expect(woken == 50)
        }
        #expect(arrivals.waiting == 0)
    }
}
