import ShoalCore

/// What `FileReader.rebuildMissing` did.
public struct RepairOutcome: Sendable, Equatable {
    /// Chunks rebuilt and handed to `store` (data children from their siblings and parity,
    /// parity chunks from the data children).
    public var rebuilt: Int = 0
    /// Chunks missing that could not be rebuilt (too few siblings and parities, or a tree
    /// without parity), in walk order; nothing below a lost intermediate is seen.
    public var lost: [ChunkAddress] = []

    public init() {}
}

extension FileReader {
    /// Rebuilds every chunk of the tree that `present` says is missing and that the tree's
    /// parity can give back, and hands them to `store`, intermediate by intermediate (at most
    /// 128 chunks at a time). A data child comes back from any `k` of its intermediate's
    /// children; a lost parity chunk is encoded again from the data children. Every rebuilt
    /// chunk hashes to its reference (else `.parityMismatch` is thrown).
    ///
    /// The root must be readable (`open` read it). Intermediates are read through the source,
    /// or rebuilt, as `walk` does.
    public func rebuildMissing(
        present: ([ChunkAddress]) async throws -> [Bool],
        store: ([Chunk]) async throws -> Void
    ) async throws -> RepairOutcome {
        var outcome = RepairOutcome()
        guard case .tree(let node) = shape else { return outcome }
        try await rebuildMissing(node, present: present, store: store, &outcome)
        return outcome
    }

    private func rebuildMissing(
        _ node: TreeNode,
        present: ([ChunkAddress]) async throws -> [Bool],
        store: ([Chunk]) async throws -> Void,
        _ outcome: inout RepairOutcome
    ) async throws {
        var missingData: [Int] = []
        var missingParity: [Int] = []
        // One question per intermediate (its ≤ 128 references), not one per chunk.
        for (index, here) in try await present(node.references).enumerated() where !here {
            if index < node.dataCount { missingData.append(index) } else { missingParity.append(index) }
        }
        var rebuilt: [Chunk] = []
        var lostHere = Set<ChunkAddress>()
        if node.parityCount == 0 {
            for index in missingData + missingParity { lostHere.insert(node.references[index]) }
        } else {
            for index in missingData {
                do {
                    rebuilt.append(try await fetcher.child(of: node, index: index))
                } catch FileError.missing {
                    lostHere.insert(node.references[index])
                }
            }
            if !missingParity.isEmpty {
                // Parity is encoded over every data child, as the splitter made it.
                var children: [Chunk] = []
                children.reserveCapacity(node.dataCount)
                for index in 0..<node.dataCount {
                    guard let chunk = try? await fetcher.child(of: node, index: index) else { break }
                    children.append(chunk)
                }
                if children.count == node.dataCount {
                    let parity = try Parity.chunks(over: children, count: node.parityCount)
                    for index in missingParity {
                        let chunk = parity[index - node.dataCount]
                        guard chunk.address == node.references[index] else { throw FileError.parityMismatch(node.references[index]) }
                        rebuilt.append(chunk)
                    }
                } else {
                    for index in missingParity { lostHere.insert(node.references[index]) }
                }
            }
        }
        if !rebuilt.isEmpty {
            try await store(rebuilt)
            outcome.rebuilt += rebuilt.count
        }
        outcome.lost += node.references.filter { lostHere.contains($0) }

        for index in 0..<node.dataCount where node.childSpan(index) > UInt64(TreeShape.leafBytesMax) {
            guard !lostHere.contains(node.references[index]) else { continue }
            let child = try await fetcher.intermediate(of: node, index: index)
            try await rebuildMissing(child, present: present, store: store, &outcome)
        }
    }
}
