import Locking
import ShoalCore
import ShoalTestSupport
import Testing

struct ManualClockTests {
    @Test func timeMovesOnlyWhenAdvanced() {
        let clock = ManualClock(nowMs: 100, wallMs: 5_000)
        #expect(clock.nowMs() == 100 && clock.wallMs() == 5_000)
        clock.advance(byMs: 50)
        #expect(clock.nowMs() == 150 && clock.wallMs() == 5_050)
        clock.advance(toMs: 1_000)
        #expect(clock.nowMs() == 1_000 && clock.wallMs() == 5_900)
        // The wall clock jumps (back, here); monotonic time does not.
        clock.setWallMs(2_000)
        clock.advance(byMs: 10)
        #expect(clock.nowMs() == 1_010 && clock.wallMs() == 2_010)
    }

    @Test func sleepersWakeInDeadlineOrderWhenTimePassesTheirDeadlines() async throws {
        let clock = ManualClock()
        let woke = Locked<[UInt64]>([])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for deadline: UInt64 in [30, 10, 20, 10] {
                group.addTask {
                    try await clock.sleep(untilMs: deadline)
                    woke.withLock { $0.append(deadline) }
                }
            }
            #expect(await clock.waitForSleepers(4))
            #expect(clock.nextDeadlineMs == 10)
            #expect(clock.advance(toMs: 9) == [])
            #expect(clock.advance(toMs: 15) == [10, 10])
            #expect(await eventually { woke.withLock { $0.count } == 2 })
            #expect(clock.sleepers == 2)
            // Both remaining deadlines passed at once: resumed earliest first.
            #expect(clock.advance(byMs: 100) == [20, 30])
            try await group.waitForAll()
        }
        #expect(woke.withLock { $0.sorted() } == [10, 10, 20, 30])
        #expect(clock.sleepers == 0)
    }

    @Test func aDeadlineAlreadyPassedReturnsAtOnce() async throws {
        let clock = ManualClock(nowMs: 500)
        try await clock.sleep(untilMs: 500)
        try await clock.sleep(untilMs: 1)
        try await clock.sleep(forMs: 0)
        #expect(clock.sleepers == 0)
    }

    @Test func cancellationWakesASleeperWithCancellationError() async throws {
        let clock = ManualClock()
        let sleeper = Task { try await clock.sleep(untilMs: 1_000) }
        #expect(await clock.waitForSleepers(1))
        sleeper.cancel()
        await #expect(throws: CancellationError.self) { try await sleeper.value }
        #expect(clock.sleepers == 0)
        // Time passing later finds nobody to wake.
        #expect(clock.advance(toMs: 2_000) == [])
    }

    @Test func aTaskCancelledBeforeItSleepsNeverParks() async {
        let clock = ManualClock()
        let sleeper = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await clock.sleep(untilMs: 1_000)
        }
        await #expect(throws: CancellationError.self) { try await sleeper.value }
        #expect(clock.sleepers == 0)
    }

    @Test func advanceToNextDeadlineStepsFromSleeperToSleeper() async throws {
        let clock = ManualClock()
        let sleepers = [Task { try await clock.sleep(untilMs: 40) }, Task { try await clock.sleep(untilMs: 70) }]
        #expect(await clock.waitForSleepers(2))
        #expect(clock.advanceToNextDeadline() == [40])
        #expect(clock.nowMs() == 40)
        #expect(clock.advanceToNextDeadline() == [70])
        #expect(clock.advanceToNextDeadline() == [])
        for sleeper in sleepers { try await sleeper.value }
    }

    @Test func theSystemClockSleepsUntilItsOwnTimeAndStopsWhenCancelled() async throws {
        let clock = SystemClock()
        let before = clock.nowMs()
        try await clock.sleep(untilMs: before + 20)
        #expect(clock.nowMs() >= before + 20)
        // 2026 or later, in milliseconds.
        #expect(clock.wallMs() > 1_767_225_600_000)
        let sleeper = Task { try await clock.sleep(forMs: 600_000) }
        sleeper.cancel()
        await #expect(throws: CancellationError.self) { try await sleeper.value }
    }
}
