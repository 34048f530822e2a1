import Locking
import ShoalCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Groups batches from many callers into group commits on one dedicated thread.
///
/// `apply(_:)` returns only after the transaction holding the batch has committed
/// (`mdb_txn_commit` returned success). Batches that arrive while a commit runs wait and go
/// into the next one together, so callers share the cost of the two `fdatasync`s a commit
/// takes. If a group fails, each of its batches is retried alone, so one bad batch fails only
/// its own caller.
public final class StoreWriter: Sendable {
    public struct Limits: Sendable {
        /// At most this many chunks go into one group commit (128 MiB of payload). Bigger groups
        /// rewrite fewer random `chunks` leaves per chunk: measured, the ratio to raw LMDB at
        /// 1,000,000 chunks went from 1.58 to 2.74 with groups this large (Docs/Performance.md).
        public var groupChunksMax = 32_768
        /// At most this many batches go into one group commit.
        public var groupBatchesMax = 1024
        /// Callers beyond this many waiting batches are refused with an overload error.
        public var queueBatchesMax = 65_536
        /// After this long with nothing to commit, `landing` is merged into `chunks`.
        public var idleMergeAfterMs = 1000

        public init() {}
    }

    private struct Pending {
        let batch: StoreBatch
        let done: @Sendable (Result<BatchResult, StoreError>) -> Void
    }

    private struct State {
        var queue: [Pending] = []
        var stopping = false
        var stopped = false
    }

    public let store: Store
    public let limits: Limits
    private let state = Locked(State())
    private let signal = ConditionSignal()
    private let finished = ConditionSignal()
    /// Group commits done so far (for tests and metrics).
    private let commits = Atomic<Int>(0)

    public init(store: Store, limits: Limits = Limits()) {
        self.store = store
        self.limits = limits
        let box = Unmanaged.passRetained(self)
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { context in
            let writer = Unmanaged<StoreWriter>.fromOpaque(context!).takeRetainedValue()
            writer.run()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
        pthread_detach(thread)
    }

    public var groupCommits: Int { commits.load(ordering: .relaxed) }

    /// Queues `batch` and returns its result once it has committed.
    public func apply(_ batch: StoreBatch) async throws(StoreError) -> BatchResult {
        let result: Result<BatchResult, StoreError> = await withCheckedContinuation { continuation in
            submit(batch) { continuation.resume(returning: $0) }
        }
        return try result.get()
    }

    /// Queues `batch`; `done` runs on the writer thread after the commit (or failure).
    public func submit(_ batch: StoreBatch, done: @escaping @Sendable (Result<BatchResult, StoreError>) -> Void) {
        let refusal: StoreError? = state.withLock { s in
            if s.stopping { return StoreError(.readOnly, "the store writer has stopped") }
            if s.queue.count >= limits.queueBatchesMax {
                return StoreError(.invalidBatch, "store writer overloaded: \(s.queue.count) batches waiting")
            }
            s.queue.append(Pending(batch: batch, done: done))
            return nil
        }
        if let refusal { done(.failure(refusal)) } else { signal.notify() }
    }

    /// Commits everything queued, then stops the thread. Later `apply` calls fail.
    public func stop() {
        state.withLock { $0.stopping = true }
        signal.notify()
        while !state.withLock({ $0.stopped }) { finished.wait(timeoutMs: 100) }
    }

    private func run() {
        while true {
            let (group, stop) = state.withLock { s -> ([Pending], Bool) in
                var chunks = 0
                var n = 0
                while n < s.queue.count && n < limits.groupBatchesMax {
                    chunks += s.queue[n].batch.chunks.count
                    if n > 0 && chunks > limits.groupChunksMax { break }
                    n += 1
                }
                let group = Array(s.queue.prefix(n))
                s.queue.removeFirst(n)
                return (group, s.stopping && s.queue.isEmpty)
            }
            if !group.isEmpty { commit(group) }
            if stop && group.isEmpty { break }
            if group.isEmpty && !signal.wait(timeoutMs: limits.idleMergeAfterMs) { mergeLandingWhileIdle() }
        }
        state.withLock { $0.stopped = true }
        finished.notify()
    }

    /// Nothing to commit for a while: merge `landing` now rather than in a later commit. A
    /// failure here changes nothing; the merge is tried again when idle next, and a full
    /// `landing` is merged inside `apply`, whose caller sees any error.
    private func mergeLandingWhileIdle() {
        guard let waiting = try? store.read({ try $0.landingCount() }), waiting > 0 else { return }
        _ = try? store.mergeLanding()
    }

    private func commit(_ group: [Pending]) {
        do throws(StoreError) {
            let results = try store.applyGroup(group.map(\.batch))
            commits.add(1, ordering: .relaxed)
            for (pending, result) in zip(group, results) { pending.done(.success(result)) }
        } catch {
            // A failure of the disk is no batch's fault: every caller of the group gets it,
            // and nothing is retried (decision 0011). Only a failure that may come from one
            // batch's contents is isolated.
            guard group.count > 1, !error.isFromTheDisk else {
                for pending in group { pending.done(.failure(error)) }
                return
            }
            // Isolate the failure: each batch alone.
            for pending in group {
                do throws(StoreError) {
                    let result = try store.apply(pending.batch)
                    commits.add(1, ordering: .relaxed)
                    pending.done(.success(result))
                } catch {
                    pending.done(.failure(error))
                }
            }
        }
    }
}

/// A condition variable with a flag, so a notify before the wait is not lost.
final class ConditionSignal: @unchecked Sendable {
    // Heap-allocated: pthread objects must not move, and Swift may move stored properties.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var flagged = false

    init() {
        mutex.initialize(to: pthread_mutex_t())
        cond.initialize(to: pthread_cond_t())
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    func notify() {
        pthread_mutex_lock(mutex)
        flagged = true
        pthread_cond_signal(cond)
        pthread_mutex_unlock(mutex)
    }

    /// Waits for a notify (or one already pending), at most `timeoutMs`; false if none came.
    @discardableResult
    func wait(timeoutMs: Int) -> Bool {
        pthread_mutex_lock(mutex)
        if !flagged {
            var now = timespec()
            clock_gettime(CLOCK_REALTIME, &now)
            var deadline = timespec(tv_sec: now.tv_sec + timeoutMs / 1000,
                                    tv_nsec: now.tv_nsec + (timeoutMs % 1000) * 1_000_000)
            if deadline.tv_nsec >= 1_000_000_000 {
                deadline.tv_sec += 1
                deadline.tv_nsec -= 1_000_000_000
            }
            _ = pthread_cond_timedwait(cond, mutex, &deadline)
        }
        let notified = flagged
        flagged = false
        pthread_mutex_unlock(mutex)
        return notified
    }
}
