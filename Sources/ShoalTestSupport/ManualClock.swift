import Locking
import ShoalCore

/// A clock whose time moves only when the test says so: the shell under test sleeps on it, the
/// test sees it parked (`sleepers`, `waitForSleepers`), moves time past its deadline, and it
/// wakes. No test waits for real time to pass.
///
/// Wall time moves with monotonic time (the gap between them stays fixed) unless set with
/// `setWallMs`, the way an operator or NTP moves a real wall clock.
public final class ManualClock: ShoalClock {
    /// 2026-01-01T00:00:00Z: a fixed wall time, so stored times in a failing test are the same
    /// each run.
    public static let wallStartMs: UInt64 = 1_767_225_600_000

    private struct Sleeper {
        /// Order of arrival: sleepers with the same deadline wake in the order they slept.
        let id: UInt64
        let deadlineMs: UInt64
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var nowMs: UInt64
        /// `wallMs() - nowMs()`, with wrapping arithmetic (a wall set before `nowMs` is fine).
        var wallOffsetMs: UInt64
        /// Sorted by (deadline, id). Bounded by the tasks a test starts.
        var sleepers: [Sleeper] = []
        var nextID: UInt64 = 0
    }

    private let state: Locked<State>

    public init(nowMs: UInt64 = 0, wallMs: UInt64 = ManualClock.wallStartMs) {
        state = Locked(State(nowMs: nowMs, wallOffsetMs: wallMs &- nowMs))
    }

    public func nowMs() -> UInt64 { state.withLock { $0.nowMs } }

    public func wallMs() -> UInt64 { state.withLock { $0.nowMs &+ $0.wallOffsetMs } }

    /// Sets wall time, leaving monotonic time (and every sleeper) where it is.
    public func setWallMs(_ ms: UInt64) {
        state.withLock { $0.wallOffsetMs = ms &- $0.nowMs }
    }

    public func sleep(untilMs deadlineMs: UInt64) async throws {
        try Task.checkCancellation()
        let id = state.withLock { s in
            defer { s.nextID += 1 }
            return s.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                // Under the lock: a cancellation that lands before this check is seen here; one
                // that lands after it finds the sleeper registered (its handler takes the lock).
                let outcome: Result<Void, any Error>? = state.withLock { s in
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if deadlineMs <= s.nowMs { return .success(()) }
                    let sleeper = Sleeper(id: id, deadlineMs: deadlineMs, continuation: continuation)
                    let at = s.sleepers.firstIndex { ($0.deadlineMs, $0.id) > (deadlineMs, id) } ?? s.sleepers.endIndex
                    s.sleepers.insert(sleeper, at: at)
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) }
            }
        } onCancel: {
            let cancelled = state.withLock { s -> Sleeper? in
                guard let at = s.sleepers.firstIndex(where: { $0.id == id }) else { return nil }
                return s.sleepers.remove(at: at)
            }
            cancelled?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward by `ms` and wakes every sleeper whose deadline has come.
    @discardableResult
    public func advance(byMs ms: UInt64) -> [UInt64] {
        advance { $0 + ms }
    }

    /// Moves time forward to `ms` (never back: a monotonic clock that went back would be a bug
    /// in the test) and wakes every sleeper whose deadline has come.
    ///
    /// Returns the deadlines woken, in the order their tasks were resumed: earliest deadline
    /// first, and among equal deadlines the first to sleep first. Resumed tasks then run as the
    /// executor schedules them; a test that needs one sleeper's effect before the next one's
    /// advances to the first deadline, waits for the effect, then advances again.
    @discardableResult
    public func advance(toMs ms: UInt64) -> [UInt64] {
        advance { now in
            precondition(ms >= now, "ManualClock moves forward only: it is at \(now) ms, asked to go to \(ms) ms")
            return ms
        }
    }

    /// Advances to the earliest sleeper's deadline, if anyone sleeps.
    @discardableResult
    public func advanceToNextDeadline() -> [UInt64] {
        guard let next = nextDeadlineMs else { return [] }
        return advance { max($0, next) }
    }

    private func advance(_ target: (UInt64) -> UInt64) -> [UInt64] {
        let due = state.withLock { s -> [Sleeper] in
            s.nowMs = target(s.nowMs)
            let now = s.nowMs
            let count = s.sleepers.prefix { $0.deadlineMs <= now }.count
            defer { s.sleepers.removeFirst(count) }
            return Array(s.sleepers.prefix(count))
        }
        for sleeper in due { sleeper.continuation.resume() }
        return due.map(\.deadlineMs)
    }

    /// How many tasks sleep on this clock now.
    public var sleepers: Int { state.withLock { $0.sleepers.count } }

    /// The earliest deadline anyone sleeps until, or nil.
    public var nextDeadlineMs: UInt64? { state.withLock { $0.sleepers.first?.deadlineMs } }

    /// Waits (in real time, bounded) until at least `count` tasks sleep on this clock: the
    /// shell under test has reached its wait. False if they did not within `timeout`.
    public func waitForSleepers(_ count: Int = 1, timeout: Duration = TestTimeouts.wait) async -> Bool {
        await eventually(timeout: timeout, pollMs: 1) { self.sleepers >= count }
    }
}
