/// The simulator's agenda: events ordered by (time, sequence number). The sequence number is
/// given at scheduling, so two events due at the same millisecond run in the order they were
/// scheduled, and a run is a function of its seed alone.
///
/// A binary min-heap of keys (time, sequence, slot); the payloads wait in a slab of slots,
/// so a sift moves only keys, and a payload is moved once in and once out.
/// Unbounded by itself; the simulator bounds what it schedules
/// (per connection at most one pending tick, per node one supervision and one commit).
struct EventQueue<Payload> {
    private struct Key {
        var time: UInt64
        var sequence: UInt64
        var slot: Int
        static func < (a: Key, b: Key) -> Bool { (a.time, a.sequence) < (b.time, b.sequence) }
    }

    private var keys: [Key] = []
    private var payloads: [Payload?] = []
    private var freeSlots: [Int] = []
    private var nextSequence: UInt64 = 0

    var count: Int { keys.count }
    var isEmpty: Bool { keys.isEmpty }
    /// Events scheduled since the start.
    var scheduled: UInt64 { nextSequence }

    mutating func push(_ payload: Payload, at time: UInt64) {
        let slot: Int
        if let free = freeSlots.popLast() {
            slot = free
            payloads[slot] = payload
        } else {
            slot = payloads.count
            payloads.append(payload)
        }
        keys.append(Key(time: time, sequence: nextSequence, slot: slot))
        nextSequence += 1
        var child = keys.count - 1
        let key = keys[child]
        while child > 0 {
            let parent = (child - 1) / 2
            guard key < keys[parent] else { break }
            keys[child] = keys[parent]
            child = parent
        }
        keys[child] = key
    }

    /// The earliest event and its time.
    mutating func pop() -> (time: UInt64, payload: Payload)? {
        guard let first = keys.first else { return nil }
        let last = keys.removeLast()
        if !keys.isEmpty {
            // Sift the last key down from the root.
            var parent = 0
            let n = keys.count
            while true {
                let left = 2 * parent + 1
                guard left < n else { break }
                var smallest = left
                if left + 1 < n && keys[left + 1] < keys[left] { smallest = left + 1 }
                guard keys[smallest] < last else { break }
                keys[parent] = keys[smallest]
                parent = smallest
            }
            keys[parent] = last
        }
        var payload: Payload?
        swap(&payload, &payloads[first.slot])
        freeSlots.append(first.slot)
        return (first.time, payload!)
    }

    func checkInvariants() {
        for i in keys.indices.dropFirst() {
            precondition(!(keys[i] < keys[(i - 1) / 2]), "event heap out of order at \(i)")
        }
        precondition(keys.count + freeSlots.count == payloads.count, "event slots lost")
        for key in keys { precondition(payloads[key.slot] != nil, "an event without its payload") }
    }
}
