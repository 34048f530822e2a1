import Locking
import Logging
import ServiceLifecycle
import ShoalCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A logger for events a stranger can repeat at will (refused connections, failed handshakes,
/// bad requests): per kind of event, the first lines of each window are logged in full and the
/// rest summed up in one line when the window ends (`EventThrottle`), so nobody can make the
/// node write logs without bound.
///
/// Lines below the logger's level cost nothing and are not counted. Call `flush()` from time
/// to time (`flushPeriodically()` does) so that a flood that stops is still summed up.
public final class ThrottledLog: Service, Sendable {
    private struct Inner {
        var throttle: EventThrottle
        /// The level each kind was logged at, for its summary.
        var levels: [String: Logger.Level] = [:]
    }

    public let logger: Logger
    private let inner: Locked<Inner>
    private let nowMs: @Sendable () -> UInt64
    public let windowMs: UInt64

    public init(logger: Logger, linesPerWindow: Int = 5, windowMs: UInt64 = 10_000,
                nowMs: @escaping @Sendable () -> UInt64 = ThrottledLog.monotonicMs) {
        self.logger = logger
        self.windowMs = windowMs
        self.nowMs = nowMs
        inner = Locked(Inner(throttle: EventThrottle(linesPerWindow: linesPerWindow, windowMs: windowMs)))
    }

    /// Logs `message` unless lines of kind `key` were already logged `linesPerWindow` times
    /// in this window.
    public func log(_ key: String, level: Logger.Level, _ message: @autoclosure () -> Logger.Message,
                    metadata: @autoclosure () -> Logger.Metadata = [:]) {
        guard logger.logLevel <= level else { return }
        let now = nowMs()
        let (decision, summaries) = inner.withLock { inner in
            inner.levels[key] = level
            return (inner.throttle.record(key, nowMs: now), Self.take(inner.throttle.flush(nowMs: now), from: &inner))
        }
        tell(summaries)
        if decision == .log { logger.log(level: level, message(), metadata: metadata()) }
    }

    /// One line per kind of event left out of the log in a window that has ended (every open
    /// window with `all`, e.g. at shutdown).
    public func flush(all: Bool = false) {
        let now = nowMs()
        tell(inner.withLock { inner in Self.take(inner.throttle.flush(nowMs: now, all: all), from: &inner) })
    }

    /// Flushes once per window until the task is cancelled, then flushes everything.
    public func flushPeriodically() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(Int64(windowMs)))
            flush()
        }
        flush(all: true)
    }

    /// As a service (e.g. beside an HTTP server): flushes once per window until graceful
    /// shutdown or cancellation, then flushes everything.
    public func run() async {
        await cancelWhenGracefulShutdown { await self.flushPeriodically() }
    }

    private static func take(_ summaries: [EventThrottle.Summary], from inner: inout Inner) -> [(EventThrottle.Summary, Logger.Level)] {
        summaries.map { ($0, inner.levels[$0.key] ?? .notice) }
    }

    private func tell(_ summaries: [(EventThrottle.Summary, Logger.Level)]) {
        for (summary, level) in summaries {
            let seconds = max(1, (summary.windowMs + 500) / 1000)
            logger.log(level: level, "\(summary.suppressed) more \(summary.key) in the last \(seconds) s (not logged one by one)",
                       metadata: ["log.suppressed": "\(summary.suppressed)", "log.event": "\(summary.key)"])
        }
    }

    /// Milliseconds since an arbitrary start, never going back.
    public static func monotonicMs() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }
}
