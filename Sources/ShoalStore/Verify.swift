import LMDB
import ShoalCore

/// What `Store.verify()` found: every problem, and how much was checked.
public struct VerifyReport: Sendable, Codable, Equatable {
    public struct Problem: Sendable, Codable, Equatable, CustomStringConvertible {
        /// A stable kebab-case name, e.g. `hash-mismatch`, `pull-missing`, `slot-orphan`.
        public var kind: String
        public var database: String
        /// The key concerned, in hex (addresses) or `bin/binID` form.
        public var key: String
        public var detail: String

        public var description: String { "\(kind) [\(database) \(key)]: \(detail)" }
    }

    public var problems: [Problem] = []
    public var chunksChecked = 0
    public var pullEntriesChecked = 0
    public var freeSlotsChecked = 0
    public var slotsNext: UInt64 = 0
    public var intervalRecordsChecked = 0
    public var fetchEntriesChecked = 0
    public var peerRecordsChecked = 0
    public var downloadRecordsChecked = 0
    public var journalEntriesChecked = 0
    /// Pin records checked (schema v3).
    public var pinsChecked = 0
    /// The LMDB snapshot verified.
    public var transactionID = 0

    public var isClean: Bool { problems.isEmpty }
}

extension Store {
    /// Checks the whole store in one read snapshot: re-hashes every chunk against its address;
    /// checks `chunks` ↔ `pull` both ways, slots (none out of range, used twice, both used and
    /// free, or neither), cursors ≥ every bin ID, interval sets sorted and disjoint, fetch
    /// entries not for chunks already stored, every pinned chunk stored, and that every record decodes.
    ///
    /// Safe on a live store: it only reads, and its snapshot keeps every slot it sees from reuse.
    public func verify() throws(StoreError) -> VerifyReport {
        try read { reader in
            var verifier = Verifier(store: self, txn: reader.txn)
            return try verifier.run()
        }
    }
}

/// One verification pass. Collects what it sees so `Repair` can plan from the same facts.
struct Verifier {
    let store: Store
    let txn: Transaction
    var report = VerifyReport()
    var tables: Store.Tables { store.tables }

    /// Chunks that cannot be trusted (bad record, unreadable or wrong payload, bad slot).
    var untrustedChunks: [ChunkAddress: String] = [:]
    /// Chunks that check out, with their records.
    var goodChunks: [ChunkAddress: ChunkRecord] = [:]
    /// Raw keys of pull entries to delete, and (bin, binID) → address of those to keep.
    var badPullKeys: [[UInt8]] = []
    var pullEntries: [PullKey: ChunkAddress] = [:]
    var cursors: [UInt64] = Array(repeating: 0, count: Proximity.binCount)
    var badCursorKeys: [[UInt8]] = []
    var freeSlotKeys: [(key: [UInt8], slot: UInt64, ok: Bool)] = []
    var orphanSlots: [UInt64] = []
    var badIntervalKeys: [[UInt8]] = []
    var fetchForStored: [ChunkAddress] = []
    var badRecords: [(database: Database, key: [UInt8])] = []
    /// Where each chunk record that decodes lives, with the record.
    var located: [ChunkAddress: (record: ChunkRecord, location: ChunkLocation)] = [:]
    /// `landing` keys of entries for an address already recorded elsewhere.
    var duplicateLandingKeys: [[UInt8]] = []

    init(store: Store, txn: Transaction) {
        self.store = store
        self.txn = txn
    }

    private mutating func problem(_ kind: String, _ db: String, _ key: String, _ detail: String) {
        report.problems.append(.init(kind: kind, database: db, key: key, detail: detail))
    }

    private static func hex(_ raw: UnsafeRawBufferPointer) -> String {
        Address32(raw: raw)?.hex ?? raw.hexEncoded
    }

    mutating func run() throws -> VerifyReport {
        report.transactionID = txn.id
        try checkMeta()
        try checkCursors()
        try checkChunks()
        try checkPull()
        try checkSlots()
        try checkIntervals()
        try checkFetch()
        report.peerRecordsChecked = try checkDecodes(tables.peers.database, as: PeerRecord.self, keyLength: 32)
        report.downloadRecordsChecked = try checkDecodes(tables.downloads.database, as: DownloadRecord.self, keyLength: 32)
        report.journalEntriesChecked = try checkDecodes(tables.journal.database, as: JournalEntry.self, keyLength: 8)
        try checkPins()
        return report
    }

    private mutating func checkMeta() throws {
        let version = try txn.metaUInt64(tables.meta, Schema.MetaKey.schemaVersion)
        if version != Schema.version {
            problem("meta-schema", "meta", Schema.MetaKey.schemaVersion, "schema version \(version.map(String.init) ?? "missing"), want \(Schema.version)")
        }
        if try txn.metaUInt64(tables.meta, Schema.MetaKey.epoch) == nil {
            problem("meta-missing", "meta", Schema.MetaKey.epoch, "no epoch")
        }
        report.slotsNext = try txn.metaUInt64(tables.meta, Schema.MetaKey.slotsNext) ?? 0
        // Every slot below slots_next was written before its transaction committed, so the file
        // reaches at least that far. A larger value is damage; checking against it would also
        // mean a slot table the size of the damage.
        let fileSlots = (store.slotFile.fileSize() + UInt64(Schema.slotSize) - 1) / UInt64(Schema.slotSize)
        if report.slotsNext > fileSlots {
            problem("meta-slots-next", "meta", Schema.MetaKey.slotsNext,
                    "slots_next \(report.slotsNext) is beyond the \(fileSlots) slots in the slot file")
            report.slotsNext = fileSlots
        }
    }

    private mutating func checkCursors() throws {
        for bin in 0..<Proximity.binCount {
            let key = PullKey.cursor(UInt8(bin)).lmdbBytes
            try txn.withValue(tables.pull, key) { raw in
                guard let raw else { return }
                if let value = try? LEUInt64(decodingLMDB: raw) {
                    cursors[bin] = value.value
                } else {
                    problem("undecodable", "pull", "cursor \(bin)", "cursor value of \(raw.count) bytes")
                    badCursorKeys.append(key)
                }
            }
        }
    }

    private mutating func checkChunks() throws {
        var slotOwner: [UInt64: ChunkAddress] = [:]
        var payload = [UInt8](repeating: 0, count: Schema.slotSize)
        let fileBytes = store.slotFile.fileSize()
        var candidates: [(ChunkAddress, ChunkRecord)] = []
        try txn.scan(tables.chunks.database) { key, value in
            report.chunksChecked += 1
            guard let address = Address32(raw: key) else {
                problem("undecodable", "chunks", Verifier.hex(key), "key of \(key.count) bytes")
                badRecords.append((tables.chunks.database, Array(key)))
                return true
            }
            let record: ChunkRecord
            do {
                record = try ChunkRecord(decodingLMDB: value)
            } catch {
                problem("undecodable", "chunks", address.hex, "\(error)")
                untrustedChunks[address] = "undecodable record"
                return true
            }
            candidates.append((address, record))
            located[address] = (record, .chunks)
            return true
        }
        // Chunks not yet merged: `landing` holds sequence → address ‖ record.
        try txn.scan(tables.landing.database) { key, value in
            report.chunksChecked += 1
            guard let seq = try? UInt64(decodingLMDB: key), let entry = try? LandingEntry(decodingLMDB: value) else {
                problem("undecodable", "landing", Verifier.hex(key), "entry of \(key.count)+\(value.count) bytes")
                badRecords.append((tables.landing.database, Array(key)))
                return true
            }
            if located[entry.address] != nil || untrustedChunks[entry.address] != nil {
                problem("chunk-duplicate", "landing", "\(seq)", "\(entry.address.hex) is recorded twice")
                duplicateLandingKeys.append(Array(key))
                return true
            }
            candidates.append((entry.address, entry.record))
            located[entry.address] = (entry.record, .landing(seq))
            return true
        }
        for (address, record) in candidates {
            if record.slot >= report.slotsNext {
                problem("slot-out-of-range", "chunks", address.hex, "slot \(record.slot) ≥ slots_next \(report.slotsNext)")
                untrustedChunks[address] = "slot out of range"
                continue
            }
            if record.slot * UInt64(Schema.slotSize) + UInt64(record.length) > fileBytes {
                problem("slot-missing", "chunks", address.hex, "slot \(record.slot) lies beyond the end of the slot file (\(fileBytes) bytes)")
                untrustedChunks[address] = "slot beyond file"
                continue
            }
            let actual: ChunkAddress
            do {
                actual = try payload.withUnsafeMutableBytes { buffer in
                    try store.slotFile.read(slot: record.slot, length: Int(record.length), into: buffer)
                    return Chunk.address(span: record.span,
                                         payload: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer)[0..<Int(record.length)]))
                }
            } catch {
                problem("slot-unreadable", "chunks", address.hex, "\(error)")
                untrustedChunks[address] = "payload unreadable"
                continue
            }
            if actual != address {
                problem("hash-mismatch", "chunks", address.hex, "payload in slot \(record.slot) hashes to \(actual.hex)")
                untrustedChunks[address] = "hash mismatch"
                continue
            }
            if let other = slotOwner[record.slot] {
                // Both cannot hash right from one slot unless they are the same chunk; keep the first.
                problem("slot-double-use", "chunks", address.hex, "slot \(record.slot) is also used by \(other.hex)")
                untrustedChunks[address] = "slot used twice"
                continue
            }
            slotOwner[record.slot] = address
            let expectedBin = Proximity.bin(of: address, relativeTo: store.overlay)
            if Int(record.bin) != expectedBin {
                problem("bin-mismatch", "chunks", address.hex, "recorded in bin \(record.bin), proximity puts it in bin \(expectedBin)")
            }
            if record.binID == 0 || record.binID > cursors[Int(record.bin)] {
                problem("cursor-behind", "pull", "cursor \(record.bin)", "bin ID \(record.binID) of \(address.hex) is above cursor \(cursors[Int(record.bin)])")
            }
            goodChunks[address] = record
        }
    }

    private mutating func checkPull() throws {
        var seen = Set<ChunkAddress>()
        try txn.scan(tables.pull) { key, value in
            if key.count == 1 { return true }  // a cursor, checked above
            report.pullEntriesChecked += 1
            guard let k = try? PullKey(decodingLMDB: key), let binID = k.binID, let address = Address32(raw: value) else {
                problem("undecodable", "pull", Verifier.hex(key), "entry of \(key.count)+\(value.count) bytes")
                badPullKeys.append(Array(key))
                return true
            }
            let label = "\(k.bin)/\(binID)"
            if Int(k.bin) >= Proximity.binCount {
                problem("undecodable", "pull", label, "bin \(k.bin) outside 0…31")
                badPullKeys.append(Array(key))
                return true
            }
            if binID > cursors[Int(k.bin)] {
                problem("cursor-behind", "pull", label, "bin ID above cursor \(cursors[Int(k.bin)])")
            }
            if untrustedChunks[address] != nil {
                badPullKeys.append(Array(key))  // the chunk goes; so does its index entry
                return true
            }
            guard let record = goodChunks[address] else {
                problem("pull-without-chunk", "pull", label, "points to \(address.hex), which is not stored")
                badPullKeys.append(Array(key))
                return true
            }
            if record.bin != k.bin || record.binID != binID {
                problem("pull-mismatch", "pull", label, "\(address.hex) is recorded at \(record.bin)/\(record.binID)")
                badPullKeys.append(Array(key))
                return true
            }
            if !seen.insert(address).inserted {
                problem("pull-duplicate", "pull", label, "\(address.hex) is indexed twice")
                badPullKeys.append(Array(key))
                return true
            }
            pullEntries[k] = address
            return true
        }
        for (address, record) in goodChunks where pullEntries[PullKey(bin: record.bin, binID: record.binID)] != address {
            problem("pull-missing", "chunks", address.hex, "no pull entry at \(record.bin)/\(record.binID)")
        }
    }

    private mutating func checkSlots() throws {
        let next = report.slotsNext
        var state = [UInt8](repeating: 0, count: Int(next))  // 0 none, 1 used, 2 free
        for record in goodChunks.values { state[Int(record.slot)] = 1 }
        try txn.scan(tables.freeSlots) { key, _ in
            report.freeSlotsChecked += 1
            guard let k = try? FreeSlotKey(key) else {
                problem("undecodable", "slots", Verifier.hex(key), "free-slot key of \(key.count) bytes")
                freeSlotKeys.append((Array(key), 0, false))
                return true
            }
            var ok = true
            if k.slot >= next {
                problem("slot-out-of-range", "slots", "\(k.slot)", "free slot ≥ slots_next \(next)")
                ok = false
            } else if state[Int(k.slot)] == 1 {
                problem("slot-used-and-free", "slots", "\(k.slot)", "slot is on the free list and used by a chunk")
                ok = false
            } else if state[Int(k.slot)] == 2 {
                problem("slot-double-free", "slots", "\(k.slot)", "slot is on the free list twice")
                ok = false
            } else {
                state[Int(k.slot)] = 2
            }
            freeSlotKeys.append((Array(key), k.slot, ok))
            return true
        }
        for slot in 0..<Int(next) where state[slot] == 0 {
            orphanSlots.append(UInt64(slot))
        }
        if !orphanSlots.isEmpty {
            // Slots of untrusted chunks become orphans once those go; report only the others.
            let untrustedSlots = Set(untrustedChunks.keys.compactMap { located[$0]?.record.slot })
            let lost = orphanSlots.filter { !untrustedSlots.contains($0) }
            if !lost.isEmpty {
                problem("slot-orphan", "slots", "\(lost.first!)", "\(lost.count) slot(s) neither used nor free, e.g. \(lost.prefix(5).map(String.init).joined(separator: ","))")
            }
        }
    }

    private mutating func checkIntervals() throws {
        try txn.scan(tables.intervals.database) { key, value in
            report.intervalRecordsChecked += 1
            guard let k = try? IntervalKey(decodingLMDB: key), Int(k.bin) < Proximity.binCount else {
                problem("undecodable", "intervals", Verifier.hex(key), "key of \(key.count) bytes")
                badIntervalKeys.append(Array(key))
                return true
            }
            let label = "\(k.peer.hex)/\(k.bin)"
            do {
                let record = try IntervalRecord(decodingLMDB: value)
                if IntervalSet(canonical: record.ranges) == nil {
                    problem("interval-not-canonical", "intervals", label, "ranges are not sorted and disjoint: \(record.ranges)")
                    badIntervalKeys.append(Array(key))
                }
            } catch {
                problem("undecodable", "intervals", label, "\(error)")
                badIntervalKeys.append(Array(key))
            }
            return true
        }
    }

    private mutating func checkFetch() throws {
        try txn.scan(tables.fetch.database) { key, value in
            report.fetchEntriesChecked += 1
            guard let address = Address32(raw: key), (try? FetchRecord(decodingLMDB: value)) != nil else {
                problem("undecodable", "fetch", Verifier.hex(key), "entry does not decode")
                badRecords.append((tables.fetch.database, Array(key)))
                return true
            }
            if goodChunks[address] != nil {
                problem("fetch-for-stored-chunk", "fetch", address.hex, "the chunk is already stored")
                fetchForStored.append(address)
            }
            return true
        }
    }

    /// Every pinned chunk must be stored (eviction skips them; a missing one was lost), and
    /// every pin record must decode. Counts are not checked against the trees: the store does
    /// not read trees.
    private mutating func checkPins() throws {
        report.pinsChecked = try checkDecodes(tables.pins.database, as: PinRecord.self, keyLength: 32)
        try txn.scan(tables.pinned.database) { key, value in
            guard let address = Address32(raw: key), let count = try? LEUInt64(decodingLMDB: value), count.value > 0 else {
                problem("undecodable", "pinned", Verifier.hex(key), "entry does not decode or counts 0")
                badRecords.append((tables.pinned.database, Array(key)))
                return true
            }
            if goodChunks[address] == nil {
                problem("pinned-missing", "pinned", address.hex, "a pinned chunk is not stored (or is corrupt)")
            }
            return true
        }
    }

    /// Checks that every record of `db` decodes; returns how many were checked.
    private mutating func checkDecodes<V: LMDBCodable>(_ db: Database, as: V.Type, keyLength: Int) throws -> Int {
        var checked = 0
        try txn.scan(db) { key, value in
            checked += 1
            do {
                guard key.count == keyLength else {
                    throw LMDBDecodingError(V.self, "key of \(key.count) bytes, want \(keyLength)")
                }
                _ = try V(decodingLMDB: value)
            } catch {
                problem("undecodable", db.name, Verifier.hex(key), "\(error)")
                badRecords.append((db, Array(key)))
            }
            return true
        }
        return checked
    }
}
