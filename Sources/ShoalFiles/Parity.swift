import ShoalCore
import ShoalErasure

/// Parity chunks: Reed–Solomon shards over an intermediate's data children, each child taken as
/// its serialized form (span ‖ payload) zero-padded to 4104 bytes. A parity shard's first 8
/// bytes are read as its span (little-endian) and its last 4096 as its payload, so it is an
/// ordinary chunk with an ordinary address.
enum Parity {
    static let shardBytes = TreeShape.shardBytes

    /// `count` parity chunks over `children` (none when `count` is 0).
    static func chunks(over children: [Chunk], count: Int) throws(FileError) -> [Chunk] {
        guard count > 0 else { return [] }
        let shards: [[UInt8]]
        do {
            let codec = try ReedSolomon(dataShards: children.count, parityShards: count)
            shards = try codec.encode(children.map(shard), shardSize: shardBytes)
        } catch {
            // 1…128 data shards of 4104 bytes and 1…89 parity shards: within what the codec takes.
            preconditionFailure("Reed–Solomon encode of \(children.count)+\(count) shards failed: \(error)")
        }
        return shards.map { shard in
            // 4096 payload bytes: a valid chunk.
            try! Chunk(span: span(of: shard), payload: Array(shard[8...]))
        }
    }

    /// A chunk's serialized form zero-padded to a shard.
    static func shard(_ chunk: Chunk) -> [UInt8] {
        var bytes = chunk.serialized
        bytes.append(contentsOf: repeatElement(0, count: shardBytes - bytes.count))
        return bytes
    }

    /// The first 8 bytes of a shard as a little-endian span.
    static func span(of shard: [UInt8]) -> UInt64 {
        (0..<8).reduce(0) { $0 | UInt64(shard[$1]) << (8 * UInt64($1)) }
    }

    /// The k data shards of an intermediate from any k of its data and parity shards (nil =
    /// lost); nil when fewer than k are present.
    static func reconstruct(_ shards: [[UInt8]?], dataCount: Int) -> [[UInt8]]? {
        do {
            let codec = try ReedSolomon(dataShards: dataCount, parityShards: shards.count - dataCount)
            return try codec.reconstructData(shards, shardSize: shardBytes)
        } catch {
            return nil
        }
    }
}

/// Rebuilds lost data children from their siblings and parity. The rebuilt data of the last
/// few intermediates is kept, so that lost siblings (often lost together) are rebuilt once.
actor Rebuilds {
    /// Intermediates whose rebuilt children are kept: ≤ 4 × 128 × 4104 bytes.
    static let nodesKept = 4

    private let source: any ChunkSource
    private var recent: [(node: ChunkAddress, task: Task<[[UInt8]]?, Error>)] = []

    init(source: some ChunkSource) { self.source = source }

    /// The data child at `index` of `node`, rebuilt; `.missing` when fewer than its data count
    /// of its children can be had, `.parityMismatch` when the rebuilt bytes do not hash to it.
    func child(of node: TreeNode, index: Int) async throws -> Chunk {
        let reference = node.references[index]
        guard node.parityCount > 0 else { throw FileError.missing(reference) }
        let task: Task<[[UInt8]]?, Error>
        if let kept = recent.first(where: { $0.node == node.address }) {
            task = kept.task
        } else {
            let source = self.source
            task = Task { try await Self.rebuild(node, source: source) }
            recent.append((node.address, task))
            if recent.count > Self.nodesKept { recent.removeFirst() }
        }
        guard let shards = try await task.value else { throw FileError.missing(reference) }
        let shard = shards[index]
        let count = TreeShape.payloadCount(span: node.childSpan(index), level: node.level)
        guard let chunk = try? Chunk(span: Parity.span(of: shard), payload: Array(shard[8..<(8 + count)])),
              chunk.address == reference else {
            throw FileError.parityMismatch(reference)
        }
        return chunk
    }

    /// Fetches the children of `node` (data and parity) until as many as its data count are
    /// in hand, and rebuilds the data; nil when too few can be had.
    private static func rebuild(_ node: TreeNode, source: any ChunkSource) async throws -> [[UInt8]]? {
        var shards = [[UInt8]?](repeating: nil, count: node.references.count)
        var present = 0
        try await withThrowingTaskGroup(of: (Int, Chunk?).self) { group in
            for (i, reference) in node.references.enumerated() {
                group.addTask { (i, try await source.verifiedChunk(reference)) }
            }
            for try await (i, chunk) in group {
                guard let chunk else { continue }
                shards[i] = Parity.shard(chunk)
                present += 1
                if present == node.dataCount {
                    group.cancelAll()
                    break
                }
            }
        }
        guard present >= node.dataCount else { return nil }
        return Parity.reconstruct(shards, dataCount: node.dataCount)
    }
}
