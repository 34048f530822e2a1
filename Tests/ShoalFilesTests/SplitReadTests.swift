import ShoalCore
import ShoalTestSupport
import Testing

@testable import ShoalFiles

@Suite struct SplitReadTests {
    static let sizes = [0, 1, 4095, 4096, 4097, 3 * 4096 + 17, 128 * 4096, 128 * 4096 + 1, 129 * 4096 + 5000]

    @Test("a file splits and reads back byte for byte", arguments: sizes)
    func roundTrip(size: Int) async throws {
        let bytes = seededBytes(size, seed: UInt64(size) &+ 1)
        let file = try split(bytes)
        #expect(file.size == UInt64(size))
        let reader = try await FileReader.open(root: file.root, source: file.source)
        #expect(reader.size == UInt64(size))
        #expect(try await read(reader) == bytes)
    }

    @Test("a file of 128 × 128 × 4096 + 1 bytes (three levels) reads back")
    func threeLevels() async throws {
        let size = 128 * 128 * 4096 + 1
        let bytes = seededBytes(size, seed: 9)
        let file = try split(bytes)
        // 16,385 leaves; 128 intermediates over the first 16,384 and one over those; the root over that
        // and the last leaf, which goes up unwrapped.
        let expected: Int = 16_385 + 128 + 1 + 1
        #expect(file.chunks.count == expected)
        let reader = try await FileReader.open(root: file.root, source: file.source)
        #expect(try await read(reader) == bytes)
        #expect(try await read(reader, UInt64(size - 5000)..<UInt64(size)) == Array(bytes[(size - 5000)...]))
    }

    @Test("the chunks of a tree: leaves, then one intermediate per 128 references")
    func chunkCounts() throws {
        #expect(try split(goldenBytes(0)).chunks.count == 1)
        #expect(try split(goldenBytes(4096)).chunks.count == 1)
        #expect(try split(goldenBytes(4097)).chunks.count == 3)
        #expect(try split(goldenBytes(128 * 4096)).chunks.count == 129)
        #expect(try split(goldenBytes(128 * 4096 + 1)).chunks.count == 131)
        let file = try split(goldenBytes(4097))
        let root = try #require(file.chunks.last)
        #expect(root.address == file.root)
        #expect(root.span == 4097)
        #expect(root.payload.count == 64)
    }

    @Test("the empty file is the empty-file chunk")
    func emptyFile() async throws {
        let file = try split([])
        #expect(file.chunks == [Chunk.emptyFile])
        #expect(Chunk.emptyFile.span == 0 && Chunk.emptyFile.payload == [0])
        let reader = try await FileReader.open(root: file.root, source: file.source)
        #expect(reader.size == 0)
        #expect(try await read(reader).isEmpty)
        #expect(try await read(reader, 0..<0).isEmpty)
    }

    @Test("bytes fed in odd pieces give the same root", arguments: [[1], [7, 4095], [4097], [65_537, 3], [1, 2, 3, 5, 8, 13, 4096, 10_000]])
    func pieces(sizes: [Int]) throws {
        let bytes = seededBytes(130 * 4096 + 77, seed: 3)
        #expect(try split(bytes, pieces: sizes).root == split(bytes).root)
    }

    @Test("the splitter holds one partial leaf and one partial intermediate per level, whatever the file's size")
    func splitterMemory() throws {
        var splitter = FileSplitter()
        let piece = seededBytes(1 << 20, seed: 5)
        // A leaf's bytes and, per level (3 for up to 2 GiB), 127 references with their spans.
        let bound = 4096 + 3 * 127 * 40
        var largest = 0
        for _ in 0..<48 {
            _ = try splitter.append(piece)
            largest = max(largest, splitter.bufferedBytes)
        }
        #expect(largest <= bound)
        #expect(largest > 0)
        _ = try splitter.finish()
        #expect(splitter.bufferedBytes == 0 && splitter.bytesIn == 0)
    }

    @Test("a walk names every chunk the splitter made, once, the root first")
    func walk() async throws {
        let file = try split(seededBytes(128 * 4096 * 2 + 4096 * 3 + 9, seed: 4))
        let reader = try await FileReader.open(root: file.root, source: file.source)
        var seen = [(ChunkAddress, ChunkKind)]()
        try await reader.walk { seen.append(($0, $1)) }
        #expect(seen.first?.0 == file.root)
        #expect(seen.count == file.chunks.count)
        #expect(Set(seen.map(\.0)) == Set(file.chunks.map(\.address)))
        #expect(seen.filter { $0.1 == .leaf }.count == file.chunks.filter { $0.span <= 4096 }.count)
        #expect(seen.filter { $0.1 == .intermediate }.count == 3)
    }

    @Test("reading asks for at most `prefetch` leaves at once and, pulled slowly, not much beyond them")
    func boundedPrefetch() async throws {
        let file = try split(seededBytes(600 * 4096, seed: 6))
        let source = CountingSource(file.source)
        let reader = try await FileReader.open(root: file.root, source: source)
        var pieces = 0
        var requestsAfterFirst = 0
        for try await _ in reader.bytes(prefetch: 8) {
            pieces += 1
            if pieces == 1 { requestsAfterFirst = await source.requests }
        }
        // One intermediate on the path may be read while the window's leaves are in flight.
        #expect(await source.inFlightMax <= 9)
        // The first 64 KiB (16 leaves) and a window of 8 ahead: far from the file's 600 leaves.
        let bound: Int = 1 + 2 + 16 + 8
        #expect(requestsAfterFirst <= bound)
        let expected: Int = (600 * 4096 + FileReader.pieceBytesMax - 1) / FileReader.pieceBytesMax
        #expect(pieces == expected)
    }
}
