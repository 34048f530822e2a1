/// A binary min-heap. The downloader keeps its queues in these with lazy deletion: an entry
/// that no longer matches its chunk's state is skipped when it reaches the top, so changing a
/// chunk's place costs a push, not a search. Equal elements pop in an order fixed by the
/// sequence of pushes, so callers give every element a total order of its own.
struct MinHeap<Element: Comparable & Sendable>: Sendable {
    private(set) var elements: [Element] = []

    var count: Int { elements.count }
    var isEmpty: Bool { elements.isEmpty }
    var min: Element? { elements.first }

    mutating func push(_ element: Element) {
        elements.append(element)
        var child = elements.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard elements[child] < elements[parent] else { break }
            elements.swapAt(child, parent)
            child = parent
        }
    }

    @discardableResult
    mutating func popMin() -> Element? {
        guard !elements.isEmpty else { return nil }
        elements.swapAt(0, elements.count - 1)
        let top = elements.removeLast()
        siftDown(from: 0)
        return top
    }

    /// Keeps only the elements `keep` accepts (drops stale entries in one pass).
    mutating func filter(_ keep: (Element) -> Bool) {
        elements.removeAll { !keep($0) }
        var i = elements.count / 2
        while i > 0 {
            i -= 1
            siftDown(from: i)
        }
    }

    private mutating func siftDown(from start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            guard left < elements.count else { return }
            var smallest = left
            if left + 1 < elements.count, elements[left + 1] < elements[left] { smallest = left + 1 }
            guard elements[smallest] < elements[parent] else { return }
            elements.swapAt(parent, smallest)
            parent = smallest
        }
    }

    func checkInvariants() {
        for i in elements.indices.dropFirst() {
            precondition(!(elements[i] < elements[(i - 1) / 2]), "heap order broken at \(i)")
        }
    }
}
