import ShoalCore
import ShoalTestSupport
import Testing

@testable import ShoalFiles

/// Trees a bad or broken source can hand the reader: each ends as a `FileError`, never a crash.
@Suite struct BadTreeTests {
    let l1 = try! leaf(seededBytes(4096, seed: 1))
    let l2 = try! leaf(seededBytes(4096, seed: 2))

    /// Reads the whole file and returns the error it ends with.
    func failure(root: ChunkAddress, _ chunks: [Chunk]) async -> FileError? {
        await failure(root: root, MemorySource(chunks))
    }

    func failure(root: ChunkAddress, _ source: MemorySource) async -> FileError? {
        let e = await error {
            let reader = try await FileReader.open(root: root, source: source)
            _ = try await read(reader)
        }
        #expect(e is FileError?, "\(String(describing: e))")
        return e as? FileError
    }

    @Test("a root the source does not have, or has under a wrong address, is missing")
    func missingRoot() async throws {
        let root = try intermediate(bytes: 8192, references: [l1.address, l2.address])
        #expect(await failure(root: root.address, []) == .missing(root.address))
        var lying = MemorySource([l1, l2])
        lying.chunks[root.address] = l1
        #expect(await failure(root: root.address, lying) == .missing(root.address))
    }

    @Test("a leaf the source lacks, or has wrong, is missing when there is no parity")
    func missingLeaf() async throws {
        let root = try intermediate(bytes: 8192, references: [l1.address, l2.address])
        #expect(await failure(root: root.address, [root, l1]) == .missing(l2.address))
        var lying = MemorySource([root, l1])
        lying.chunks[l2.address] = l1
        #expect(await failure(root: root.address, lying) == .missing(l2.address))
    }

    @Test("a payload that is not whole references is not a tree")
    func partialReference() async throws {
        let root = try Chunk(span: 8192, payload: l1.address.bytes + [7])
        guard case .notATree(let a, _)? = await failure(root: root.address, [root, l1]) else {
            Issue.record("expected notATree")
            return
        }
        #expect(a == root.address)
    }

    @Test("a reference count its span does not give is not a tree")
    func wrongReferenceCount() async throws {
        let three = try intermediate(bytes: 8192, references: [l1.address, l2.address, l2.address])
        let one = try intermediate(bytes: 8192, references: [l1.address])
        for root in [three, one] {
            guard case .notATree(let a, _)? = await failure(root: root.address, [root, l1, l2]) else {
                Issue.record("expected notATree")
                continue
            }
            #expect(a == root.address)
        }
    }

    @Test("a leaf whose payload is not its span, or not its share, is a span mismatch")
    func leafSpans() async throws {
        let liar = try Chunk(span: 4096, payload: seededBytes(100, seed: 3))
        let short = try leaf(seededBytes(100, seed: 4))
        for bad in [liar, short] {
            let root = try intermediate(bytes: 8192, references: [l1.address, bad.address])
            guard case .spanMismatch(let a, _)? = await failure(root: root.address, [root, l1, bad]) else {
                Issue.record("expected spanMismatch")
                continue
            }
            #expect(a == bad.address)
        }
        let root = try Chunk(span: 10, payload: seededBytes(5, seed: 5))
        guard case .spanMismatch? = await failure(root: root.address, [root]) else {
            Issue.record("expected spanMismatch for a leaf root")
            return
        }
    }

    @Test("an intermediate whose span is not its share of its parent's is a span mismatch")
    func intermediateSpans() async throws {
        let small = try intermediate(bytes: 8192, references: [l1.address, l2.address])
        let full = try split(seededBytes(128 * 4096, seed: 6))
        let fullRoot = try #require(full.chunks.last)
        let span: UInt64 = 128 * 4096 + 8192
        // Too small for the first child's share; larger than what is left for the last.
        for (children, culprit) in [([small, small], small), ([fullRoot, fullRoot], fullRoot)] {
            let root = try intermediate(bytes: span, references: children.map(\.address))
            let source = MemorySource([root, small, l1, l2] + full.chunks)
            guard case .spanMismatch(let a, _)? = await failure(root: root.address, source) else {
                Issue.record("expected spanMismatch")
                continue
            }
            #expect(a == culprit.address)
        }
    }

    @Test("a child that stands for as much as its parent (a chain, or a cycle) ends as too deep")
    func chain() async throws {
        let file = try split(seededBytes(128 * 4096 + 1, seed: 7))
        let inner = try #require(file.chunks.last)
        let root = try intermediate(bytes: inner.span, references: [inner.address, inner.address])
        #expect(await failure(root: root.address, MemorySource(file.chunks + [root])) == .tooDeep(inner.address))
    }

    @Test("a redundancy byte that is no level, or not the root's, is invalid")
    func redundancyByte() async throws {
        let seven = try intermediate(bytes: 8192, level: 7, references: [l1.address, l2.address])
        #expect(await failure(root: seven.address, [seven, l1, l2]) == .invalidRedundancy(7))
        let full = try split(seededBytes(128 * 4096, seed: 6))
        let fullRoot = try #require(full.chunks.last)
        let medium = try intermediate(bytes: 8192, level: 1, references: [l1.address, l2.address, l2.address])
        let root = try intermediate(bytes: 128 * 4096 + 8192, references: [fullRoot.address, medium.address])
        #expect(await failure(root: root.address, MemorySource(full.chunks + [root, medium, l1, l2])) == .invalidRedundancy(1))
    }

    @Test("a root of span 0 must be the empty-file chunk")
    func emptyRoots() async throws {
        for bad in [try Chunk(span: 0, payload: [1]), try Chunk(span: 0, payload: [0, 0]), try Chunk(span: 1 << 56, payload: [0])] {
            guard case .notATree(let a, _)? = await failure(root: bad.address, [bad]) else {
                Issue.record("expected notATree for \(bad.payload)")
                continue
            }
            #expect(a == bad.address)
        }
    }

    @Test("a source's own error passes through")
    func sourceError() async throws {
        let e = await error { _ = try await FileReader.open(root: l1.address, source: FailingSource()) }
        #expect(e as? FailingSource.Broken == FailingSource.Broken())
    }

    @Test("a walk past a lost intermediate goes on when told to, and stops with missing otherwise")
    func walkPastMissing() async throws {
        let file = try split(seededBytes(3 * 128 * 4096, seed: 8))
        let root = try #require(file.chunks.last)
        let reader = try await FileReader.open(root: file.root, source: file.source)
        var all = [ChunkAddress]()
        try await reader.walk { a, _ in all.append(a) }
        // The second intermediate (and so its 128 leaves) is gone.
        let second = try TreeNode(root, level: nil).references[1]
        var source = file.source
        source.chunks[second] = nil
        let partial = try await FileReader.open(root: file.root, source: source)
        var seen = [ChunkAddress](), missed = [ChunkAddress]()
        try await partial.walk(onMissing: { missed.append($0); return true }) { a, _ in seen.append(a) }
        #expect(missed == [second])
        #expect(seen.count == all.count - 129)
        let stopped = await error { try await partial.walk { _, _ in } }
        #expect(stopped as? FileError == .missing(second))
    }
}
