import ShoalCore
import Testing

@testable import ShoalFiles

/// A source that is a dictionary: what the node's store is to a reader, minus the disk.
/// Its entries may lie (a chunk under an address it does not hash to), as a bad peer's would.
struct MemorySource: ChunkSource {
    var chunks: [ChunkAddress: Chunk] = [:]

    init(_ chunks: [Chunk] = []) {
        for chunk in chunks { self.chunks[chunk.address] = chunk }
    }

    func chunk(_ address: ChunkAddress) async throws -> Chunk? { chunks[address] }

    mutating func add(_ chunk: Chunk) { chunks[chunk.address] = chunk }
}

/// A source that counts requests and how many are in flight at once.
actor CountingSource: ChunkSource {
    let inner: MemorySource
    private(set) var requests = 0
    private(set) var inFlight = 0
    private(set) var inFlightMax = 0

    init(_ inner: MemorySource) { self.inner = inner }

    func chunk(_ address: ChunkAddress) async throws -> Chunk? {
        requests += 1
        inFlight += 1
        inFlightMax = max(inFlightMax, inFlight)
        // Let the other requests of the window pile up.
        await Task.yield()
        inFlight -= 1
        return try await inner.chunk(address)
    }
}

/// A source whose every request fails: a real error, not an absent chunk.
struct FailingSource: ChunkSource {
    struct Broken: Error, Equatable {}
    func chunk(_ address: ChunkAddress) async throws -> Chunk? { throw Broken() }
}

/// A split file: its root, size, and every chunk the splitter made.
struct SplitFile {
    let root: ChunkAddress
    let size: UInt64
    let chunks: [Chunk]
    var source: MemorySource { MemorySource(chunks) }
}

/// Splits `bytes`, fed in pieces of `pieces` bytes in turn (all at once when empty).
func split(_ bytes: [UInt8], redundancy: RedundancyLevel = .none, pieces: [Int] = []) throws -> SplitFile {
    var splitter = FileSplitter(redundancy: redundancy)
    var chunks = [Chunk]()
    if pieces.isEmpty {
        chunks += try splitter.append(bytes)
    } else {
        var offset = 0, i = 0
        while offset < bytes.count {
            let n = min(pieces[i % pieces.count], bytes.count - offset)
            chunks += try bytes[offset..<(offset + n)].withUnsafeBytes { try splitter.append($0) }
            offset += n
            i += 1
        }
    }
    #expect(splitter.bytesIn == UInt64(bytes.count))
    let (root, size, last) = try splitter.finish()
    return SplitFile(root: root, size: size, chunks: chunks + last)
}

/// All the bytes of `range` through a reader, checking the piece bound on the way.
func read(_ reader: FileReader, _ range: Range<UInt64>? = nil, prefetch: Int = 64) async throws -> [UInt8] {
    var out = [UInt8]()
    for try await piece in reader.bytes(range, prefetch: prefetch) {
        #expect(!piece.isEmpty && piece.count <= FileReader.pieceBytesMax)
        out += piece
    }
    return out
}

/// The golden-vector content: byte i is i mod 251.
func goldenBytes(_ count: Int) -> [UInt8] {
    (0..<count).map { UInt8($0 % 251) }
}

/// An intermediate made by hand (for bad trees): `bytes` below, level byte on top.
func intermediate(bytes: UInt64, level: UInt8 = 0, references: [ChunkAddress]) throws -> Chunk {
    var payload = [UInt8]()
    for r in references { r.append(to: &payload) }
    return try Chunk(span: bytes | UInt64(level) << 56, payload: payload)
}

func leaf(_ bytes: [UInt8]) throws -> Chunk { try Chunk(payload: bytes) }

/// The error a throwing async expression ends with.
func error(of body: () async throws -> Void) async -> Error? {
    do { try await body() } catch { return error }
    return nil
}

let kib4 = 4096
