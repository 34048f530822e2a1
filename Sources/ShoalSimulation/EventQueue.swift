/// The simulator's agenda: events ordered by (time, order of scheduling). Two events due at the
/// same millisecond run in the order they were scheduled, so a run is a function of its seed
/// alone.
///
/// Time is whole milliseconds and a run of a thousand nodes schedules hundreds of events per
/// millisecond, so events are kept in buckets, one per due time, each a first-in first-out
/// list; a min-heap orders the due times only. A push appends to its bucket (a heap push only
/// for a new time), a pop takes the next event of the earliest bucket. (A heap of every event
/// made each pop sift through some 17 levels of a table larger than the cache: 6% of a large
/// run's time.) Emptied buckets keep their storage for the next due time.
/// Unbounded by itself; the simulator bounds what it schedules
/// (per connection at most one pending tick, per node one supervision and one commit).
struct EventQueue<Payload> {
    private struct Bucket {
        var events: [Payload] = []
        /// Events before this one were popped.
        var head = 0
    }

    /// Due times with a bucket, as a binary min-heap.
    private var times: [UInt64] = []
    private var bucketOfTime: [UInt64: Int] = [:]
    private var buckets: [Bucket] = []
    private var freeBuckets: [Int] = []
    /// The earliest time's bucket, while it is being emptied (saves a lookup per pop).
    private var front: (time: UInt64, bucket: Int)?
    private(set) var count = 0
    /// Events scheduled since the start.
    private(set) var scheduled: UInt64 = 0

    var isEmpty: Bool { count == 0 }

    mutating func push(_ payload: Payload, at time: UInt64) {
        count += 1
        scheduled += 1
        if let front, front.time == time {
            buckets[front.bucket].events.append(payload)
            return
        }
        if let b = bucketOfTime[time] {
            buckets[b].events.append(payload)
            return
        }
        let b: Int
        if let free = freeBuckets.popLast() {
            b = free
        } else {
            b = buckets.count
            buckets.append(Bucket())
        }
        buckets[b].events.append(payload)
        bucketOfTime[time] = b
        pushTime(time)
    }

    /// The earliest event and its time.
    mutating func pop() -> (time: UInt64, payload: Payload)? {
        guard let time = times.first else { return nil }
        let b: Int
        if let front, front.time == time {
            b = front.bucket
        } else {
            b = bucketOfTime[time]!
            front = (time, b)
        }
        let payload = buckets[b].events[buckets[b].head]
        buckets[b].head += 1
        count -= 1
        if buckets[b].head == buckets[b].events.count {
            buckets[b].events.removeAll(keepingCapacity: buckets[b].events.capacity <= 4096)
            buckets[b].head = 0
            freeBuckets.append(b)
            bucketOfTime[time] = nil
            front = nil
            popTime()
        }
        return (time, payload)
    }

    private mutating func pushTime(_ time: UInt64) {
        times.append(time)
        var child = times.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard time < times[parent] else { break }
            times[child] = times[parent]
            child = parent
        }
        times[child] = time
    }

    private mutating func popTime() {
        let last = times.removeLast()
        guard !times.isEmpty else { return }
        var parent = 0
        let n = times.count
        while true {
            let left = 2 * parent + 1
            guard left < n else { break }
            var smallest = left
            if left + 1 < n && times[left + 1] < times[left] { smallest = left + 1 }
            guard times[smallest] < last else { break }
            times[parent] = times[smallest]
            parent = smallest
        }
        times[parent] = last
    }

    func checkInvariants() {
        for i in times.indices.dropFirst() {
            precondition(times[i] >= times[(i - 1) / 2], "due times out of heap order at \(i)")
        }
        precondition(Set(times).count == times.count && bucketOfTime.count == times.count, "a due time twice or without its bucket")
        var events = 0
        for time in times {
            guard let b = bucketOfTime[time] else { preconditionFailure("due time \(time) has no bucket") }
            precondition(buckets[b].head < buckets[b].events.count, "an empty bucket is due")
            events += buckets[b].events.count - buckets[b].head
        }
        precondition(events == count, "events counted \(count), held \(events)")
        precondition(bucketOfTime.count + freeBuckets.count == buckets.count, "buckets lost")
    }
}
