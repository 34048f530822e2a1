import ShoalCore

/// A node's store as the simulation keeps it: what `ShoalStore` keeps in LMDB, with the same
/// rules (`WriteContext.apply`), in memory. Chunks get bin IDs per bin of the node's own
/// overlay, from 1, in the order they are stored; intervals are per (peer, bin) with the
/// peer's epoch; a seal applies only if every chunk it `requires` is stored by then, and a
/// seal of another epoch replaces what was sealed before.
///
/// Only committed state lives here: a crash keeps all of it (the simulator drops writes not
/// yet committed). Nothing is evicted (no capacity), so bin IDs are dense and a bin's cursor is
/// its count. Bounded by the chunks uploaded and the peers met.
public struct MemoryStore: Sendable {
    public struct Entry: Sendable {
        public var chunk: Chunk
        public var bin: UInt8
        public var binID: UInt64
    }

    /// What a peer's bin looks like to us: its store epoch and the bin IDs we synced.
    public struct Intervals: Sendable, Equatable {
        public var epoch: UInt64
        public var set: IntervalSet
    }

    /// A write: what `StoreBatch` carries for the sync path.
    public struct Batch: Sendable {
        public var chunks: [Chunk] = []
        public var seals: [Seal] = []
        /// Peers whose intervals are all reset (their epoch changed).
        public var intervalResets: [OverlayAddress] = []
        /// Single bins of a peer whose intervals are reset (its cursor went below them).
        public var binIntervalResets: [(peer: OverlayAddress, bin: UInt8)] = []
    }

    public struct Seal: Sendable {
        public var peer: OverlayAddress
        public var bin: UInt8
        public var epoch: UInt64
        public var range: ClosedRange<UInt64>
        public var requires: [ChunkAddress]
    }

    public struct Result: Sendable {
        /// Chunks newly stored, with their bin and bin ID.
        public var stored: [(address: ChunkAddress, bin: UInt8, binID: UInt64)] = []
        /// Chunks the store already held.
        public var duplicates = 0
        /// Indices of seals skipped because a required chunk is not stored.
        public var unsealed: [Int] = []
    }

    public let overlay: OverlayAddress
    /// Fixed when the store is created; survives crashes.
    public let epoch: UInt64
    public private(set) var chunks: [ChunkAddress: Entry] = [:]
    /// Per bin, the address at bin ID `i` is at index `i - 1`.
    public private(set) var pull: [[ChunkAddress]] = Array(repeating: [], count: Proximity.binCount)
    public private(set) var intervals: [OverlayAddress: [UInt8: Intervals]] = [:]
    /// Test-only breakage: seals apply even when a chunk they require is missing (what the
    /// convergence check must catch).
    var sealsIgnoreRequirements = false

    public init(overlay: OverlayAddress, epoch: UInt64) {
        self.overlay = overlay
        self.epoch = epoch
    }

    public func has(_ address: ChunkAddress) -> Bool { chunks[address] != nil }

    public func cursor(bin: Int) -> UInt64 { UInt64(pull[bin].count) }

    /// Entries of `bin` with bin ID in `[from, to]`, at most `limit`, in bin-ID order.
    public func range(bin: Int, from: UInt64, to: UInt64, limit: Int) -> [(binID: UInt64, address: ChunkAddress)] {
        let ids = pull[bin]
        guard from >= 1, from <= UInt64(ids.count), limit > 0 else { return [] }
        let last = min(to, UInt64(ids.count))
        guard from <= last else { return [] }
        let end = min(last, from + UInt64(limit) - 1)
        return (from...end).map { (binID: $0, address: ids[Int($0 - 1)]) }
    }

    /// The address with bin ID `binID` in `bin`, if any.
    public func address(bin: Int, binID: UInt64) -> ChunkAddress? {
        binID >= 1 && binID <= UInt64(pull[bin].count) ? pull[bin][Int(binID - 1)] : nil
    }

    public func intervals(of peer: OverlayAddress) -> [UInt8: Intervals] { intervals[peer] ?? [:] }

    /// Applies one batch as `WriteContext.apply` does: chunks, then resets, then seals.
    public mutating func apply(_ batch: Batch) -> Result {
        var result = Result()
        for chunk in batch.chunks {
            guard chunks[chunk.address] == nil else {
                result.duplicates += 1
                continue
            }
            let bin = Proximity.bin(of: chunk.address, relativeTo: overlay)
            pull[bin].append(chunk.address)
            let binID = UInt64(pull[bin].count)
            chunks[chunk.address] = Entry(chunk: chunk, bin: UInt8(bin), binID: binID)
            result.stored.append((chunk.address, UInt8(bin), binID))
        }
        for peer in batch.intervalResets { intervals[peer] = nil }
        for (peer, bin) in batch.binIntervalResets { intervals[peer]?[bin] = nil }
        for (index, seal) in batch.seals.enumerated() {
            if !sealsIgnoreRequirements && seal.requires.contains(where: { chunks[$0] == nil }) {
                result.unsealed.append(index)
                continue
            }
            var set = IntervalSet()
            if let existing = intervals[seal.peer]?[seal.bin], existing.epoch == seal.epoch { set = existing.set }
            set.insert(seal.range)
            intervals[seal.peer, default: [:]][seal.bin] = Intervals(epoch: seal.epoch, set: set)
        }
        return result
    }

    public func checkInvariants() {
        var count = 0
        for bin in 0..<Proximity.binCount {
            for (i, address) in pull[bin].enumerated() {
                guard let entry = chunks[address] else { preconditionFailure("pull entry \(bin)/\(i + 1) without its chunk") }
                precondition(Int(entry.bin) == bin && entry.binID == UInt64(i + 1), "chunk \(address) filed at \(bin)/\(i + 1), says \(entry.bin)/\(entry.binID)")
            }
            count += pull[bin].count
        }
        precondition(count == chunks.count, "\(chunks.count) chunks, \(count) pull entries")
        for (_, bins) in intervals { for (_, record) in bins { record.set.checkInvariants() } }
    }
}
