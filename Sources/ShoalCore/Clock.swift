// The one place ShoalCore reads the operating system: `SystemClock` needs `clock_gettime`.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where the node's actors get the time.
///
/// Machines never read a clock: every event that depends on time takes `nowMs` as a
/// parameter. The shells around them (actors, the supervisor, sessions) read an injected
/// `ShoalClock` and pass what they read in, so a test gives them a manual clock and moves time
/// itself, and a simulation replays the same times from its seed.
public protocol ShoalClock: Sendable {
    /// Monotonic milliseconds: never go back, unrelated to the calendar. Compare and subtract
    /// them; do not store them across restarts. They may start near zero.
    func nowMs() -> UInt64

    /// Milliseconds since 1970-01-01 UTC. May jump (NTP, an operator): for what is stored or
    /// told to peers (`lastSeenMs`, bans), never for measuring durations.
    func wallMs() -> UInt64

    /// Returns once `nowMs()` has reached `untilMs` (at once if it already has). Throws
    /// `CancellationError` as soon as the calling task is cancelled.
    func sleep(untilMs: UInt64) async throws
}

extension ShoalClock {
    /// Sleeps `ms` milliseconds of this clock's time.
    public func sleep(forMs ms: UInt64) async throws {
        try await sleep(untilMs: nowMs() &+ ms)
    }
}

/// The operating system's clocks: `ContinuousClock` for monotonic time and sleeping,
/// `CLOCK_REALTIME` for wall time.
public struct SystemClock: ShoalClock {
    /// Monotonic time zero for every `SystemClock` of this process: the first time one is read.
    private static let origin = ContinuousClock.now

    public init() {}

    public func nowMs() -> UInt64 {
        let elapsed = SystemClock.origin.duration(to: .now).components
        return UInt64(elapsed.seconds) &* 1000 &+ UInt64(elapsed.attoseconds / 1_000_000_000_000_000)
    }

    public func wallMs() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    public func sleep(untilMs: UInt64) async throws {
        // Sleeps to the instant itself, not for a duration computed from `nowMs()`, so the
        // deadline does not drift by the time between reading and sleeping.
        let deadline = SystemClock.origin + .milliseconds(Int64(clamping: untilMs))
        try await Task.sleep(until: deadline, clock: .continuous)
    }
}
