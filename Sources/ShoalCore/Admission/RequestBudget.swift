/// A token bucket of requests per second: `perSecond` tokens a second, holding at most
/// `burst`. Performs no I/O; time comes in as milliseconds of a monotonic clock.
///
/// A peer that asks for more than this is not slow or unlucky but flooding, whatever each of
/// its requests looks like on its own.
public struct RequestBudget: Sendable, Equatable {
    public let perSecond: Double
    public let burst: Double
    public private(set) var tokens: Double
    private var lastMs: UInt64?

    public init(perSecond: Int, burst: Int) {
        precondition(perSecond > 0 && burst > 0, "a request budget needs a positive rate and burst")
        self.perSecond = Double(perSecond)
        self.burst = Double(burst)
        tokens = Double(burst)
    }

    /// Takes one token at `nowMs`; false when none is left.
    public mutating func take(nowMs: UInt64) -> Bool {
        if let lastMs, nowMs > lastMs {
            tokens = min(burst, tokens + Double(nowMs - lastMs) * perSecond / 1000)
        }
        lastMs = max(lastMs ?? nowMs, nowMs)
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
