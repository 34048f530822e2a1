import LMDB
import ShoalCore
@testable import ShoalStore
import Testing

struct CodecTests {
    @Test func recordsRoundTrip() throws {
        func roundTrip<V: LMDBCodable & Equatable>(_ v: V) throws -> V {
            try v.lmdbBytes.withUnsafeBytes { try V(decodingLMDB: $0) }
        }
        let a = Address32(w0: 1, w1: 2, w2: 3, w3: 4)
        let chunk = ChunkRecord(span: 1 << 40, slot: 77, binID: 5, length: 4096, bin: 31)
        #expect(try roundTrip(chunk) == chunk)
        #expect(chunk.lmdbBytes.count == ChunkRecord.encodedSize)
        let interval = IntervalRecord(epoch: 9, set: IntervalSet([1...5, 9...9]))
        #expect(try roundTrip(interval) == interval)
        let fetch = FetchRecord(attempts: 3, nextAttemptMs: 1000, group: a, hints: [a, a])
        #expect(try roundTrip(fetch) == fetch)
        #expect(try roundTrip(FetchRecord()) == FetchRecord())
        let peer = PeerRecord(addresses: ["127.0.0.1:1", "[::1]:2"], lastSeenMs: 5, score: -9, banUntilMs: 1)
        #expect(try roundTrip(peer) == peer)
        let download = DownloadRecord(policy: .onRead, state: .paused, chunksDone: 1, chunksTotal: 2, createdMs: 3)
        #expect(try roundTrip(download) == download)
        let journal = JournalEntry(timeMs: 5, text: "{\"depth\":3}")
        #expect(try roundTrip(journal) == journal)
        #expect(try roundTrip(PullKey(bin: 3, binID: 258)) == PullKey(bin: 3, binID: 258))
        #expect(PullKey(bin: 3, binID: 258).lmdbBytes == [3, 0, 0, 0, 0, 0, 0, 1, 2])
    }

    /// Every prefix of a valid record is damaged input: decoding throws, never traps.
    @Test func truncatedRecordsThrow() {
        let a = Address32(w0: 1, w1: 2, w2: 3, w3: 4)
        let samples: [(String, [UInt8], (UnsafeRawBufferPointer) throws -> Void)] = [
            ("chunk", ChunkRecord(span: 1, slot: 2, binID: 3, length: 4, bin: 5).lmdbBytes, { _ = try ChunkRecord(decodingLMDB: $0) }),
            ("interval", IntervalRecord(epoch: 1, set: IntervalSet([1...2])).lmdbBytes, { _ = try IntervalRecord(decodingLMDB: $0) }),
            ("fetch", FetchRecord(hints: [a]).lmdbBytes, { _ = try FetchRecord(decodingLMDB: $0) }),
            ("peer", PeerRecord(addresses: ["x:1"]).lmdbBytes, { _ = try PeerRecord(decodingLMDB: $0) }),
            ("download", DownloadRecord(policy: .eagerPin, state: .done, chunksDone: 1, chunksTotal: 1, createdMs: 1).lmdbBytes,
             { _ = try DownloadRecord(decodingLMDB: $0) }),
        ]
        for (name, bytes, decode) in samples {
            for n in 0..<bytes.count {
                #expect(throws: LMDBDecodingError.self, "\(name) truncated to \(n)") {
                    try Array(bytes.prefix(n)).withUnsafeBytes { try decode($0) }
                }
            }
            #expect(throws: LMDBDecodingError.self, "\(name) with a trailing byte") {
                try (bytes + [0]).withUnsafeBytes { try decode($0) }
            }
        }
    }

    @Test(arguments: [
        [UInt8](repeating: 0, count: 27),                                 // length 0
        ChunkRecord(span: 1, slot: 1, binID: 1, length: 4097, bin: 0).lmdbBytes,  // too long
        ChunkRecord(span: 1, slot: 1, binID: 1, length: 1, bin: 32).lmdbBytes,    // no such bin
    ])
    func implausibleChunkRecordsAreRejected(bytes: [UInt8]) {
        #expect(throws: LMDBDecodingError.self) { try bytes.withUnsafeBytes { _ = try ChunkRecord(decodingLMDB: $0) } }
    }

    @Test func invertedIntervalRangesAreRejected() {
        var w: [UInt8] = LEUInt64(1).lmdbBytes + [1, 0, 0, 0]
        w += LEUInt64(9).lmdbBytes + LEUInt64(3).lmdbBytes
        #expect(throws: LMDBDecodingError.self) { try w.withUnsafeBytes { _ = try IntervalRecord(decodingLMDB: $0) } }
    }
}
