extension Address32 {
    /// `self` with its first `bits` bits kept and the rest all zero (`fill` false) or all one:
    /// the lowest and highest addresses that share those bits with it.
    func keepingPrefix(_ bits: Int, fill: Bool) -> Address32 {
        func word(_ w: UInt64, _ index: Int) -> UInt64 {
            let keep = Swift.min(64, Swift.max(0, bits - 64 * index))
            let mask: UInt64 = keep == 0 ? 0 : ~0 << UInt64(64 - keep)
            return (w & mask) | (fill ? ~mask : 0)
        }
        return Address32(w0: word(w0, 0), w1: word(w1, 1), w2: word(w2, 2), w3: word(w3, 3))
    }

    /// Whether `self` is closer to `target` than `other` is, by XOR distance.
    public func isCloser(to target: Address32, than other: Address32) -> Bool {
        (w0 ^ target.w0, w1 ^ target.w1, w2 ^ target.w2, w3 ^ target.w3)
            < (other.w0 ^ target.w0, other.w1 ^ target.w1, other.w2 ^ target.w2, other.w3 ^ target.w3)
    }
}

extension Array where Element == Address32 {
    /// For an array sorted ascending: the first index whose element is not below `value`.
    func lowerBound(of value: Address32) -> Int {
        var (lo, hi) = (0, count)
        while lo < hi {
            let mid = (lo + hi) / 2
            if self[mid] < value { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// For an array sorted ascending: the first index whose element is above `value`.
    func upperBound(of value: Address32) -> Int {
        var (lo, hi) = (0, count)
        while lo < hi {
            let mid = (lo + hi) / 2
            if value < self[mid] { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }

    /// For an array sorted ascending: the indices of the elements sharing at least `bits`
    /// leading bits with `target` (its proximity order to them is `bits` or more). These are
    /// contiguous, and each is closer to `target` by XOR distance than every element outside.
    func indices(sharingPrefix bits: Int, with target: Address32) -> Range<Int> {
        lowerBound(of: target.keepingPrefix(bits, fill: false))..<upperBound(of: target.keepingPrefix(bits, fill: true))
    }
}
