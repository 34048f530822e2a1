import ShoalCore

/// Chunks from a seed (SplitMix64), so a failing test makes the same chunks when it runs again.
///
/// A chunk of `size` bytes is `Chunk(payload: generator.bytes(size))`: the same seed gives the
/// same chunks in the same order, whichever of these methods asks for them.
public struct SeededChunks: Sendable {
    /// The search in `chunk(inBin:of:)` gives up after this many candidates. A chunk lands in
    /// bin b with probability 2^-(b+1), so bins up to about 14 are found long before it.
    public static let binSearchTriesMax = 1 << 20

    public private(set) var generator: SplitMix64

    public init(seed: UInt64) { generator = SplitMix64(seed: seed) }

    /// `count` seeded bytes.
    public mutating func bytes(_ count: Int) -> [UInt8] { generator.bytes(count) }

    /// A chunk with a payload of `size` random bytes (1…4096) and a span of `span`
    /// (the payload's length when nil).
    public mutating func chunk(size: Int = Chunk.payloadMax, span: UInt64? = nil) -> Chunk {
        precondition((1...Chunk.payloadMax).contains(size), "a chunk payload is 1…\(Chunk.payloadMax) bytes, not \(size)")
        let payload = generator.bytes(size)
        do {
            return try Chunk(span: span ?? UInt64(size), payload: payload)
        } catch {
            preconditionFailure("seeded chunk of \(size) bytes: \(error)")
        }
    }

    public mutating func chunks(count: Int, size: Int = Chunk.payloadMax) -> [Chunk] {
        (0..<count).map { _ in chunk(size: size) }
    }

    /// The first `count` chunks of `seed`.
    public static func chunks(count: Int, size: Int = Chunk.payloadMax, seed: UInt64) -> [Chunk] {
        var chunks = SeededChunks(seed: seed)
        return chunks.chunks(count: count, size: size)
    }

    /// A chunk of `size` bytes whose address falls in `bin` of `overlay` (proximity `bin`, or
    /// ≥ 31 for bin 31), found by drawing chunks until one does.
    public mutating func chunk(inBin bin: Int, of overlay: OverlayAddress, size: Int = 64) throws -> Chunk {
        precondition((0..<Proximity.binCount).contains(bin), "bins are 0…\(Proximity.maxBin), not \(bin)")
        for _ in 0..<SeededChunks.binSearchTriesMax {
            let candidate = chunk(size: size)
            if Proximity.bin(of: candidate.address, relativeTo: overlay) == bin { return candidate }
        }
        throw TestFailure("no chunk in bin \(bin) of \(overlay) among \(SeededChunks.binSearchTriesMax) seeded chunks; "
                          + "bins above about 14 need a search of their own")
    }
}

/// `count` bytes from `seed`.
public func seededBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var generator = SplitMix64(seed: seed)
    return generator.bytes(count)
}
