import ShoalCore

/// A file's tree is larger than a caller can take at once: it has more distinct chunks than
/// `chunksMax` (the walk stopped as soon as it counted one more).
public struct TreeTooLarge: Error, Equatable, Sendable, CustomStringConvertible {
    public var root: ChunkAddress
    public var chunksMax: Int

    public init(root: ChunkAddress, chunksMax: Int) { (self.root, self.chunksMax) = (root, chunksMax) }

    public var description: String {
        "the file \(root.hex) has more than \(chunksMax) distinct chunks"
    }
}

/// What of a tree `FileTreeAddresses.collect` names.
public enum TreeChunks: Sendable, Equatable {
    /// The root, the intermediates and the data leaves: everything a reader needs and nothing
    /// more. A tree with parity reads whole from these alone.
    case data
    /// Those and every parity chunk: what a repair on this node would need too.
    case dataAndParity
}

/// Every chunk address of a file's tree, read through a `ChunkSource`: the list a download of
/// the whole file fetches.
public enum FileTreeAddresses {
    /// The distinct chunk addresses of the tree under `root`, parents before children (the
    /// root first, then depth first as `FileReader.walk` goes), each once: a file of repeated
    /// blocks names a leaf many times, and a download counts distinct chunks.
    ///
    /// The root and the intermediates are read from `source` (rebuilt from parity where a
    /// level allows it, and checked against the tree); leaves and parities are only named.
    /// Throws `FileError` when the root or an intermediate cannot be had or is not a tree
    /// (`.missing`, `.notATree`, `.spanMismatch`, …), `TreeTooLarge` as soon as there are more
    /// than `chunksMax`, and the source's own errors as they are.
    public static func collect(
        root: ChunkAddress, source: some ChunkSource, including: TreeChunks = .data, chunksMax: Int
    ) async throws -> [ChunkAddress] {
        let reader = try await FileReader.open(root: root, source: source)
        var seen = Set<ChunkAddress>()
        var addresses: [ChunkAddress] = []
        try await reader.walk(includeParity: including == .dataAndParity) { address, _ in
            guard seen.insert(address).inserted else { return }
            // Stop reading intermediates once the answer is known to be "too large".
            guard addresses.count < chunksMax else { throw TreeTooLarge(root: root, chunksMax: chunksMax) }
            addresses.append(address)
        }
        return addresses
    }
}
