import ShoalCore
import ShoalTestSupport
import Testing

@testable import ShoalFiles

/// `FileTreeAddresses.collect`: the list a whole-file download fetches names every chunk of the
/// tree once, parents first, and a tree that cannot be read is an error, not a short list.
struct TreeAddressesTests {
    /// The parity chunks of a split file, as the reader's walk names them.
    static func parity(of file: SplitFile) async throws -> Set<ChunkAddress> {
        var parity = Set<ChunkAddress>()
        try await FileReader.open(root: file.root, source: file.source).walk { a, kind in
            if kind == .parity { parity.insert(a) }
        }
        return parity
    }

    @Test("a file of three levels names its root first and every chunk the splitter made, once")
    func plainTree() async throws {
        // 300 leaves: a root over three intermediates.
        let file = try split(seededBytes(300 * 4096 + 17, seed: 11))
        let all = try await FileTreeAddresses.collect(root: file.root, source: file.source, chunksMax: 1000)
        #expect(all.first == file.root)
        #expect(all.count == file.chunks.count)
        #expect(Set(all) == Set(file.chunks.map(\.address)))
        // Without parity there is none to add.
        #expect(try await FileTreeAddresses.collect(root: file.root, source: file.source, including: .dataAndParity, chunksMax: 1000) == all)
    }

    @Test("with parity, .data leaves the parity chunks out and .dataAndParity names them too",
          arguments: [RedundancyLevel.medium, .paranoid])
    func parityTree(level: RedundancyLevel) async throws {
        let file = try split(seededBytes(200 * 4096, seed: 12), redundancy: level)
        let parity = try await Self.parity(of: file)
        #expect(!parity.isEmpty)
        let data = try await FileTreeAddresses.collect(root: file.root, source: file.source, chunksMax: 10_000)
        let whole = try await FileTreeAddresses.collect(root: file.root, source: file.source, including: .dataAndParity, chunksMax: 10_000)
        #expect(Set(whole) == Set(file.chunks.map(\.address)) && whole.count == file.chunks.count)
        #expect(Set(data) == Set(whole).subtracting(parity) && data.count == whole.count - parity.count)
        #expect(data.first == file.root && whole.first == file.root)
    }

    @Test("a lost intermediate is rebuilt from parity and named; without parity it is .missing")
    func lostIntermediate() async throws {
        for level in [RedundancyLevel.none, .medium] {
            let file = try split(seededBytes(300 * 4096, seed: 13), redundancy: level)
            let rootChunk = try #require(file.chunks.first { $0.address == file.root })
            let second = try TreeNode(rootChunk, level: nil).references[1]
            var source = file.source
            source.chunks[second] = nil
            if level == .none {
                await #expect(throws: FileError.missing(second)) {
                    try await FileTreeAddresses.collect(root: file.root, source: source, chunksMax: 1000)
                }
            } else {
                let all = try await FileTreeAddresses.collect(root: file.root, source: source, chunksMax: 1000)
                #expect(all.contains(second))
                #expect(all == (try await FileTreeAddresses.collect(root: file.root, source: file.source, chunksMax: 1000)))
            }
        }
    }

    @Test("a root that is absent is .missing; one that is not a tree is .notATree")
    func badRoots() async throws {
        let absent = ChunkAddress(hex: String(repeating: "ab", count: 32))!
        await #expect(throws: FileError.missing(absent)) {
            try await FileTreeAddresses.collect(root: absent, source: MemorySource(), chunksMax: 10)
        }
        // Span 8192 but 100 payload bytes: no number of references.
        let liar = try Chunk(span: 8192, payload: [UInt8](repeating: 1, count: 100))
        await #expect {
            try await FileTreeAddresses.collect(root: liar.address, source: MemorySource([liar]), chunksMax: 10)
        } throws: { error in
            if case .notATree(let a, _)? = error as? FileError { return a == liar.address }
            return false
        }
    }

    @Test("a file of repeated blocks names each distinct leaf once")
    func repeatedBlocks() async throws {
        let file = try split([UInt8](repeating: 0, count: 10 * 4096))
        let all = try await FileTreeAddresses.collect(root: file.root, source: file.source, chunksMax: 10)
        #expect(all.count == 2)  // the root and the one leaf of zeros
        #expect(all.first == file.root)
    }

    @Test("a one-chunk file is its root alone")
    func oneChunk() async throws {
        let file = try split(seededBytes(1000, seed: 14))
        #expect(try await FileTreeAddresses.collect(root: file.root, source: file.source, chunksMax: 1) == [file.root])
    }

    @Test("more distinct chunks than chunksMax is TreeTooLarge")
    func tooLarge() async throws {
        let file = try split(seededBytes(300 * 4096, seed: 15))
        await #expect(throws: TreeTooLarge(root: file.root, chunksMax: 100)) {
            try await FileTreeAddresses.collect(root: file.root, source: file.source, chunksMax: 100)
        }
        let exact = file.chunks.count
        #expect(try await FileTreeAddresses.collect(root: file.root, source: file.source, chunksMax: exact).count == exact)
    }
}
