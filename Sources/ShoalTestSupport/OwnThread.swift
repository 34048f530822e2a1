import Foundation

/// Runs blocking `work` (a child process, a socket read, a transaction held open on purpose) on
/// a thread of its own: Swift's cooperative pool has two threads on two cores, and a blocked
/// one starves whatever the test waits for (decision 0009).
public func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}
