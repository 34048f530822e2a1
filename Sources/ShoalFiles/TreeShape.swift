import ShoalCore

/// The arithmetic of a file's tree: how many bytes a node of a given height stands for, and
/// how a span divides among children. Heights count up from leaves (height 0).
public enum TreeShape {
    public static let leafBytesMax = Chunk.payloadMax
    public static let referenceBytes = Address32.byteCount
    public static let referencesMax = Chunk.payloadMax / Address32.byteCount  // 128
    /// A serialized child (span ‖ payload) zero-padded to this is one Reed–Solomon shard.
    public static let shardBytes = Chunk.serializedMax  // 4104
    /// The top byte of an intermediate's span carries the redundancy level; the rest is bytes.
    public static let spanBytesMask: UInt64 = (1 << 56) - 1
    /// The largest file: what 56 bits of span can say.
    public static let fileBytesMax: UInt64 = spanBytesMask

    /// Bytes a node of `height` can stand for when each intermediate holds `branching` data
    /// references: 4096 × branching^height, saturating at UInt64.max.
    public static func capacity(height: Int, branching: Int) -> UInt64 {
        var bytes = UInt64(leafBytesMax)
        for _ in 0..<height {
            let (product, overflow) = bytes.multipliedReportingOverflow(by: UInt64(branching))
            if overflow { return .max }
            bytes = product
        }
        return bytes
    }

    /// The height of the node that stands for `span` bytes: 0 (a leaf) up to 4096 bytes, else
    /// the least height whose capacity holds the span.
    public static func height(span: UInt64, branching: Int) -> Int {
        var h = 0
        // Capacity grows at least 37-fold a step and saturates at UInt64.max: ≤ 13 steps.
        while capacity(height: h, branching: branching) < span { h += 1 }
        return h
    }

    /// The span with its redundancy byte.
    static func span(bytes: UInt64, level: RedundancyLevel) -> UInt64 {
        bytes | UInt64(level.rawValue) << 56
    }

    /// The serialized length of the chunk that stands for `span` bytes in a tree of `level`:
    /// a leaf's payload is its bytes, an intermediate's its references.
    static func payloadCount(span: UInt64, level: RedundancyLevel) -> Int {
        if span <= UInt64(leafBytesMax) { return Int(span) }
        let n = dataCount(span: span, level: level)
        return (n + level.parityCount(dataCount: n)) * referenceBytes
    }

    /// Data children of an intermediate of `span` bytes (> 4096).
    static func dataCount(span: UInt64, level: RedundancyLevel) -> Int {
        let share = childShare(span: span, level: level)
        return Int((span + share - 1) / share)
    }

    /// Bytes each full child of an intermediate of `span` bytes stands for.
    static func childShare(span: UInt64, level: RedundancyLevel) -> UInt64 {
        let h = height(span: span, branching: level.dataShards)
        return capacity(height: h - 1, branching: level.dataShards)
    }
}

/// An intermediate chunk read and checked against the tree: its references, how many are data,
/// and the span each data child must have.
struct TreeNode: Sendable {
    let address: ChunkAddress
    /// Bytes below (the span without its redundancy byte).
    let span: UInt64
    let level: RedundancyLevel
    /// Data references first, then parity references.
    let references: [ChunkAddress]
    let dataCount: Int
    /// Bytes each data child but the last stands for.
    let share: UInt64

    var parityCount: Int { references.count - dataCount }

    /// The span the data child at `index` must have: the share, and what is left for the last.
    func childSpan(_ index: Int) -> UInt64 {
        index < dataCount - 1 ? share : span - UInt64(dataCount - 1) * share
    }

    /// Parses an intermediate whose span (redundancy byte masked) was already checked to be
    /// more than 4096; `level` is the tree's level, nil for the root (its byte decides).
    init(_ chunk: Chunk, level expected: RedundancyLevel?) throws(FileError) {
        let byte = UInt8(truncatingIfNeeded: chunk.span >> 56)
        guard let level = RedundancyLevel(rawValue: byte), expected == nil || expected == level else {
            throw .invalidRedundancy(byte)
        }
        let span = chunk.span & TreeShape.spanBytesMask
        guard chunk.payload.count % TreeShape.referenceBytes == 0 else {
            throw .notATree(chunk.address, "a payload of \(chunk.payload.count) bytes is not a whole number of 32-byte references")
        }
        let count = chunk.payload.count / TreeShape.referenceBytes
        let dataCount = TreeShape.dataCount(span: span, level: level)
        let parityCount = level.parityCount(dataCount: dataCount)
        guard count == dataCount + parityCount else {
            throw .notATree(chunk.address, "it holds \(count) references; a span of \(span) bytes at redundancy \(level) needs \(dataCount) data and \(parityCount) parity references")
        }
        var references = [ChunkAddress]()
        references.reserveCapacity(count)
        chunk.payload.withUnsafeBytes { raw in
            for i in 0..<count {
                // 32 bytes from a whole number of references: never nil.
                if let a = ChunkAddress(raw: UnsafeRawBufferPointer(rebasing: raw[(i * 32)..<(i * 32 + 32)])) { references.append(a) }
            }
        }
        self.address = chunk.address
        self.span = span
        self.level = level
        self.references = references
        self.dataCount = dataCount
        self.share = TreeShape.childShare(span: span, level: level)
    }
}

extension Chunk {
    /// The empty file's root: span 0 and a single zero byte (a `Chunk` needs 1…4096 payload
    /// bytes; span 0 says it stands for none of them). Its address is a constant.
    public static var emptyFile: Chunk {
        // 1 payload byte: within 1…4096, cannot throw.
        try! Chunk(span: 0, payload: [0])
    }
}
