/// The simulator's agenda: events ordered by (time, sequence number). The sequence number is
/// given at scheduling, so two events due at the same millisecond run in the order they were
/// scheduled, and a run is a function of its seed alone.
///
/// A binary min-heap over parallel arrays of keys and payloads (the keys are compared on every
/// sift, the payloads only moved). Unbounded by itself; the simulator bounds what it schedules
/// (per connection at most one pending tick, per node one supervision and one commit).
struct EventQueue<Payload> {
    private struct Key: Comparable {
        var time: UInt64
        var sequence: UInt64
        static func < (a: Key, b: Key) -> Bool { (a.time, a.sequence) < (b.time, b.sequence) }
    }

    private var keys: [Key] = []
    private var payloads: [Payload] = []
    private var nextSequence: UInt64 = 0

    var count: Int { keys.count }
    var isEmpty: Bool { keys.isEmpty }
    /// Events scheduled since the start.
    var scheduled: UInt64 { nextSequence }

    mutating func push(_ payload: Payload, at time: UInt64) {
        keys.append(Key(time: time, sequence: nextSequence))
        payloads.append(payload)
        nextSequence += 1
        var child = keys.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard keys[child] < keys[parent] else { break }
            keys.swapAt(child, parent)
            payloads.swapAt(child, parent)
            child = parent
        }
    }

    /// The earliest event and its time.
    mutating func pop() -> (time: UInt64, payload: Payload)? {
        guard let first = keys.first else { return nil }
        let payload: Payload
        if keys.count == 1 {
            keys.removeLast()
            payload = payloads.removeLast()
            return (first.time, payload)
        }
        keys.swapAt(0, keys.count - 1)
        payloads.swapAt(0, payloads.count - 1)
        keys.removeLast()
        payload = payloads.removeLast()
        var parent = 0
        let n = keys.count
        while true {
            let left = 2 * parent + 1
            guard left < n else { break }
            var smallest = left
            if left + 1 < n && keys[left + 1] < keys[left] { smallest = left + 1 }
            guard keys[smallest] < keys[parent] else { break }
            keys.swapAt(smallest, parent)
            payloads.swapAt(smallest, parent)
            parent = smallest
        }
        return (first.time, payload)
    }

    func checkInvariants() {
        for i in keys.indices.dropFirst() {
            precondition(!(keys[i] < keys[(i - 1) / 2]), "event heap out of order at \(i)")
        }
        precondition(keys.count == payloads.count, "event heap keys and payloads differ in count")
    }
}
