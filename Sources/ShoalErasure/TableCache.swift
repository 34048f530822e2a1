/// A cache bounded by the bytes of what it holds: when an insert takes it past `bytesMax`, the
/// least recently used entries go until it fits again. Not thread-safe by itself; the shared
/// instances live behind `Locked`.
struct TableCache<Key: Hashable, Value> {
    /// The most bytes the cached values may occupy together (as their owners count them).
    let bytesMax: Int
    private var entries: [Key: Entry] = [:]
    private(set) var bytes = 0
    private var tick: UInt64 = 0

    private struct Entry {
        var value: Value
        var bytes: Int
        var lastUse: UInt64
    }

    init(bytesMax: Int) {
        self.bytesMax = bytesMax
    }

    var count: Int { entries.count }

    /// The value under `key`, marked as just used; nil if absent.
    mutating func value(for key: Key) -> Value? {
        guard var entry = entries[key] else { return nil }
        tick &+= 1
        entry.lastUse = tick
        entries[key] = entry
        return entry.value
    }

    /// Stores `value` (which occupies `bytes`), then evicts the least recently used entries
    /// while the total exceeds `bytesMax`. A value larger than `bytesMax` is not kept at all.
    mutating func insert(_ value: Value, bytes valueBytes: Int, for key: Key) {
        guard valueBytes <= bytesMax else { return }
        if let old = entries[key] { bytes -= old.bytes }
        tick &+= 1
        entries[key] = Entry(value: value, bytes: valueBytes, lastUse: tick)
        bytes += valueBytes
        // Each pass removes one entry, so this ends within `entries.count` passes. The scan is
        // linear, but the entries are few (bytes bound them) and eviction follows a table
        // computation that costs far more.
        while bytes > bytesMax, let oldest = entries.min(by: { $0.value.lastUse < $1.value.lastUse }) {
            bytes -= oldest.value.bytes
            entries[oldest.key] = nil
        }
    }
}
