import ShoalCore
import ShoalTestSupport
import Testing

@testable import ShoalFiles

@Suite struct RangeTests {
    static let size = 2 * 128 * 4096 + 3 * 4096 + 100
    static let bytes = seededBytes(size, seed: 11)
    static let file = try! split(bytes)

    /// Ranges that start, end or straddle each kind of boundary: leaf, intermediate, file.
    static let boundaryRanges: [Range<Int>] = {
        let edges = [0, 1, 4095, 4096, 4097, 8192, 128 * 4096 - 1, 128 * 4096, 128 * 4096 + 1,
                     2 * 128 * 4096, size - 4096, size - 100, size - 1, size]
        var out = [Range<Int>]()
        for a in edges {
            for length in [0, 1, 2, 4095, 4096, 4097, 128 * 4096 + 1] where a + length <= size {
                out.append(a..<(a + length))
                if a >= length { out.append((a - length)..<a) }
            }
        }
        return out
    }()

    @Test("every range around a boundary reads the right bytes")
    func boundaries() async throws {
        let reader = try await FileReader.open(root: Self.file.root, source: Self.file.source)
        for r in Self.boundaryRanges {
            let got = try await read(reader, UInt64(r.lowerBound)..<UInt64(r.upperBound))
            #expect(got == Array(Self.bytes[r]), "range \(r)")
        }
    }

    @Test("random ranges read the right bytes", arguments: [1, 2, 3])
    func random(seed: UInt64) async throws {
        let reader = try await FileReader.open(root: Self.file.root, source: Self.file.source)
        var rng = SplitMix64(seed: seed)
        for _ in 0..<40 {
            let a = Int(rng.next() % UInt64(Self.size))
            let b = a + Int(rng.next() % UInt64(Self.size - a + 1))
            let prefetch = 1 + Int(rng.next() % 20)
            #expect(try await read(reader, UInt64(a)..<UInt64(b), prefetch: prefetch) == Array(Self.bytes[a..<b]), "range \(a)..<\(b)")
        }
    }

    @Test("a range is clamped to the file's end; one that starts past it is not satisfiable")
    func pastTheEnd() async throws {
        let reader = try await FileReader.open(root: Self.file.root, source: Self.file.source)
        let end = UInt64(Self.size)
        #expect(try await read(reader, end - 10..<end + 1000) == Array(Self.bytes[(Self.size - 10)...]))
        #expect(try await read(reader, end..<end).isEmpty)
        let failure = await error { _ = try await read(reader, end..<end + 1) }
        #expect(failure as? FileError == .rangeNotSatisfiable(end..<end + 1, size: end))
        let small = try split(seededBytes(10, seed: 1))
        let leafReader = try await FileReader.open(root: small.root, source: small.source)
        #expect(try await read(leafReader, 3..<7) == Array(seededBytes(10, seed: 1)[3..<7]))
        let past = await error { _ = try await read(leafReader, 11..<12) }
        #expect(past as? FileError == .rangeNotSatisfiable(11..<12, size: 10))
    }

    @Test("a range reads only the intermediates on its path")
    func seekReadsThePath() async throws {
        let source = CountingSource(Self.file.source)
        let reader = try await FileReader.open(root: Self.file.root, source: source)
        let a = UInt64(128 * 4096 + 5 * 4096 + 1)
        #expect(try await read(reader, a..<a + 10) == Array(Self.bytes[Int(a)..<Int(a) + 10]))
        // The root, the second intermediate, one leaf.
        #expect(await source.requests == 3)
    }

    @Test("a stream dropped after its first piece stops asking the source")
    func droppedEarly() async throws {
        let source = CountingSource(Self.file.source)
        let reader = try await FileReader.open(root: Self.file.root, source: source)
        var first = [UInt8]()
        for try await piece in reader.bytes(prefetch: 4) {
            first = piece
            break
        }
        #expect(first == Array(Self.bytes[0..<first.count]))
        let asked = await source.requests
        try await Task.sleep(for: .milliseconds(50))
        // At most the window's fetches, already started, still reach the source; the file has 520 leaves.
        #expect(await source.requests <= asked + 4)
        #expect(asked < 40)
    }

    @Test("the empty file has no byte 0")
    func emptyFileRange() async throws {
        let file = try split([])
        let reader = try await FileReader.open(root: file.root, source: file.source)
        let failure = await error { _ = try await read(reader, 0..<1) }
        #expect(failure as? FileError == .rangeNotSatisfiable(0..<1, size: 0))
    }
}
