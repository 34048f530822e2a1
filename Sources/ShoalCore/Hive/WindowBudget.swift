/// A token bucket of `capacity` tokens refilled evenly over `windowMs`: at most `capacity`
/// takes in any burst, and `capacity` per window in the long run. Performs no I/O; time comes
/// in as milliseconds of a monotonic clock.
///
/// Unlike `RequestBudget` (tokens a second, in `Double`), the arithmetic is in integers: one
/// token is `windowMs` units of credit and each millisecond adds `capacity` units, so "128 a
/// minute" is exactly 128 after exactly one minute, and a test can say so.
public struct WindowBudget: Sendable, Equatable {
    public let capacity: Int
    public let windowMs: UInt64
    /// Credit in units of 1/`windowMs` token; at most `capacity × windowMs`.
    private var credit: UInt64
    /// The latest time seen; nil before the first take. A clock that steps back refills nothing.
    private var lastMs: UInt64?

    /// A full bucket.
    public init(capacity: Int, windowMs: UInt64) {
        precondition(capacity > 0 && windowMs > 0, "a window budget needs a positive capacity and window")
        self.capacity = capacity
        self.windowMs = windowMs
        credit = UInt64(capacity) * windowMs
    }

    /// Whole tokens left, as of the last take.
    public var tokens: Int { Int(credit / windowMs) }

    /// Takes one token at `nowMs`; false (and nothing taken) when none is left.
    public mutating func take(nowMs: UInt64) -> Bool {
        let full = UInt64(capacity) * windowMs
        if let lastMs, nowMs > lastMs {
            // Beyond one window the bucket is full anyway; capping first keeps the product small.
            let elapsed = min(nowMs - lastMs, windowMs)
            credit = min(full, credit + elapsed * UInt64(capacity))
        }
        lastMs = max(lastMs ?? nowMs, nowMs)
        guard credit >= windowMs else { return false }
        credit -= windowMs
        return true
    }

    public func checkInvariants() {
        precondition(credit <= UInt64(capacity) * windowMs, "credit \(credit) over a full bucket of \(capacity) × \(windowMs)")
    }
}
