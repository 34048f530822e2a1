/// Bounds shared by the tests' waits. Every wait is bounded; these are generous because on two
/// cores a full run can hold both threads of Swift's cooperative pool for seconds (synchronous
/// store work, child processes), and a test that fails only when the machine is busy tells
/// nothing about the node.
public enum TestTimeouts {
    /// How long a condition that should soon hold is polled before the test fails.
    public static let wait: Duration = .seconds(30)
    /// How long a server or node started by a test gets to start listening.
    public static let listening: Duration = .seconds(60)
}

/// Polls `condition` every `pollMs` milliseconds (real time) until it holds or `timeout` has
/// passed; whether it held. The condition is asked once more at the deadline, so a slow last
/// poll does not turn into a timeout. Returns false at once if the task is cancelled.
public func eventually(
    timeout: Duration = TestTimeouts.wait, pollMs: UInt64 = 20,
    _ condition: () async throws -> Bool
) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while true {
        if try await condition() { return true }
        guard ContinuousClock.now < deadline, !Task.isCancelled else { return false }
        try? await Task.sleep(for: .milliseconds(Int64(clamping: pollMs)))
    }
}

/// As `eventually(timeout:pollMs:_:)`, throwing `WaitTimedOut` (which says what was awaited and
/// for how long) when `condition` does not hold within `timeout`. Errors the condition throws
/// end the wait.
public func eventually(
    _ what: String, within timeout: Duration = TestTimeouts.wait, pollMs: UInt64 = 20,
    _ condition: () async throws -> Bool
) async throws {
    let start = ContinuousClock.now
    var checks = 0
    let held = try await eventually(timeout: timeout, pollMs: pollMs) {
        checks += 1
        return try await condition()
    }
    try Task.checkCancellation()
    if !held { throw WaitTimedOut(what: what, waited: ContinuousClock.now - start, checks: checks) }
}

/// A bounded wait that ran out.
public struct WaitTimedOut: Error, CustomStringConvertible, Sendable {
    public var what: String
    public var waited: Duration
    /// How many times the condition was asked.
    public var checks: Int

    public var description: String {
        let ms = waited.components.seconds * 1000 + waited.components.attoseconds / 1_000_000_000_000_000
        let fraction = String(ms % 1000)
        return "timed out after \(ms / 1000).\(String(repeating: "0", count: 3 - fraction.count))\(fraction) s "
            + "(\(checks) checks) waiting until: \(what)"
    }
}

/// A test's own failure, thrown where recording an issue would let the test go on.
public struct TestFailure: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
