import ShoalCore
import Testing

struct IntervalSetTests {
    @Test func touchingAndOverlappingRangesMerge() {
        var set = IntervalSet()
        set.insert(5...7)
        set.insert(1...2)
        set.insert(3...4)  // touches both neighbours
        #expect(set.ranges == [1...7])
        set.insert(10...12)
        set.insert(9...9)
        #expect(set.ranges == [1...7, 9...12])
        set.insert(0...100)
        #expect(set.ranges == [0...100])
        set.checkInvariants()
    }

    @Test func firstGapIsWhereAHistoryStreamResumes() {
        #expect(IntervalSet().firstGap() == 1)
        #expect(IntervalSet([1...10]).firstGap() == 11)
        #expect(IntervalSet([2...10]).firstGap() == 1)
        #expect(IntervalSet([1...3, 5...9]).firstGap() == 4)
        #expect(IntervalSet([1...UInt64.max]).firstGap() == nil)
        #expect(IntervalSet([1...3, 5...9]).firstGap(from: 5) == 10)
    }

    @Test func gapsWithinBounds() {
        let set = IntervalSet([3...4, 8...9])
        #expect(set.gaps(within: 1...10) == [1...2, 5...7, 10...10])
        #expect(set.gaps(within: 3...4) == [])
        #expect(set.gaps(within: 4...8) == [5...7])
    }

    @Test func canonicalFormIsCheckedWhenLoaded() {
        #expect(IntervalSet(canonical: [1...3, 5...6]) != nil)
        #expect(IntervalSet(canonical: [5...6, 1...3]) == nil)
        #expect(IntervalSet(canonical: [1...3, 4...6]) == nil)
        #expect(IntervalSet(canonical: [1...5, 3...6]) == nil)
    }

    @Test(arguments: [1, 2, 3, 42, 1234])
    func agreesWithASetOfValues(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var set = IntervalSet()
        var model = Set<UInt64>()
        for _ in 0..<300 {
            let a = rng.next() % 200, b = a + rng.next() % 6
            set.insert(a...b)
            model.formUnion(a...b)
            set.checkInvariants()
        }
        for v in UInt64(0)...210 { #expect(set.contains(v) == model.contains(v), "value \(v), seed \(seed)") }
        #expect(set.count == UInt64(model.count))
        let expectedGap = (UInt64(1)...).first { !model.contains($0) }
        #expect(set.firstGap() == expectedGap)
    }
}
