/// Decides which occurrences of a repeated event are worth a log line, so that nobody can make
/// the node write logs without bound: per kind of event, the first `linesPerWindow` in each
/// window of `windowMs` are told in full, the rest are only counted, and once the window is
/// over one summary line says how many were left out ("1,809 more refused in the last 10 s").
///
/// Performs no I/O; time comes in as milliseconds of a monotonic clock. The shell calls
/// `record` for each event and `flush` from time to time (and at shutdown) to get the
/// summaries of windows that ended while nothing happened.
public struct EventThrottle: Sendable {
    public struct Summary: Equatable, Sendable {
        public var key: String
        /// Events counted but not told.
        public var suppressed: Int
        /// How long the window that counted them lasted.
        public var windowMs: UInt64

        public init(key: String, suppressed: Int, windowMs: UInt64) {
            self.key = key
            self.suppressed = suppressed
            self.windowMs = windowMs
        }
    }

    public enum Decision: Equatable, Sendable {
        /// Tell this one in full.
        case log
        /// Count it; it is in the next summary.
        case suppress
    }

    private struct Window {
        var startMs: UInt64
        var told: Int
        var suppressed: Int
    }

    public let linesPerWindow: Int
    public let windowMs: UInt64
    /// Kinds tracked at once; beyond it the oldest windows are summarised early.
    public let keysMax: Int
    private var windows: [String: Window] = [:]
    /// Summaries of windows that ended in `record` and wait for the next `flush`.
    private var due: [Summary] = []

    public init(linesPerWindow: Int = 5, windowMs: UInt64 = 10_000, keysMax: Int = 256) {
        precondition(linesPerWindow >= 0 && windowMs > 0 && keysMax > 0, "bad throttle bounds")
        self.linesPerWindow = linesPerWindow
        self.windowMs = windowMs
        self.keysMax = keysMax
    }

    /// One event of kind `key` at `nowMs`.
    public mutating func record(_ key: String, nowMs: UInt64) -> Decision {
        var window = windows[key] ?? Window(startMs: nowMs, told: 0, suppressed: 0)
        if nowMs &- window.startMs >= windowMs {
            if window.suppressed > 0 { due.append(Summary(key: key, suppressed: window.suppressed, windowMs: nowMs - window.startMs)) }
            window = Window(startMs: nowMs, told: 0, suppressed: 0)
        }
        let decision: Decision
        if window.told < linesPerWindow {
            window.told += 1
            decision = .log
        } else {
            window.suppressed += 1
            decision = .suppress
        }
        windows[key] = window
        if windows.count > keysMax { evictOldest() }
        return decision
    }

    /// Summaries of every window that has ended by `nowMs` (all of them with `all`, e.g. at
    /// shutdown), oldest first; windows that ended with nothing left out are dropped silently.
    public mutating func flush(nowMs: UInt64, all: Bool = false) -> [Summary] {
        var summaries = due
        due = []
        for (key, window) in windows where all || nowMs &- window.startMs >= windowMs {
            if window.suppressed > 0 {
                summaries.append(Summary(key: key, suppressed: window.suppressed, windowMs: max(1, nowMs &- window.startMs)))
            }
            windows[key] = nil
        }
        return summaries.sorted { ($0.key, $0.suppressed) < ($1.key, $1.suppressed) }
    }

    private mutating func evictOldest() {
        guard let (key, window) = windows.min(by: { $0.value.startMs < $1.value.startMs }) else { return }
        if window.suppressed > 0 { due.append(Summary(key: key, suppressed: window.suppressed, windowMs: windowMs)) }
        windows[key] = nil
    }

    /// Kinds with an open window.
    public var trackedKeys: Int { windows.count }
}
