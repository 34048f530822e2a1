import ShoalCore
import ShoalStore

/// What `crash-writer` commits as batch `number`, derived from (seed, number) alone, so that
/// `crash-loop` can regenerate any batch the writer claimed and check it chunk by chunk
/// without the writer printing every address.
///
/// A batch holds 64…512 new chunks (one in eight with a short payload, some with a span
/// larger than the payload, as intermediate chunks have), sometimes a few chunks of the
/// previous batch again (the duplicate path), sometimes interval seals of a few peers' bins
/// (half of them conditional on chunks of the same batch),
/// fetch-set additions and a removal, and always one journal entry naming the batch: the
/// writer resumes from the largest batch number in the journal.
struct CrashPlan: Sendable {
    let seed: UInt64

    static let overlay = Address32(bytes: [UInt8](repeating: 0x5a, count: 32))!
    static let chunksMin = 64
    static let chunksMax = 512
    static let peerCount = 4
    static let journalPrefix = "crash-writer batch="

    struct Batch {
        let number: UInt64
        let batch: StoreBatch
        /// Every chunk of the batch in order, duplicates of the previous batch included.
        let addresses: [ChunkAddress]
        var seals: [IntervalSeal] { batch.seals }

        /// SHA-256 (as a chunk address is computed, over span 0 ‖ addresses) of the addresses:
        /// a check that the writer and the driver agree on the batch's contents.
        var digest: String {
            var bytes: [UInt8] = []
            bytes.reserveCapacity(32 * addresses.count)
            for address in addresses { address.append(to: &bytes) }
            return Chunk.address(span: 0, payload: bytes).hex
        }

        /// The line the writer prints once the batch has committed.
        var committedLine: String {
            "COMMITTED batch=\(number) chunks=\(addresses.count) first=\(addresses.first!.hex) "
                + "last=\(addresses.last!.hex) digest=\(digest)"
        }
    }

    /// A printed `COMMITTED` line, parsed.
    struct Claim: Equatable {
        let number: UInt64
        let chunks: Int
        let first: String
        let last: String
        let digest: String

        init?(_ line: some StringProtocol) {
            let parts = String(line).split(separator: " ")
            guard parts.first == "COMMITTED" else { return nil }
            var fields: [Substring: Substring] = [:]
            for part in parts.dropFirst() {
                guard let eq = part.firstIndex(of: "=") else { return nil }
                fields[part[..<eq]] = part[part.index(after: eq)...]
            }
            guard let n = fields["batch"].flatMap({ UInt64($0) }), let c = fields["chunks"].flatMap({ Int($0) }),
                  let first = fields["first"], let last = fields["last"], let digest = fields["digest"] else { return nil }
            (number, chunks, self.first, self.last, self.digest) = (n, c, String(first), String(last), String(digest))
        }

        init(_ batch: Batch) {
            number = batch.number
            chunks = batch.addresses.count
            first = batch.addresses.first!.hex
            last = batch.addresses.last!.hex
            digest = batch.digest
        }
    }

    func peer(_ index: Int) -> OverlayAddress {
        var g = SplitMix64(seed: derivedSeed(seed, 10, UInt64(index)))
        return Address32(bytes: g.bytes(32))!
    }

    /// Each peer's store epoch is fixed for the run, so seals of one (peer, bin) accumulate.
    func epoch(ofPeer index: Int) -> UInt64 { derivedSeed(seed, 11, UInt64(index)) | 1 }

    func chunkCount(_ number: UInt64) -> Int {
        CrashPlan.chunksMin + Int(derivedSeed(seed, 1, number) % UInt64(CrashPlan.chunksMax - CrashPlan.chunksMin + 1))
    }

    func chunk(_ number: UInt64, _ index: Int) -> Chunk {
        var g = SplitMix64(seed: derivedSeed(seed, 2, number, UInt64(index)))
        let size = g.next() % 8 == 0 ? 1 + Int(g.next() % UInt64(Chunk.payloadMax)) : Chunk.payloadMax
        let span = size == Chunk.payloadMax && g.next() % 4 == 0 ? UInt64(size) * (2 + g.next() % 127) : UInt64(size)
        return try! Chunk(span: span, payload: g.bytes(size))
    }

    func fetchAddress(_ number: UInt64, _ index: Int) -> ChunkAddress {
        var g = SplitMix64(seed: derivedSeed(seed, 3, number, UInt64(index)))
        return Address32(bytes: g.bytes(32))!
    }

    func batch(_ number: UInt64) -> Batch {
        var g = SplitMix64(seed: derivedSeed(seed, 4, number))
        var chunks = (0..<chunkCount(number)).map { chunk(number, $0) }
        if number > 1 && g.next() % 4 == 0 {
            let again = min(1 + Int(g.next() % 3), chunkCount(number - 1))
            chunks += (0..<again).map { chunk(number - 1, $0) }
        }
        var batch = StoreBatch(chunks: chunks)
        if g.next() % 3 == 0 {
            for _ in 0..<(1 + g.next() % 2) {
                let p = Int(g.next() % UInt64(CrashPlan.peerCount))
                let from = 1 + g.next() % 100_000
                // Half the seals are conditional on chunks of this batch, which the same
                // transaction stores first: they must be applied all the same.
                let requires = g.next() % 2 == 0 ? chunks.prefix(1 + Int(g.next() % 2)).map(\.address) : []
                batch.seals.append(IntervalSeal(peer: peer(p), bin: UInt8(g.next() % UInt64(Proximity.binCount)),
                                                epoch: epoch(ofPeer: p), range: from...(from + g.next() % 1000),
                                                requires: requires))
            }
        }
        if g.next() % 2 == 0 {
            for i in 0..<(1 + Int(g.next() % 4)) {
                let hints = (0..<(1 + Int(g.next() % 3))).map { peer(($0 + i) % CrashPlan.peerCount) }
                batch.fetchUpserts.append((fetchAddress(number, i),
                                           FetchRecord(attempts: UInt32(g.next() % 8), nextAttemptMs: g.next() % 1_000_000_000_000,
                                                       hints: hints)))
            }
        }
        if number > 1 && g.next() % 3 == 0 { batch.fetchRemovals.append(fetchAddress(number - 1, 0)) }
        batch.journal = ["\(CrashPlan.journalPrefix)\(number) seed=\(seed) chunks=\(chunks.count)"]
        return Batch(number: number, batch: batch, addresses: chunks.map(\.address))
    }

    /// The batch number a journal entry names, if it is one of ours.
    static func batchNumber(journalText text: String) -> UInt64? {
        guard text.hasPrefix(journalPrefix) else { return nil }
        return UInt64(text.dropFirst(journalPrefix.count).prefix { $0 != " " })
    }
}
