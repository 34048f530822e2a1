import ShoalCore

extension FileReader {
    /// Bytes in pieces of at most this many (leaves are joined up to it).
    public static let pieceBytesMax = 64 * 1024
    /// The most leaves a stream requests ahead, whatever `prefetch` asks (4 MiB of leaves).
    public static let prefetchMax = 1024

    /// The bytes of `range` (all of the file when nil; the end clamped to the file's size), in
    /// order, in pieces of at most `pieceBytesMax`. A non-empty range that starts at or past the
    /// end fails with `rangeNotSatisfiable`.
    ///
    /// At most `prefetch` (clamped to 1…`prefetchMax`) leaves are requested ahead of the bytes
    /// handed out, and the stream is pulled: nothing is fetched beyond that window until the
    /// consumer asks for more, so what is held is bounded by the window and the path of
    /// intermediates (the tree's height), never the file. Fails with a `FileError` on a chunk it can neither get nor rebuild.
    public func bytes(_ range: Range<UInt64>? = nil, prefetch: Int = 64) -> AsyncThrowingStream<[UInt8], Error> {
        let window = min(max(1, prefetch), FileReader.prefetchMax)
        let joiner = Joiner(reader: self, range: range ?? 0..<size, window: window)
        return AsyncThrowingStream(unfolding: { try await joiner.next() })
    }
}

/// The state of one `bytes` stream: a cursor over the leaves of the range (the intermediates on
/// the path from the root to the next leaf), and a window of leaf fetches in flight, handed out
/// in order.
///
/// The window is a FIFO of tasks rather than a task group because the stream is pulled (one
/// `next` per piece the consumer asks for) and a task group cannot outlive one call; the tasks
/// are cancelled when the stream is dropped or fails.
actor Joiner {
    private let reader: FileReader
    /// The range asked for; clamped to the file when the stream starts.
    private var range: Range<UInt64>
    private let windowMax: Int
    private var cursor: Cursor?
    private var window: [Task<[UInt8], Error>] = []
    private var started = false
    private var finished = false

    /// `stack[i]`: an intermediate on the path, its first byte's offset in the file, and the
    /// data child to go to next.
    struct Cursor {
        var stack: [(node: TreeNode, start: UInt64, index: Int)]
    }

    init(reader: FileReader, range: Range<UInt64>, window: Int) {
        self.reader = reader
        self.range = range
        self.windowMax = window
    }

    deinit {
        for task in window { task.cancel() }
    }

    func next() async throws -> [UInt8]? {
        guard !finished else { return nil }
        do {
            if !started {
                started = true
                try start()
            }
            var piece = [UInt8]()
            // A leaf adds at most 4096 bytes: stop while one more still fits.
            while piece.count + TreeShape.leafBytesMax <= FileReader.pieceBytesMax {
                try await fill()
                guard !window.isEmpty else { break }
                let bytes = try await window.removeFirst().value
                if piece.isEmpty { piece = bytes } else { piece.append(contentsOf: bytes) }
            }
            if piece.isEmpty { finished = true }
            return piece.isEmpty ? nil : piece
        } catch {
            finished = true
            for task in window { task.cancel() }
            window = []
            throw error
        }
    }

    private func start() throws {
        if !range.isEmpty && range.lowerBound >= reader.size {
            throw FileError.rangeNotSatisfiable(range, size: reader.size)
        }
        range = range.clamped(to: 0..<reader.size)
        guard !range.isEmpty else { return }
        switch reader.shape {
        case .empty: break
        case .leaf(let chunk):
            let bytes = Array(chunk.payload[Int(range.lowerBound)..<Int(range.upperBound)])
            window.append(Task { bytes })
        case .tree(let root):
            cursor = Cursor(stack: [(root, 0, Int(range.lowerBound / root.share))])
        }
    }

    /// Starts leaf fetches until the window is full or the range has no more leaves.
    private func fill() async throws {
        while window.count < windowMax, let (node, index, start) = try await nextLeaf() {
            let fetcher = reader.fetcher
            let lower = Int(max(range.lowerBound, start) - start)
            let upper = Int(min(range.upperBound, start + node.childSpan(index)) - start)
            window.append(Task {
                let leaf = try await fetcher.leaf(of: node, index: index)
                return lower == 0 && upper == leaf.payload.count ? leaf.payload : Array(leaf.payload[lower..<upper])
            })
        }
    }

    /// The next leaf of the range and its first byte's offset, reading the intermediates on
    /// the way; nil past the range. Each step moves to a later child or a lower level, so the
    /// loop ends within (height × 128) steps per leaf.
    private func nextLeaf() async throws -> (TreeNode, Int, UInt64)? {
        guard var cursor else { return nil }
        defer { self.cursor = cursor }
        while let (node, start, index) = cursor.stack.last {
            guard index < node.dataCount else {
                cursor.stack.removeLast()
                if !cursor.stack.isEmpty { cursor.stack[cursor.stack.count - 1].index += 1 }
                continue
            }
            let childStart = start + UInt64(index) * node.share
            guard childStart < range.upperBound else {
                cursor.stack = []
                return nil
            }
            if node.childSpan(index) <= UInt64(TreeShape.leafBytesMax) {
                cursor.stack[cursor.stack.count - 1].index += 1
                return (node, index, childStart)
            }
            let child = try await reader.fetcher.intermediate(of: node, index: index)
            // The first path down starts at the range's first byte; later ones at their first child.
            let first = range.lowerBound > childStart ? Int((range.lowerBound - childStart) / child.share) : 0
            cursor.stack.append((child, childStart, first))
        }
        return nil
    }
}
