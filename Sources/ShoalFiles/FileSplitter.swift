import ShoalCore

/// Streaming split of a file into its chunk tree: feed bytes, get back the chunks that became
/// final (leaves, intermediates, parities) to store; `finish` gives the root.
///
/// What it holds is bounded by the tree's height, never the file's size: one partial leaf and,
/// per level, one partial intermediate (the references, and with redundancy the children
/// themselves, which its parity is computed over). See `Docs/Files.md` for the format.
public struct FileSplitter: Sendable {
    public let redundancy: RedundancyLevel
    /// The bytes of the leaf being filled (< 4096 between calls).
    private var leaf: [UInt8]
    /// `pending[h]`: the children (of height ≤ h) waiting for the intermediate of height h + 1
    /// that will hold them; fewer than `redundancy.dataShards` between calls.
    private var pending: [[Child]] = []
    public private(set) var bytesIn: UInt64 = 0

    /// A reference waiting in a partial intermediate. With redundancy the chunk is kept too:
    /// the intermediate's parity is computed over its children's serialized forms.
    private struct Child: Sendable {
        let address: ChunkAddress
        let bytes: UInt64
        let chunk: Chunk?
    }

    public init(redundancy: RedundancyLevel = .none) {
        self.redundancy = redundancy
        leaf = []
        leaf.reserveCapacity(TreeShape.leafBytesMax)
    }

    /// What the splitter holds now, in bytes (the partial leaf and every partial intermediate's
    /// references and kept children): what the memory bound is about.
    public var bufferedBytes: Int {
        pending.reduce(leaf.count) { sum, level in
            level.reduce(sum) { $0 + TreeShape.referenceBytes + 8 + ($1.chunk.map { 8 + $0.payload.count } ?? 0) }
        }
    }

    public mutating func append(_ bytes: [UInt8]) throws(FileError) -> [Chunk] {
        // withUnsafeBytes rethrows untyped errors: carry the typed one out in a Result.
        let result = bytes.withUnsafeBytes { raw in Result { () throws(FileError) in try append(raw) } }
        return try result.get()
    }

    /// Takes `bytes`; returns every chunk that became final (full leaves, and the intermediates
    /// and parities they completed), in an order where children precede their parents.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) throws(FileError) -> [Chunk] {
        let (total, overflow) = bytesIn.addingReportingOverflow(UInt64(bytes.count))
        guard !overflow, total <= TreeShape.fileBytesMax else {
            throw .rangeNotSatisfiable(bytesIn..<(overflow ? .max : total), size: TreeShape.fileBytesMax)
        }
        var out = [Chunk]()
        var offset = 0
        while offset < bytes.count {
            let take = min(TreeShape.leafBytesMax - leaf.count, bytes.count - offset)
            leaf.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + take)]))
            offset += take
            if leaf.count == TreeShape.leafBytesMax { try emitLeaf(into: &out) }
        }
        bytesIn = total
        return out
    }

    /// Ends the file: the last partial leaf and partial intermediates become chunks, and the
    /// root is the one reference left at the top. A level left with a single reference passes
    /// it up unwrapped, so every intermediate has at least two data children and a file of up
    /// to 4096 bytes is its one leaf. An empty file is `Chunk.emptyFile`.
    /// The splitter is empty again afterwards.
    public mutating func finish() throws(FileError) -> (root: ChunkAddress, size: UInt64, chunks: [Chunk]) {
        defer { self = FileSplitter(redundancy: redundancy) }
        var out = [Chunk]()
        if !leaf.isEmpty { try emitLeaf(into: &out) }
        guard bytesIn > 0 else {
            let empty = Chunk.emptyFile
            return (empty.address, 0, [empty])
        }
        var h = 0
        // One step a level; the levels are at most the tree's height.
        while h < pending.count {
            let isTop = pending[(h + 1)...].allSatisfy(\.isEmpty)
            if isTop && pending[h].count == 1 { return (pending[h][0].address, bytesIn, out) }
            switch pending[h].count {
            case 0: break
            case 1:
                pushUp(pending[h][0], toHeight: h + 1)
                pending[h] = []
            default: try wrap(height: h, into: &out)
            }
            h += 1
        }
        preconditionFailure("the split of \(bytesIn) bytes ended without a root: a bug in FileSplitter")
    }

    private mutating func emitLeaf(into out: inout [Chunk]) throws(FileError) {
        let chunk = Self.make(span: UInt64(leaf.count), payload: leaf)
        leaf.removeAll(keepingCapacity: true)
        out.append(chunk)
        try add(Child(address: chunk.address, bytes: chunk.span, chunk: redundancy == .none ? nil : chunk), height: 0, into: &out)
    }

    /// Adds a child to the partial intermediate of `height`; a full one becomes a chunk at once.
    private mutating func add(_ child: Child, height: Int, into out: inout [Chunk]) throws(FileError) {
        pushUp(child, toHeight: height)
        if pending[height].count == redundancy.dataShards { try wrap(height: height, into: &out) }
    }

    private mutating func pushUp(_ child: Child, toHeight height: Int) {
        while pending.count <= height { pending.append([]) }
        pending[height].append(child)
    }

    /// Makes the intermediate over `pending[height]` (and its parities), and hands it up.
    private mutating func wrap(height: Int, into out: inout [Chunk]) throws(FileError) {
        let children = pending[height]
        pending[height] = []
        let bytes = children.reduce(0) { $0 + $1.bytes }
        let parities = try Parity.chunks(over: children.compactMap(\.chunk), count: redundancy.parityCount(dataCount: children.count))
        out.append(contentsOf: parities)
        var payload = [UInt8]()
        payload.reserveCapacity((children.count + parities.count) * TreeShape.referenceBytes)
        for child in children { child.address.append(to: &payload) }
        for parity in parities { parity.address.append(to: &payload) }
        let node = Self.make(span: TreeShape.span(bytes: bytes, level: redundancy), payload: payload)
        out.append(node)
        try add(Child(address: node.address, bytes: bytes, chunk: redundancy == .none ? nil : node), height: height + 1, into: &out)
    }

    /// A chunk of 1…4096 payload bytes, which is all the splitter makes.
    private static func make(span: UInt64, payload: [UInt8]) -> Chunk {
        do { return try Chunk(span: span, payload: payload) } catch {
            preconditionFailure("FileSplitter made a chunk of \(payload.count) payload bytes: \(error)")
        }
    }
}
