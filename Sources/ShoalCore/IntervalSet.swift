/// A set of UInt64 values kept as sorted, disjoint, non-adjacent closed ranges: the bin IDs of
/// one peer's bin that this node has fully synced.
///
/// Invariant (checked by `checkInvariants`): ranges are ascending, none empty, and between two
/// ranges there is a gap of at least one value (touching ranges are merged).
public struct IntervalSet: Sendable, Hashable, CustomStringConvertible {
    public private(set) var ranges: [ClosedRange<UInt64>]

    public init() { ranges = [] }

    /// Builds a set from arbitrary ranges (overlapping, touching, unsorted are all fine).
    public init(_ ranges: some Sequence<ClosedRange<UInt64>>) {
        self.ranges = []
        for range in ranges { insert(range) }
    }

    /// Builds a set from stored ranges, which must already be in canonical form; nil otherwise.
    public init?(canonical ranges: [ClosedRange<UInt64>]) {
        self.ranges = ranges
        guard violations().isEmpty else { return nil }
    }

    public var isEmpty: Bool { ranges.isEmpty }

    /// Adds every value of `range`.
    public mutating func insert(_ range: ClosedRange<UInt64>) {
        var lower = range.lowerBound
        var upper = range.upperBound
        // First range that ends at or after lower - 1 (it may touch or overlap).
        var start = ranges.partitioningIndex { $0.upperBound >= (lower == 0 ? 0 : lower - 1) }
        var end = start
        while end < ranges.count && (upper == .max || ranges[end].lowerBound <= upper + 1) {
            lower = min(lower, ranges[end].lowerBound)
            upper = max(upper, ranges[end].upperBound)
            end += 1
        }
        if start > ranges.count { start = ranges.count }
        ranges.replaceSubrange(start..<end, with: [lower...upper])
    }

    public func contains(_ value: UInt64) -> Bool {
        let i = ranges.partitioningIndex { $0.upperBound >= value }
        return i < ranges.count && ranges[i].contains(value)
    }

    /// True when every value of `range` is in the set.
    public func contains(_ range: ClosedRange<UInt64>) -> Bool {
        let i = ranges.partitioningIndex { $0.upperBound >= range.lowerBound }
        return i < ranges.count && ranges[i].lowerBound <= range.lowerBound && ranges[i].upperBound >= range.upperBound
    }

    /// The smallest value ≥ `start` that is not in the set (where a history stream resumes).
    public func firstGap(from start: UInt64 = 1) -> UInt64? {
        var candidate = start
        for range in ranges where range.upperBound >= candidate {
            if range.lowerBound > candidate { return candidate }
            if range.upperBound == .max { return nil }
            candidate = range.upperBound + 1
        }
        return candidate
    }

    /// The missing ranges within `bounds`.
    public func gaps(within bounds: ClosedRange<UInt64>) -> [ClosedRange<UInt64>] {
        var result: [ClosedRange<UInt64>] = []
        var next = bounds.lowerBound
        for range in ranges where range.upperBound >= next {
            if range.lowerBound > bounds.upperBound { break }
            if range.lowerBound > next { result.append(next...(range.lowerBound - 1)) }
            if range.upperBound >= bounds.upperBound { return result }
            next = range.upperBound + 1
        }
        if next <= bounds.upperBound { result.append(next...bounds.upperBound) }
        return result
    }

    /// The number of values in the set (saturating).
    public var count: UInt64 {
        ranges.reduce(0) { total, r in
            let (n, overflow) = (r.upperBound - r.lowerBound).addingReportingOverflow(1)
            return overflow ? .max : total &+ n
        }
    }

    /// Everything wrong with the canonical form; empty when the invariant holds.
    public func violations() -> [String] {
        var problems: [String] = []
        for i in ranges.indices.dropFirst() {
            let previous = ranges[i - 1], current = ranges[i]
            if current.lowerBound <= previous.upperBound {
                problems.append("ranges \(previous) and \(current) are not sorted and disjoint")
            } else if current.lowerBound == previous.upperBound + 1 {
                problems.append("ranges \(previous) and \(current) touch and should be merged")
            }
        }
        return problems
    }

    public func checkInvariants() {
        let problems = violations()
        precondition(problems.isEmpty, "IntervalSet invariant broken: \(problems) in \(ranges)")
    }

    public var description: String {
        "[" + ranges.map { "\($0.lowerBound)-\($0.upperBound)" }.joined(separator: ",") + "]"
    }
}

extension RandomAccessCollection {
    /// The first index whose element satisfies `predicate`, which must be false then true along
    /// the collection (binary search).
    func partitioningIndex(where predicate: (Element) -> Bool) -> Index {
        var low = startIndex
        var count = self.count
        while count > 0 {
            let half = count / 2
            let middle = index(low, offsetBy: half)
            if predicate(self[middle]) {
                count = half
            } else {
                low = index(after: middle)
                count -= half + 1
            }
        }
        return low
    }
}
