import LMDB
import ShoalCore

/// Reads inside one read transaction (one consistent snapshot). Valid only inside `Store.read`.
public struct StoreReader {
    let store: Store
    let txn: Transaction
    private var tables: Store.Tables { store.tables }
    /// How a read-only open finds chunks not yet merged into `chunks` (a writable store has an index).
    private var landing: LandingSnapshot? { store.landingSnapshot }

    /// The LMDB snapshot this reader sees.
    public var transactionID: Int { txn.id }

    public func has(_ address: ChunkAddress) throws -> Bool {
        try record(address) != nil
    }

    public func record(_ address: ChunkAddress) throws -> ChunkRecord? {
        try store.locate(address, txn: txn, snapshot: landing)?.record
    }

    /// True when the chunk's record is still in `landing` (not yet merged into `chunks`).
    public func isLanded(_ address: ChunkAddress) throws -> Bool {
        if case .landing = try store.locate(address, txn: txn, snapshot: landing)?.location { return true }
        return false
    }

    /// The chunk at `address`. The payload is read while this snapshot holds its reader slot,
    /// so the slot cannot have been reused for another chunk.
    public func chunk(_ address: ChunkAddress, verify: Bool = false) throws -> Chunk? {
        guard let record = try record(address) else { return nil }
        let payload = try store.slotFile.read(slot: record.slot, length: Int(record.length))
        if verify {
            return try Chunk(span: record.span, payload: payload, claimedAddress: address)
        }
        try Chunk.validate(payloadCount: payload.count)
        return Chunk(unverifiedSpan: record.span, payload: payload, address: address)
    }

    /// Span and payload as stored, not re-hashed: for sending to a peer, who re-hashes anyway.
    public func rawChunk(_ address: ChunkAddress) throws -> (span: UInt64, payload: [UInt8])? {
        guard let record = try record(address) else { return nil }
        return (record.span, try store.slotFile.read(slot: record.slot, length: Int(record.length)))
    }

    /// Zero-copy-ish payload read into a caller buffer; returns the record.
    public func readPayload(_ address: ChunkAddress, into buffer: UnsafeMutableRawBufferPointer) throws -> ChunkRecord? {
        guard let record = try record(address) else { return nil }
        try store.slotFile.read(slot: record.slot, length: Int(record.length), into: buffer)
        return record
    }

    /// Chunks stored: those in `chunks` and those still in `landing`.
    public func chunkCount() throws -> Int { try txn.count(tables.chunks) + landingCount() }

    /// Chunks in `landing`, waiting to be merged into `chunks`.
    public func landingCount() throws -> Int { try txn.count(tables.landing) }

    /// Every chunk record, in address order, wherever it lives (`chunks` and `landing` merged).
    public func forEachRecord(_ body: (ChunkAddress, ChunkRecord) throws -> Bool) throws {
        try Store.forEachRecord(txn: txn, tables: tables, body)
    }

    /// The last bin ID given out in `bin` (0 when none yet).
    public func cursor(bin: Int) throws -> UInt64 {
        try txn.withValue(tables.pull, PullKey.cursor(UInt8(bin)).lmdbBytes) { raw in
            try raw.map { try LEUInt64(decodingLMDB: $0).value } ?? 0
        }
    }

    /// Cursors of bins 0…31.
    public func cursors() throws -> [UInt64] {
        try (0..<Proximity.binCount).map { try cursor(bin: $0) }
    }

    /// Entries of `bin` with bin ID ≥ `from`, in bin ID order, at most `limit`.
    public func range(bin: Int, from: UInt64 = 1, limit: Int = .max) throws -> [(binID: UInt64, address: ChunkAddress)] {
        var out: [(UInt64, ChunkAddress)] = []
        try txn.scan(tables.pull, from: PullKey(bin: UInt8(bin), binID: from).lmdbBytes) { key, value in
            guard out.count < limit, key.count == 9, key[0] == UInt8(bin) else { return false }
            let k = try PullKey(decodingLMDB: key)
            out.append((k.binID!, try ChunkAddress(decodingLMDB: value)))
            return true
        }
        return out
    }

    /// The number of chunks in each bin (a scan of `pull`).
    public func binCounts() throws -> [Int] {
        var counts = Array(repeating: 0, count: Proximity.binCount)
        try txn.scan(tables.pull) { key, _ in
            if key.count == 9 && Int(key[0]) < counts.count { counts[Int(key[0])] += 1 }
            return true
        }
        return counts
    }

    public func intervals(peer: OverlayAddress, bin: UInt8) throws -> IntervalRecord? {
        try txn.get(tables.intervals, IntervalKey(peer: peer, bin: bin))
    }

    /// Every interval record, optionally only of `peer`.
    public func allIntervals(peer: OverlayAddress? = nil) throws -> [(key: IntervalKey, record: IntervalRecord)] {
        var out: [(IntervalKey, IntervalRecord)] = []
        let start = peer.map { IntervalKey(peer: $0, bin: 0) }
        try txn.scan(tables.intervals, from: start) { key, record in
            if let peer, key.peer != peer { return false }
            out.append((key, record))
            return true
        }
        return out
    }

    public func fetchEntry(_ address: ChunkAddress) throws -> FetchRecord? {
        try txn.get(tables.fetch, address)
    }

    public func fetchSet(limit: Int = .max) throws -> [(address: ChunkAddress, record: FetchRecord)] {
        try collect(tables.fetch, limit: limit)
    }

    public func peer(_ overlay: OverlayAddress) throws -> PeerRecord? {
        try txn.get(tables.peers, overlay)
    }

    public func peers(limit: Int = .max) throws -> [(overlay: OverlayAddress, record: PeerRecord)] {
        try collect(tables.peers, limit: limit)
    }

    /// The pin of `root`, if it is pinned.
    public func pin(_ root: ChunkAddress) throws -> PinRecord? { try txn.get(tables.pins, root) }

    /// Pinned roots in address order.
    public func pins(limit: Int = .max) throws -> [(root: ChunkAddress, record: PinRecord)] {
        try collect(tables.pins, limit: limit)
    }

    /// How many pinned roots hold `address` (0: none; it may be evicted).
    public func pinCount(_ address: ChunkAddress) throws -> UInt64 { try txn.get(tables.pinned, address)?.value ?? 0 }

    /// Distinct chunks held by at least one pin.
    public func pinnedChunkCount() throws -> Int { try txn.count(tables.pinned) }

    public func download(_ root: ChunkAddress) throws -> DownloadRecord? {
        try txn.get(tables.downloads, root)
    }

    public func downloads(limit: Int = .max) throws -> [(root: ChunkAddress, record: DownloadRecord)] {
        try collect(tables.downloads, limit: limit)
    }

    /// The newest `limit` journal entries, oldest first.
    public func journal(limit: Int = .max) throws -> [(sequence: UInt64, entry: JournalEntry)] {
        var out: [(UInt64, JournalEntry)] = []
        try txn.withCursor(tables.journal.database) { c in
            var more = try c.last()
            while more && out.count < limit {
                out.append((try UInt64(decodingLMDB: c.currentKey), try JournalEntry(decodingLMDB: c.currentValue)))
                more = try c.previous()
            }
        }
        return out.reversed()
    }

    private func collect<K, V>(_ table: Table<K, V>, limit: Int) throws -> [(K, V)] {
        var out: [(K, V)] = []
        try txn.scan(table) { k, v in
            guard out.count < limit else { return false }
            out.append((k, v))
            return true
        }
        return out
    }

    /// Storage radius: bins below it were evicted for capacity.
    public func radius() throws -> UInt8 {
        UInt8(try metaUInt64(Schema.MetaKey.radius) ?? 0)
    }

    public func slotsNext() throws -> UInt64 { try metaUInt64(Schema.MetaKey.slotsNext) ?? 0 }

    public func schemaVersion() throws -> UInt64 { try metaUInt64(Schema.MetaKey.schemaVersion) ?? 0 }

    public func createdAtMs() throws -> UInt64 { try metaUInt64(Schema.MetaKey.createdAt) ?? 0 }

    public func capacityChunks() throws -> UInt64 { try metaUInt64(Schema.MetaKey.capacity) ?? 0 }

    public func freeSlotCount() throws -> Int { try txn.stat(tables.freeSlots).entries }

    func metaUInt64(_ key: String) throws -> UInt64? {
        try txn.metaUInt64(tables.meta, key)
    }

    /// Entries and pages of each named database, by name.
    public func databaseStats() throws -> [(name: String, stat: Environment.Stat)] {
        let t = tables
        let dbs: [Database] = [t.meta, t.chunks.database, t.pull, t.intervals.database, t.fetch.database,
                               t.peers.database, t.downloads.database, t.journal.database, t.freeSlots, t.landing.database,
                               t.pins.database, t.pinned.database]
        return try dbs.map { ($0.name, try txn.stat($0)) }
    }
}
