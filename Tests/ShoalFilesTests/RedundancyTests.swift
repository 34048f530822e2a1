import ShoalCore
import ShoalTestSupport
import Testing

@testable import ShoalFiles

@Suite struct RedundancyTests {
    static let levels: [RedundancyLevel] = [.medium, .strong, .insane, .paranoid]

    /// The intermediates of a split file, parsed, root first.
    static func intermediates(_ file: SplitFile) throws -> [TreeNode] {
        let byAddress = Dictionary(file.chunks.map { ($0.address, $0) }, uniquingKeysWith: { a, _ in a })
        guard let root = byAddress[file.root], root.span & TreeShape.spanBytesMask > 4096 else { return [] }
        var out = [try TreeNode(root, level: nil)]
        var i = 0
        while i < out.count {
            let node = out[i]
            for index in 0..<node.dataCount where node.childSpan(index) > 4096 {
                out.append(try TreeNode(try #require(byAddress[node.references[index]]), level: node.level))
            }
            i += 1
        }
        return out
    }

    @Test("a level's parity count is derivable from its reference count", arguments: RedundancyLevel.allCases)
    func parityCounts(level: RedundancyLevel) {
        #expect(level.parityCount(dataCount: level.dataShards) == level.parityShards)
        for n in 1...level.dataShards {
            let p = level.parityCount(dataCount: n)
            #expect(level == .none ? p == 0 : p >= 1)
            #expect(n + p <= 128)
            #expect(level.dataCount(referenceCount: n + p) == n)
        }
        #expect(RedundancyLevel(name: "\(level)") == level)
        #expect(RedundancyLevel(name: "\(level.rawValue)") == level)
    }

    @Test("names and numbers of levels", arguments: ["", "5", "max", "-1", "none1"])
    func badNames(name: String) {
        #expect(RedundancyLevel(name: name) == nil)
    }

    @Test("with parity, files split and read back; every intermediate carries the level and its parity", arguments: levels)
    func roundTrip(level: RedundancyLevel) async throws {
        let k = level.dataShards
        for size in [1, 4096, 4097, k * 4096, k * 4096 + 1, 3 * k * 4096 + 5] {
            let bytes = seededBytes(size, seed: UInt64(size))
            let file = try split(bytes, redundancy: level)
            let reader = try await FileReader.open(root: file.root, source: file.source)
            #expect(try await read(reader) == bytes, "\(level) \(size)")
            #expect(reader.redundancy == (size > 4096 ? level : .none))
            for node in try Self.intermediates(file) {
                #expect(node.level == level)
                #expect(node.parityCount == level.parityCount(dataCount: node.dataCount))
            }
            var walked = Set<ChunkAddress>()
            try await reader.walk { a, _ in walked.insert(a) }
            #expect(walked == Set(file.chunks.map(\.address)))
        }
    }

    @Test("a paranoid file three levels deep reads back")
    func paranoidThreeLevels() async throws {
        let bytes = seededBytes(37 * 37 * 4096 + 1, seed: 12)
        let file = try split(bytes, redundancy: .paranoid)
        #expect(try Self.intermediates(file).count == 37 + 2)
        let reader = try await FileReader.open(root: file.root, source: file.source)
        #expect(try await read(reader) == bytes)
    }

    @Test("lose up to the parity count of data children of every intermediate: the bytes come back", arguments: levels)
    func dropUpToParity(level: RedundancyLevel) async throws {
        let bytes = seededBytes(2 * level.dataShards * 4096 + 7 * 4096 + 3, seed: 21)
        let file = try split(bytes, redundancy: level)
        var source = file.source
        var rng = SplitMix64(seed: UInt64(level.rawValue))
        var dropped = 0
        for node in try Self.intermediates(file) {
            let lose = Array((0..<node.dataCount).shuffled(using: &rng).prefix(node.parityCount))
            for index in lose { source.chunks[node.references[index]] = nil }
            dropped += lose.count
        }
        #expect(dropped > 0)
        let reader = try await FileReader.open(root: file.root, source: source)
        #expect(try await read(reader, prefetch: 16) == bytes)
        var walked = 0
        try await reader.walk { _, _ in walked += 1 }
        #expect(walked == file.chunks.count)
    }

    @Test("5% of a strong file's chunks lost at random, the root kept: the bytes come back")
    func fivePercentLost() async throws {
        let bytes = seededBytes(3 * 107 * 4096 + 12_345, seed: 41)
        let file = try split(bytes, redundancy: .strong)
        var source = file.source
        var rng = SplitMix64(seed: 42)
        var lost = 0
        for chunk in file.chunks where chunk.address != file.root && rng.next() % 100 < 5 {
            source.chunks[chunk.address] = nil
            lost += 1
        }
        #expect(lost > file.chunks.count / 40)
        let reader = try await FileReader.open(root: file.root, source: source)
        #expect(try await read(reader) == bytes)
    }

    @Test("a child that fails its hash is rebuilt too")
    func corruptChildRebuilt() async throws {
        let bytes = seededBytes(5 * 4096, seed: 22)
        let file = try split(bytes, redundancy: .medium)
        let node = try #require(try Self.intermediates(file).first)
        var source = file.source
        source.chunks[node.references[1]] = source.chunks[node.references[0]]
        let reader = try await FileReader.open(root: file.root, source: source)
        #expect(try await read(reader) == bytes)
    }

    @Test("lose one more than the parity count of an intermediate's children: the first lost data child is missing", arguments: levels)
    func dropTooMany(level: RedundancyLevel) async throws {
        let bytes = seededBytes(level.dataShards * 4096 + 4096 * 20, seed: 23)
        let file = try split(bytes, redundancy: level)
        let node = try #require(try Self.intermediates(file).dropFirst().first)
        var source = file.source
        // The last references: all the parity, and data children from the end.
        let lose = Array((0..<node.references.count).suffix(node.parityCount + 1))
        for index in lose { source.chunks[node.references[index]] = nil }
        let reader = try await FileReader.open(root: file.root, source: source)
        let failure = await error { _ = try await read(reader) }
        #expect(failure as? FileError == .missing(node.references[lose[0]]))
        #expect(lose[0] < node.dataCount)
    }

    @Test("a parity that does not match the data: the rebuilt child is a parity mismatch")
    func lyingParity() async throws {
        let l1 = try leaf(seededBytes(4096, seed: 31)), l2 = try leaf(seededBytes(4096, seed: 32))
        let honest = try split(l1.payload + l2.payload, redundancy: .medium)
        #expect(honest.chunks.count == 4)  // two leaves, one parity, the root
        let bogus = try Chunk(span: 12345, payload: seededBytes(4096, seed: 33))
        let root = try intermediate(bytes: 8192, level: 1, references: [l1.address, l2.address, bogus.address])
        let reader = try await FileReader.open(root: root.address, source: MemorySource([root, l1, bogus]))
        let failure = await error { _ = try await read(reader) }
        #expect(failure as? FileError == .parityMismatch(l2.address))
        // The same tree with its real parity rebuilds the lost leaf.
        let good = try await FileReader.open(root: honest.root, source: MemorySource(honest.chunks.filter { $0 != l2 }))
        #expect(try await read(good) == l1.payload + l2.payload)
    }

    @Test("the splitter's memory with parity: the children of one partial intermediate per level")
    func splitterMemory() throws {
        var splitter = FileSplitter(redundancy: .medium)
        let piece = seededBytes(1 << 20, seed: 5)
        let bound = 4096 + 3 * 118 * (40 + 4104)
        var largest = 0
        for _ in 0..<24 {
            _ = try splitter.append(piece)
            largest = max(largest, splitter.bufferedBytes)
        }
        #expect(largest <= bound)
    }
}
