import LMDB
import ShoalCore

/// The work of one write transaction: applying batches, allocating slots, evicting.
///
/// Everything here reads its starting state from the transaction, so when the environment
/// retries the transaction after growing the map, a fresh context does exactly the same again.
struct WriteContext {
    let store: Store
    let txn: Transaction
    private var tables: Store.Tables { store.tables }

    /// Per-bin cursors read so far, and which changed.
    private var cursors: [UInt64?] = Array(repeating: nil, count: Proximity.binCount)
    private var cursorsChanged = Set<Int>()
    private var slots: SlotAllocator
    private var wroteSlots = false
    /// False while the fetch set is empty in this transaction: storing a chunk then skips the
    /// per-chunk lookup that would delete its (absent) fetch entry.
    private var fetchMayHaveEntries: Bool
    /// Entries this transaction added to `landing` and that are still there, by address (not
    /// yet in the shared index).
    private var landedHere: [ChunkAddress: UInt64] = [:]
    /// Entries this transaction removed from `landing` (evicted or merged).
    private var landingRemoved: [(ChunkAddress, UInt64)] = []
    /// `meta.landing_next` when the transaction began, and the next sequence to give out.
    private let landingNextAtStart: UInt64
    private var landingNext: UInt64
    private(set) var landingCount: Int

    /// What this transaction did to `landing`, for the index once it has committed.
    var landingChanges: LandingChanges {
        LandingChanges(added: Array(landedHere), removed: landingRemoved, landingNext: landingNext)
    }

    init(store: Store, txn: Transaction) throws {
        self.store = store
        self.txn = txn
        slots = try SlotAllocator(store: store, txn: txn)
        landingCount = try txn.count(store.tables.landing)
        landingNextAtStart = try txn.metaUInt64(store.tables.meta, Schema.MetaKey.landingNext) ?? 1
        landingNext = landingNextAtStart
        // Writes need a writable store, which keeps the index.
        if let index = store.landingIndex {
            index.purge { store.environment.oldestReaderTransactionID() }
            if index.landingNext != landingNextAtStart {
                // Another process appended or merged since our last commit: rebuild from disk.
                try index.rebuild(from: txn, tables: store.tables)
            }
        }
        // A retried transaction (the map grew) stages its payloads again from the start.
        store.slotFile.discardStaged()
        fetchMayHaveEntries = try txn.count(store.tables.fetch) > 0
    }

    mutating func apply(_ batch: StoreBatch) throws -> BatchResult {
        var result = BatchResult()
        result.stored.reserveCapacity(batch.chunks.count)
        landedHere.reserveCapacity(landedHere.count + batch.chunks.count)
        for chunk in batch.chunks {
            if let stored = try store(chunk) {
                result.stored.append(stored)
            } else {
                result.duplicates += 1
            }
        }
        for peer in batch.intervalResets {
            try resetIntervals(of: peer) { _ in true }
        }
        for (peer, bin) in batch.binIntervalResets {
            try txn.delete(tables.intervals, IntervalKey(peer: peer, bin: bin))
        }
        for (index, seal) in batch.seals.enumerated() {
            if try seal.requires.contains(where: { try !isStored($0) }) {
                result.unsealed.append(index)
                continue
            }
            let key = IntervalKey(peer: seal.peer, bin: seal.bin)
            var set = IntervalSet()
            if let existing = try txn.get(tables.intervals, key), existing.epoch == seal.epoch {
                set = existing.set
            }
            set.insert(seal.range)
            try txn.put(tables.intervals, key, IntervalRecord(epoch: seal.epoch, set: set))
        }
        for (address, record) in batch.fetchUpserts where try !isStored(address) {
            try txn.put(tables.fetch, address, record)
            fetchMayHaveEntries = true
        }
        for address in batch.fetchRemovals { try txn.delete(tables.fetch, address) }
        for (overlay, record) in batch.peerUpserts { try txn.put(tables.peers, overlay, record) }
        for overlay in batch.peerRemovals { try txn.delete(tables.peers, overlay) }
        for (root, record) in batch.downloadUpserts { try txn.put(tables.downloads, root, record) }
        for root in batch.downloadRemovals { try txn.delete(tables.downloads, root) }
        if !batch.journal.isEmpty { try appendJournal(batch.journal) }
        for request in batch.pins { result.pinOutcomes.append(try pin(request)) }
        for request in batch.unpins { result.unpinned.append(try unpin(request)) }
        return result
    }

    /// Pins a file if every chunk of its tree is stored: each distinct chunk's count in
    /// `pinned` goes up by one and the root gets its `pins` record.
    private mutating func pin(_ request: PinRequest) throws -> PinOutcome {
        if try txn.get(tables.pins, request.root) != nil { return .alreadyPinned }
        let chunks = Set(request.chunks)
        var missing: [ChunkAddress] = []
        var missingCount = 0
        for address in chunks where try !isStored(address) {
            missingCount += 1
            if missing.count < 16 { missing.append(address) }
        }
        if missingCount > 0 { return .missing(count: missingCount, sample: missing.sorted()) }
        for address in chunks {
            let count = try txn.get(tables.pinned, address)?.value ?? 0
            try txn.put(tables.pinned, address, LEUInt64(count + 1))
        }
        try txn.put(tables.pins, request.root,
                    PinRecord(chunks: UInt64(chunks.count), bytes: request.bytes, pinnedMs: store.options.now()))
        return .pinned
    }

    /// Removes a pin: each distinct chunk's count goes down by one (its entry goes at zero).
    private mutating func unpin(_ request: UnpinRequest) throws -> Bool {
        guard try txn.get(tables.pins, request.root) != nil else { return false }
        for address in Set(request.chunks) {
            guard let count = try txn.get(tables.pinned, address)?.value else { continue }
            if count <= 1 {
                try txn.delete(tables.pinned, address)
            } else {
                try txn.put(tables.pinned, address, LEUInt64(count - 1))
            }
        }
        try txn.delete(tables.pins, request.root)
        return true
    }

    /// The record of `address` as this transaction sees it, and where it lives.
    private func locate(_ address: ChunkAddress) throws -> (record: ChunkRecord, location: ChunkLocation)? {
        try store.locate(address, txn: txn, snapshot: nil, pending: landedHere)
    }

    private func isStored(_ address: ChunkAddress) throws -> Bool { try locate(address) != nil }

    /// Stores one chunk; nil if it was already present. The record is appended to `landing`
    /// (one page touched per commit, not one `chunks` leaf per chunk).
    private mutating func store(_ chunk: Chunk) throws -> StoredChunk? {
        if try isStored(chunk.address) { return nil }
        let bin = Proximity.bin(of: chunk.address, relativeTo: store.overlay)
        let slot = try slots.take()
        let binID = try cursor(bin) + 1
        let record = ChunkRecord(span: chunk.span, slot: slot, binID: binID,
                                 length: UInt16(chunk.payload.count), bin: UInt8(bin))
        let seq = landingNext
        landingNext += 1
        try txn.append(tables.landing.database, seq.lmdbBytes, LandingEntry(address: chunk.address, record: record).lmdbBytes)
        landedHere[chunk.address] = seq
        landingCount += 1
        try chunk.payload.withUnsafeBytes { try store.slotFile.write(slot: slot, payload: $0) }
        wroteSlots = true
        try txn.put(tables.pull, PullKey(bin: UInt8(bin), binID: binID).lmdbBytes, chunk.address.bytes)
        cursors[bin] = binID
        cursorsChanged.insert(bin)
        // A chunk leaves the fetch set in the transaction that stores it.
        if fetchMayHaveEntries { try txn.delete(tables.fetch, chunk.address) }
        return StoredChunk(address: chunk.address, bin: UInt8(bin), binID: binID)
    }

    private mutating func cursor(_ bin: Int) throws -> UInt64 {
        if let c = cursors[bin] { return c }
        let c = try txn.withValue(tables.pull, PullKey.cursor(UInt8(bin)).lmdbBytes) { raw in
            try raw.map { try LEUInt64(decodingLMDB: $0).value } ?? 0
        }
        cursors[bin] = c
        return c
    }

    private func appendJournal(_ texts: [String]) throws {
        var last: UInt64 = 0
        try txn.withCursor(tables.journal.database) { c in
            if try c.last() { last = try UInt64(decodingLMDB: c.currentKey) }
        }
        let now = store.options.now()
        for (i, text) in texts.enumerated() {
            try txn.put(tables.journal, last + UInt64(i) + 1, JournalEntry(timeMs: now, text: text))
        }
        // Bounded: drop the oldest beyond the limit.
        var excess = try txn.count(tables.journal) - Schema.journalEntriesMax
        if excess > 0 {
            try txn.withCursor(tables.journal.database) { c in
                var more = try c.first()
                while more && excess > 0 {
                    try c.deleteCurrent()
                    excess -= 1
                    more = try c.next()
                }
            }
        }
    }

    /// Deletes the interval records of `peer` whose bin `matches`.
    private func resetIntervals(of peer: OverlayAddress, where matches: (UInt8) -> Bool) throws {
        let start = IntervalKey(peer: peer, bin: 0).lmdbBytes
        try txn.withCursor(tables.intervals.database) { c in
            var more = try c.seek(atOrAfter: start)
            while more {
                let key = try IntervalKey(decodingLMDB: c.currentKey)
                guard key.peer == peer else { break }
                if matches(key.bin) {
                    try c.deleteCurrent()
                    more = try c.seek(atOrAfter: IntervalKey(peer: peer, bin: key.bin).lmdbBytes)
                } else {
                    more = try c.next()
                }
            }
        }
    }

    /// With a capacity set and exceeded, evicts whole bins from the lowest up until the store fits.
    /// Returns the chunks evicted and the storage radius after.
    mutating func evictIfOverCapacity() throws -> (evicted: Int, radius: UInt8) {
        var radius = try metaUInt64(Schema.MetaKey.radius) ?? 0
        guard let capacity = store.options.capacityChunks else { return (0, UInt8(radius)) }
        var count = try txn.count(tables.chunks) + landingCount
        guard count > capacity else { return (0, UInt8(radius)) }
        var evicted = 0
        // Pinned chunks stay, so a bin may keep some after its eviction: go on upwards. A store
        // holding more pinned chunks than its capacity ends above it, with every other chunk gone.
        let anyPinned = try txn.count(tables.pinned) > 0
        var next = try lowestNonEmptyBin()
        while count > capacity, let bin = next, bin < Proximity.binCount {
            let n = try evict(bin: bin, skippingPinned: anyPinned)
            evicted += n
            count -= n
            // The radius says which bins may miss chunks: those up to the last one evicted from.
            if n > 0 { radius = max(radius, UInt64(bin) + 1) }
            next = bin + 1
        }
        if evicted > 0 {
            try txn.putMeta(tables.meta, Schema.MetaKey.radius, radius)
            try resetIntervalsAfterEviction(radius: Int(radius))
        }
        return (evicted, UInt8(radius))
    }

    private func lowestNonEmptyBin() throws -> Int? {
        var found: Int?
        try txn.scan(tables.pull) { key, _ in
            if key.count == 9 { found = Int(key[0]); return false }
            return true
        }
        return found
    }

    /// Deletes every chunk of `bin` but the pinned ones and frees their slots. The bin's cursor
    /// stays: bin IDs never repeat.
    private mutating func evict(bin: Int, skippingPinned: Bool) throws -> Int {
        var n = 0
        let freedIn = UInt64(txn.id)
        try txn.withCursor(tables.pull) { c in
            var more = try c.seek(atOrAfter: PullKey(bin: UInt8(bin), binID: 0).lmdbBytes)
            while more, c.currentKey.count == 9, c.currentKey[0] == UInt8(bin) {
                let address = try ChunkAddress(decodingLMDB: c.currentValue)
                if skippingPinned, try txn.get(tables.pinned, address) != nil {
                    // Kept, with its pull entry: it is still stored and still offered.
                    more = try c.next()
                    continue
                }
                let key = Array(c.currentKey)
                if let (record, location) = try locate(address) {
                    switch location {
                    case .chunks:
                        try txn.delete(tables.chunks, address)
                    case .landing(let seq):
                        try txn.delete(tables.landing, seq)
                        landedHere[address] = nil
                        landingRemoved.append((address, seq))
                        landingCount -= 1
                    }
                    try txn.put(tables.freeSlots, FreeSlotKey(freedIn: freedIn, slot: record.slot).bytes, [UInt8]())
                }
                try c.deleteCurrent()
                n += 1
                // The deleted key's successor.
                more = try c.seek(atOrAfter: key)
            }
        }
        return n
    }

    /// Our bins below `radius` were evicted. For a peer at proximity `p`, the evicted chunks lie
    /// in the peer's bins below `radius` when `p ≥ radius`; when `p < radius` they may lie in any
    /// of its bins (a chunk in our bin `p` can be in any of its bins above `p`). Only those reset.
    private func resetIntervalsAfterEviction(radius: Int) throws {
        var peers: [OverlayAddress] = []
        try txn.scan(tables.intervals.database) { key, _ in
            let k = try IntervalKey(decodingLMDB: key)
            if peers.last != k.peer { peers.append(k.peer) }
            return true
        }
        for peer in peers {
            let p = Proximity.bin(of: peer, relativeTo: store.overlay)
            try resetIntervals(of: peer) { bin in p < radius || Int(bin) < radius }
        }
    }

    private func metaUInt64(_ key: String) throws -> UInt64? {
        try txn.metaUInt64(tables.meta, key)
    }

    /// Writes back cursors, the slot counter and `landing_next`, merges `landing` into
    /// `chunks` if asked, and makes payloads durable before the commit.
    mutating func finish(merge: Bool = false) throws {
        if merge {
            try Store.mergeLanding(txn: txn, tables: tables, removed: &landingRemoved)
            landedHere = [:]
            landingCount = 0
        }
        if landingNext != landingNextAtStart {
            try txn.putMeta(tables.meta, Schema.MetaKey.landingNext, landingNext)
        }
        for bin in cursorsChanged.sorted() {
            try txn.put(tables.pull, PullKey.cursor(UInt8(bin)).lmdbBytes, LEUInt64(cursors[bin]!).lmdbBytes)
        }
        try slots.finish(txn: txn)
        // Write-ahead: the payloads reach the disk before any committed record points to them.
        if wroteSlots { try store.slotFile.sync() }
    }
}

/// Key of the free-slot list: when it was freed, then which slot.
struct FreeSlotKey: Equatable {
    var freedIn: UInt64
    var slot: UInt64

    var bytes: [UInt8] {
        var b = freedIn.lmdbBytes
        slot.encodeLMDB(into: &b)
        return b
    }

    init(freedIn: UInt64, slot: UInt64) { (self.freedIn, self.slot) = (freedIn, slot) }

    init(_ raw: UnsafeRawBufferPointer) throws {
        guard raw.count == 16 else { throw LMDBDecodingError(FreeSlotKey.self, "\(raw.count) bytes, want 16") }
        freedIn = try UInt64(decodingLMDB: UnsafeRawBufferPointer(rebasing: raw[0..<8]))
        slot = try UInt64(decodingLMDB: UnsafeRawBufferPointer(rebasing: raw[8..<16]))
    }
}

/// Hands out payload slots for one write transaction: freed slots that no reader can still
/// see first, then new slots at the end of the file.
struct SlotAllocator {
    private let store: Store
    private var next: UInt64
    private let startNext: UInt64
    /// Slots given back in this transaction (a duplicate chunk), reused first.
    private var returned: [UInt64] = []
    /// Free-list entries taken in this transaction, deleted at `finish`.
    private var taken: [FreeSlotKey] = []
    private var freeListExhausted = false
    /// Slots freed in a transaction ≤ this may be reused: every live reader's snapshot is at least that new.
    private var reusableUpTo: UInt64?
    private var lastTakenKey: [UInt8]?

    init(store: Store, txn: Transaction) throws {
        self.store = store
        next = try txn.metaUInt64(store.tables.meta, Schema.MetaKey.slotsNext) ?? 0
        startNext = next
        self.txn = txn
    }

    private let txn: Transaction

    mutating func take() throws -> UInt64 {
        if let slot = returned.popLast() { return slot }
        if !freeListExhausted, let slot = try takeFree() { return slot }
        defer { next += 1 }
        return next
    }

    mutating func giveBack(_ slot: UInt64) {
        if slot + 1 == next && slot >= startNext { next -= 1 } else { returned.append(slot) }
    }

    private mutating func takeFree() throws -> UInt64? {
        if reusableUpTo == nil {
            // A reader holding snapshot t sees every commit ≤ t; a slot freed by commit f is
            // invisible to it exactly when t ≥ f. With no reader, everything freed is reusable.
            reusableUpTo = store.environment.oldestReaderTransactionID().map(UInt64.init) ?? .max
        }
        var found: FreeSlotKey?
        try txn.withCursor(store.tables.freeSlots) { c in
            let positioned: Bool
            if let lastTakenKey {
                positioned = try c.seek(atOrAfter: lastTakenKey) && (c.currentKey.elementsEqual(lastTakenKey) ? try c.next() : true)
            } else {
                positioned = try c.first()
            }
            guard positioned else { return }
            let key = try FreeSlotKey(c.currentKey)
            if key.freedIn <= reusableUpTo! { found = key }
        }
        guard let found else {
            freeListExhausted = true
            return nil
        }
        taken.append(found)
        lastTakenKey = found.bytes
        return found.slot
    }

    mutating func finish(txn: Transaction) throws {
        for key in taken { try txn.delete(store.tables.freeSlots, key.bytes) }
        // Slots given back and never reused go back to the free list, reusable at once
        // (no committed record ever pointed to them).
        for slot in returned {
            try txn.put(store.tables.freeSlots, FreeSlotKey(freedIn: 0, slot: slot).bytes, [UInt8]())
        }
        if next != startNext {
            try txn.putMeta(store.tables.meta, Schema.MetaKey.slotsNext, next)
        }
    }
}
