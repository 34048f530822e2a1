#if canImport(Glibc)
import Glibc
#endif

/// Time for the shells (actors). Machines never read a clock: they take `now` as a parameter,
/// and the actor that drives them reads it from the `ShoalClock` it was given, so tests and
/// simulations can run the same actors on a clock they move themselves.
public protocol ShoalClock: Sendable {
    /// Milliseconds of a monotonic clock (only differences mean something).
    func nowMs() -> UInt64
    /// Milliseconds since 1970 (for records that outlive the process: bans, last seen).
    func wallMs() -> UInt64
    /// Returns once `nowMs()` reached `untilMs`; throws `CancellationError` when cancelled.
    func sleep(untilMs: UInt64) async throws
}

/// The system's clocks.
public struct SystemClock: ShoalClock {
    private let origin = ContinuousClock.now

    public init() {}

    public func nowMs() -> UInt64 {
        let elapsed = ContinuousClock.now - origin
        return UInt64(elapsed.components.seconds) * 1000 + UInt64(elapsed.components.attoseconds / 1_000_000_000_000_000)
    }

    public func wallMs() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    public func sleep(untilMs: UInt64) async throws {
        let now = nowMs()
        guard untilMs > now else { return try Task.checkCancellation() }
        try await Task.sleep(for: .milliseconds(Int64(untilMs - now)))
    }
}
