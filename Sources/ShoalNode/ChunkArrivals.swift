import Locking
import ShoalCore

/// Callers waiting for chunks to be stored: a file read on this node waits here for pull sync
/// to bring the chunks it misses. Every commit that stores chunks wakes the waiters of those
/// addresses; a wait ends after its timeout or when its task is cancelled, whichever is first.
///
/// A wait registers before it checks the store, so a commit between the check and the
/// registration cannot be missed. Timeouts are kept by one sweeping task that runs while
/// waits are open (a download waits once per chunk it reads ahead of sync: no task per wait),
/// so a wait ends at most `sweepStep` after its deadline.
final class ChunkArrivals: Sendable {
    private enum Slot {
        /// Registered; the continuation arrives a moment after the registration.
        case waiting(CheckedContinuation<Bool, Never>?)
        /// Decided before the continuation arrived.
        case decided(Bool)
    }

    private struct Entry {
        var address: ChunkAddress
        var slot: Slot
        var deadline: ContinuousClock.Instant
    }

    private struct State {
        var nextID: UInt64 = 0
        var slots: [UInt64: Entry] = [:]
        var byAddress: [ChunkAddress: Set<UInt64>] = [:]
        var sweeping = false
    }

    /// The longest a wait outlives its deadline.
    static let sweepStep: Duration = .milliseconds(100)

    private let state = Locked(State())
    private let now: @Sendable () -> ContinuousClock.Instant

    init(now: @escaping @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }) {
        self.now = now
    }

    /// How many waits are open (for tests and status).
    var waiting: Int { state.withLock { $0.slots.count } }

    /// Chunks were committed: their waiters resume with true.
    func stored(_ addresses: some Sequence<ChunkAddress>) {
        let woken: [CheckedContinuation<Bool, Never>] = state.withLock { s in
            guard !s.byAddress.isEmpty else { return [] }
            var out: [CheckedContinuation<Bool, Never>] = []
            for address in addresses {
                guard let ids = s.byAddress[address] else { continue }
                for id in ids { if let c = Self.decide(&s, id, true) { out.append(c) } }
            }
            return out
        }
        for c in woken { c.resume(returning: true) }
    }

    /// Waits until `address` is stored (true), or `timeout` passes or the task is cancelled
    /// (false). `isStored` is asked once, after the wait is registered.
    func wait(for address: ChunkAddress, timeout: Duration, isStored: @Sendable () -> Bool) async -> Bool {
        let deadline = now() + timeout
        let (id, startSweeper) = state.withLock { s in
            s.nextID += 1
            s.slots[s.nextID] = Entry(address: address, slot: .waiting(nil), deadline: deadline)
            s.byAddress[address, default: []].insert(s.nextID)
            let start = !s.sweeping
            s.sweeping = true
            return (s.nextID, start)
        }
        if startSweeper { Task { await self.sweep() } }
        if isStored() { finish(id, true) }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
                let decided: Bool? = state.withLock { s in
                    guard let entry = s.slots[id] else { return false }
                    if case .decided(let value) = entry.slot {
                        Self.remove(&s, id)
                        return value
                    }
                    s.slots[id]?.slot = .waiting(c)
                    return nil
                }
                if let decided { c.resume(returning: decided) }
            }
        } onCancel: {
            finish(id, false)
        }
    }

    /// Ends the waits whose deadline passed, every `sweepStep` (or sooner, at the earliest
    /// deadline), until none is open.
    private func sweep() async {
        while true {
            let (expired, next): ([CheckedContinuation<Bool, Never>], ContinuousClock.Instant?) = state.withLock { s in
                let t = now()
                var out: [CheckedContinuation<Bool, Never>] = []
                for (id, entry) in s.slots where entry.deadline <= t {
                    if let c = Self.decide(&s, id, false) { out.append(c) }
                }
                guard let earliest = s.slots.values.lazy.map(\.deadline).min() else {
                    s.sweeping = false
                    return (out, nil)
                }
                return (out, earliest)
            }
            for c in expired { c.resume(returning: false) }
            guard let next else { return }
            let pause = min(max(next - now(), .milliseconds(1)), Self.sweepStep)
            try? await Task.sleep(for: pause)
        }
    }

    private func finish(_ id: UInt64, _ value: Bool) {
        let c = state.withLock { Self.decide(&$0, id, value) }
        c?.resume(returning: value)
    }

    /// Decides wait `id`: returns its continuation to resume (outside the lock) if it has one,
    /// else records the outcome for when it arrives. A wait decided once stays decided.
    private static func decide(_ s: inout State, _ id: UInt64, _ value: Bool) -> CheckedContinuation<Bool, Never>? {
        guard let entry = s.slots[id], case .waiting(let c) = entry.slot else { return nil }
        guard let c else {
            s.slots[id]?.slot = .decided(value)
            return nil
        }
        remove(&s, id)
        return c
    }

    private static func remove(_ s: inout State, _ id: UInt64) {
        guard let entry = s.slots.removeValue(forKey: id) else { return }
        s.byAddress[entry.address]?.remove(id)
        if s.byAddress[entry.address]?.isEmpty == true { s.byAddress[entry.address] = nil }
    }
}
