import ShoalCore

/// Where a reader gets chunks. nil = not available (lost, not here); throwing = a real error,
/// which the reader passes on.
public protocol ChunkSource: Sendable {
    func chunk(_ address: ChunkAddress) async throws -> Chunk?
}

public enum ChunkKind: Sendable { case root, intermediate, leaf, parity }

/// A file's tree read through a `ChunkSource`: the size from the root's span, byte ranges in
/// order (`bytes`), every chunk of the tree (`walk`).
///
/// Every chunk the source returns is hashed again and must match its reference; one that does
/// not counts as absent. An absent child of an intermediate with parity is rebuilt from its
/// siblings and the parity, and must then hash to its reference (else `parityMismatch`). Each
/// intermediate is checked against its parent: its span is its share of the parent's, its
/// references are as many as that span needs at the tree's redundancy level. Only the
/// intermediates on the path to the bytes asked for are read.
public struct FileReader: Sendable {
    public let root: ChunkAddress
    /// The file's length in bytes.
    public let size: UInt64
    /// The root's level; `.none` for a file of at most 4096 bytes (its root is its one leaf).
    public let redundancy: RedundancyLevel
    let shape: Shape
    let fetcher: ChildFetcher

    /// What the root is.
    enum Shape: Sendable {
        case empty
        case leaf(Chunk)
        case tree(TreeNode)
    }

    /// Reads and checks the root.
    public static func open(root: ChunkAddress, source: some ChunkSource) async throws -> FileReader {
        guard let chunk = try await source.verifiedChunk(root) else {
            throw FileError.missing(root)
        }
        let bytes = chunk.span & TreeShape.spanBytesMask
        let shape: Shape
        if bytes == 0 {
            guard chunk.span == 0, chunk.payload == [0] else {
                throw FileError.notATree(root, "a root of span 0 must be the empty-file chunk (span 0, payload one zero byte)")
            }
            shape = .empty
        } else if bytes <= UInt64(TreeShape.leafBytesMax) {
            try checkLeaf(chunk, span: bytes)
            shape = .leaf(chunk)
        } else {
            shape = .tree(try TreeNode(chunk, level: nil))
        }
        return FileReader(root: root, shape: shape, source: source)
    }

    private init(root: ChunkAddress, shape: Shape, source: some ChunkSource) {
        self.root = root
        self.shape = shape
        self.fetcher = ChildFetcher(source: source)
        switch shape {
        case .empty: (size, redundancy) = (0, .none)
        case .leaf(let chunk): (size, redundancy) = (chunk.span, .none)
        case .tree(let node): (size, redundancy) = (node.span, node.level)
        }
    }

    /// Every chunk of the tree, parents before children: the root, then depth first each
    /// intermediate, its leaves and (with `includeParity`) its parities. Leaves and parities
    /// are named, not read; intermediates are read (rebuilt from parity where needed).
    /// An intermediate that can be neither read nor rebuilt goes to `onMissing`: returning true
    /// skips its subtree and goes on; false, or no `onMissing`, ends the walk with `.missing`.
    public func walk(
        includeParity: Bool = true,
        onMissing: ((ChunkAddress) async throws -> Bool)? = nil,
        _ visit: (ChunkAddress, ChunkKind) async throws -> Void
    ) async throws {
        try await visit(root, .root)
        guard case .tree(let node) = shape else { return }
        try await walk(node, includeParity: includeParity, onMissing: onMissing, visit)
    }

    private func walk(
        _ node: TreeNode, includeParity: Bool,
        onMissing: ((ChunkAddress) async throws -> Bool)?,
        _ visit: (ChunkAddress, ChunkKind) async throws -> Void
    ) async throws {
        for index in 0..<node.dataCount {
            let reference = node.references[index]
            if node.childSpan(index) <= UInt64(TreeShape.leafBytesMax) {
                try await visit(reference, .leaf)
                continue
            }
            let child: TreeNode
            do {
                child = try await fetcher.intermediate(of: node, index: index)
            } catch FileError.missing(let lost) where lost == reference {
                guard let onMissing, try await onMissing(reference) else { throw FileError.missing(reference) }
                continue
            }
            try await visit(reference, .intermediate)
            // The recursion depth is the tree's height: spans shrink strictly going down.
            try await walk(child, includeParity: includeParity, onMissing: onMissing, visit)
        }
        if includeParity {
            for reference in node.references[node.dataCount...] { try await visit(reference, .parity) }
        }
    }

    /// A leaf's payload length is its span, and the span its parent gives it.
    static func checkLeaf(_ chunk: Chunk, span: UInt64) throws(FileError) {
        guard chunk.span == span, chunk.payload.count == Int(span) else {
            throw .spanMismatch(chunk.address, "a leaf of span \(chunk.span) and \(chunk.payload.count) payload bytes where the tree needs \(span)")
        }
    }
}

/// Gets children of intermediates: from the source, re-hashed, else rebuilt from parity.
/// Rebuilt sets are kept for the few intermediates read last, so that the siblings of a lost
/// child, often lost with it, are not rebuilt again.
final class ChildFetcher: Sendable {
    let source: any ChunkSource
    let rebuilds: Rebuilds

    init(source: some ChunkSource) {
        self.source = source
        self.rebuilds = Rebuilds(source: source)
    }

    /// The data child at `index` of `node`, from the source or rebuilt.
    func child(of node: TreeNode, index: Int) async throws -> Chunk {
        if let chunk = try await source.verifiedChunk(node.references[index]) { return chunk }
        return try await rebuilds.child(of: node, index: index)
    }

    /// The leaf at `index` of `node`, checked against its span.
    func leaf(of node: TreeNode, index: Int) async throws -> Chunk {
        let chunk = try await child(of: node, index: index)
        try FileReader.checkLeaf(chunk, span: node.childSpan(index))
        return chunk
    }

    /// The intermediate at `index` of `node`, checked against its span and the tree's level.
    func intermediate(of node: TreeNode, index: Int) async throws -> TreeNode {
        let chunk = try await child(of: node, index: index)
        let expected = node.childSpan(index)
        let bytes = chunk.span & TreeShape.spanBytesMask
        // A child as large as its parent would let a tree go on forever.
        guard bytes < node.span else { throw FileError.tooDeep(chunk.address) }
        guard bytes == expected else {
            throw FileError.spanMismatch(chunk.address, "span \(bytes), but child \(index) of \(node.address) (span \(node.span)) must stand for \(expected) bytes")
        }
        return try TreeNode(chunk, level: node.level)
    }
}

extension ChunkSource {
    /// The chunk at `reference` if the source has it and it hashes to it again; nil otherwise.
    func verifiedChunk(_ reference: ChunkAddress) async throws -> Chunk? {
        guard let chunk = try await chunk(reference),
              Chunk.address(span: chunk.span, payload: chunk.payload) == reference else { return nil }
        return chunk
    }
}
