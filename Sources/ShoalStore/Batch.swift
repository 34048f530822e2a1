import ShoalCore

/// Everything one atomic write changes. `Store.apply` commits all of it in one LMDB
/// transaction or none of it.
public struct StoreBatch: Sendable {
    /// Chunks to store. One already present is not stored again (it counts as a duplicate).
    public var chunks: [Chunk] = []
    /// Interval ranges to seal, after the chunks above are stored.
    public var seals: [IntervalSeal] = []
    /// Peers whose intervals are reset (their store epoch changed).
    public var intervalResets: [OverlayAddress] = []
    /// Single bins of a peer whose intervals are reset (its cursor went below what they cover).
    public var binIntervalResets: [(peer: OverlayAddress, bin: UInt8)] = []
    /// Entries to add to the fetch set (skipped for chunks already stored).
    public var fetchUpserts: [(address: ChunkAddress, record: FetchRecord)] = []
    /// Entries to leave the fetch set. A chunk stored by this batch leaves it anyway.
    public var fetchRemovals: [ChunkAddress] = []
    public var peerUpserts: [(overlay: OverlayAddress, record: PeerRecord)] = []
    public var peerRemovals: [OverlayAddress] = []
    public var downloadUpserts: [(root: ChunkAddress, record: DownloadRecord)] = []
    public var downloadRemovals: [ChunkAddress] = []
    /// Supervisor decisions to journal.
    public var journal: [String] = []
    /// Files to pin, after the chunks above are stored. Each applies only if every chunk it
    /// lists is stored by then (`PinOutcome`).
    public var pins: [PinRequest] = []
    /// Pins to remove (`BatchResult.unpinned`).
    public var unpins: [UnpinRequest] = []

    public init(chunks: [Chunk] = [], seals: [IntervalSeal] = []) {
        self.chunks = chunks
        self.seals = seals
    }

    public var isEmpty: Bool {
        chunks.isEmpty && seals.isEmpty && intervalResets.isEmpty && binIntervalResets.isEmpty && fetchUpserts.isEmpty
            && fetchRemovals.isEmpty && peerUpserts.isEmpty && peerRemovals.isEmpty
            && downloadUpserts.isEmpty && downloadRemovals.isEmpty && journal.isEmpty
            && pins.isEmpty && unpins.isEmpty
    }
}

/// "Bin IDs `range` of `peer`'s bin `bin`, at store epoch `epoch`, are fully synced."
public struct IntervalSeal: Sendable, Equatable {
    public var peer: OverlayAddress
    public var bin: UInt8
    public var epoch: UInt64
    public var range: ClosedRange<UInt64>
    /// Chunks of the range that another stream was fetching: the seal applies only if every
    /// one of them is stored by the time this transaction runs, so a range is never sealed
    /// over a chunk that is still missing.
    public var requires: [ChunkAddress]

    public init(peer: OverlayAddress, bin: UInt8, epoch: UInt64, range: ClosedRange<UInt64>, requires: [ChunkAddress] = []) {
        (self.peer, self.bin, self.epoch, self.range, self.requires) = (peer, bin, epoch, range, requires)
    }
}

/// "Pin the file `root`, whose tree is exactly `chunks`." The caller walks the tree; the
/// store counts each distinct chunk once for this root, so an unpin with the same list undoes it.
public struct PinRequest: Sendable, Equatable {
    public var root: ChunkAddress
    public var chunks: [ChunkAddress]
    /// The file's size in bytes.
    public var bytes: UInt64

    public init(root: ChunkAddress, chunks: [ChunkAddress], bytes: UInt64) {
        (self.root, self.chunks, self.bytes) = (root, chunks, bytes)
    }
}

/// "Unpin `root`, whose tree is `chunks`" (the same walk as when it was pinned: a pinned tree
/// cannot change, its chunks are all still stored).
public struct UnpinRequest: Sendable, Equatable {
    public var root: ChunkAddress
    public var chunks: [ChunkAddress]

    public init(root: ChunkAddress, chunks: [ChunkAddress]) {
        (self.root, self.chunks) = (root, chunks)
    }
}

/// What became of a `PinRequest`.
public enum PinOutcome: Sendable, Equatable {
    case pinned
    /// The root was pinned already; nothing changed.
    case alreadyPinned
    /// Not pinned: `count` listed chunks are not stored; `sample` names up to 16 of them.
    case missing(count: Int, sample: [ChunkAddress])
}

/// Where a chunk stored by a batch landed.
public struct StoredChunk: Sendable, Equatable {
    public var address: ChunkAddress
    public var bin: UInt8
    public var binID: UInt64
}

/// What a committed batch did.
public struct BatchResult: Sendable, Equatable {
    public var stored: [StoredChunk] = []
    /// Chunks of the batch that were already in the store.
    public var duplicates: Int = 0
    /// Indexes (into `StoreBatch.seals`) of seals not applied because a required chunk was missing.
    public var unsealed: [Int] = []
    /// Chunks evicted for capacity by this commit.
    public var evicted: Int = 0
    /// The storage radius after this commit.
    public var radius: UInt8 = 0
    /// The LMDB transaction ID the batch committed in.
    public var transactionID: Int = 0
    /// One per `StoreBatch.pins`, in order.
    public var pinOutcomes: [PinOutcome] = []
    /// One per `StoreBatch.unpins`, in order: false when the root was not pinned.
    public var unpinned: [Bool] = []
}
