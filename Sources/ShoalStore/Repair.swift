import LMDB
import ShoalCore

/// What `repair` does (or, on a dry run, would do), one action per line.
public struct RepairPlan: Sendable, Codable, Equatable {
    public struct Action: Sendable, Codable, Equatable, CustomStringConvertible {
        /// e.g. `drop-chunk`, `delete-pull-entry`, `add-pull-entry`, `set-cursor`, `free-slot`,
        /// `delete-free-slot`, `reset-intervals`, `delete-fetch-entry`, `delete-record`, `reindex-chunk`.
        public var kind: String
        public var database: String
        public var key: String
        public var detail: String

        public var description: String { "\(kind) [\(database) \(key)]: \(detail)" }
    }

    public var actions: [Action] = []
    /// Problems verify reported that repair cannot mend (e.g. a missing schema version).
    public var unrepairable: [VerifyReport.Problem] = []
    /// The problems the plan was made from.
    public var problemsFound = 0
    /// The transaction the repair committed in; 0 for a dry run.
    public var transactionID = 0

    public var isEmpty: Bool { actions.isEmpty }
}

extension Store {
    /// The repair plan for the store as it is now, changing nothing (`repair --dry-run`).
    public func repairPlan() throws(StoreError) -> RepairPlan {
        try read { reader in
            let repairer = Repairer(store: self, txn: reader.txn)
            return try repairer.plan(apply: false)
        }
    }

    /// Makes and applies the repair plan in one write transaction: drops what cannot be
    /// trusted, rebuilds indexes from what can. The node must not be running.
    @discardableResult
    public func repair() throws(StoreError) -> RepairPlan {
        guard !options.readOnly else { throw StoreError(.readOnly, "repair needs the store open writable") }
        try refuseWritesIfStopped()
        do {
            let plan = try environment.write { txn in
                let repairer = Repairer(store: self, txn: txn)
                var plan = try repairer.plan(apply: true)
                plan.transactionID = txn.id
                return plan
            }
            // Repair may have dropped `landing` entries: the index starts again from disk.
            if let landingIndex { try environment.read { try landingIndex.rebuild(from: $0, tables: tables) } }
            return plan
        } catch {
            throw stopWritesIfUnsafe(StoreError.wrap(error, "repairing the store"))
        }
    }
}

/// Plans, and with `apply` performs, the repair. Both paths run the same code so the dry run
/// shows exactly what the real run does.
final class Repairer {
    let store: Store
    let txn: Transaction
    var tables: Store.Tables { store.tables }
    var plan = RepairPlan()
    var apply = false

    init(store: Store, txn: Transaction) {
        self.store = store
        self.txn = txn
    }

    private func act(_ kind: String, _ db: String, _ key: String, _ detail: String, _ work: () throws -> Void) rethrows {
        plan.actions.append(.init(kind: kind, database: db, key: key, detail: detail))
        if apply { try work() }
    }

    func plan(apply: Bool) throws -> RepairPlan {
        self.apply = apply
        var v = Verifier(store: store, txn: txn)
        let report = try v.run()
        plan.problemsFound = report.problems.count
        plan.unrepairable = report.problems.filter { $0.database == "meta" }
        let freedIn = UInt64(txn.id)
        var maxBinID = v.cursors

        // 1. Chunks that cannot be trusted go, and so do intervals that may cover them.
        var droppedSlots: [UInt64] = []
        for (address, reason) in v.untrustedChunks.sorted(by: { $0.key < $1.key }) {
            let record = v.located[address]?.record
            switch v.located[address]?.location {
            case .landing(let seq):
                try act("drop-chunk", "landing", address.hex, reason) { try txn.delete(tables.landing, seq) }
            default:
                try act("drop-chunk", "chunks", address.hex, reason) { try txn.delete(tables.chunks, address) }
            }
            if let record, record.slot < v.report.slotsNext, !v.goodChunks.values.contains(where: { $0.slot == record.slot }) {
                droppedSlots.append(record.slot)
            }
        }
        try resetIntervals(covering: Array(v.untrustedChunks.keys))

        // A second record of an address (in `landing`) goes; the first stays.
        for key in v.duplicateLandingKeys {
            try act("delete-duplicate", "landing", Repairer.hex(key), "the chunk is recorded elsewhere too") {
                try txn.delete(tables.landing.database, key)
            }
        }

        // 2. Index entries that point nowhere, or elsewhere.
        for key in v.badPullKeys {
            try act("delete-pull-entry", "pull", Repairer.hex(key), "does not match a trusted chunk") {
                try txn.delete(tables.pull, key)
            }
        }
        for key in v.badCursorKeys {
            try act("delete-cursor", "pull", Repairer.hex(key), "undecodable; rebuilt below") { try txn.delete(tables.pull, key) }
        }

        // 3. Trusted chunks missing from the index are indexed again; one in the wrong bin
        //    gets a fresh bin ID in its right bin.
        for (address, record) in v.goodChunks.sorted(by: { $0.key < $1.key }) {
            let rightBin = UInt8(Proximity.bin(of: address, relativeTo: store.overlay))
            if record.bin != rightBin || record.binID == 0 {
                let binID = maxBinID[Int(rightBin)] + 1
                maxBinID[Int(rightBin)] = binID
                let old = PullKey(bin: record.bin, binID: record.binID)
                let updated = ChunkRecord(span: record.span, slot: record.slot, binID: binID, length: record.length, bin: rightBin)
                try act("reindex-chunk", "chunks", address.hex, "bin \(record.bin)/\(record.binID) → \(rightBin)/\(binID)") {
                    if v.pullEntries[old] == address { try txn.delete(tables.pull, old.lmdbBytes) }
                    if case .landing(let seq) = v.located[address]?.location {
                        try txn.put(tables.landing, seq, LandingEntry(address: address, record: updated))
                    } else {
                        try txn.put(tables.chunks, address, updated)
                    }
                    try txn.put(tables.pull, PullKey(bin: rightBin, binID: binID).lmdbBytes, address.bytes)
                }
                continue
            }
            maxBinID[Int(record.bin)] = max(maxBinID[Int(record.bin)], record.binID)
            let key = PullKey(bin: record.bin, binID: record.binID)
            if v.pullEntries[key] != address {
                try act("add-pull-entry", "pull", "\(record.bin)/\(record.binID)", address.hex) {
                    try txn.put(tables.pull, key.lmdbBytes, address.bytes)
                }
            }
        }
        for key in v.pullEntries.keys { maxBinID[Int(key.bin)] = max(maxBinID[Int(key.bin)], key.binID!) }

        // 4. Cursors never below a bin ID in use.
        for bin in 0..<Proximity.binCount where maxBinID[bin] > v.cursors[bin] || v.badCursorKeys.contains(PullKey.cursor(UInt8(bin)).lmdbBytes) {
            try act("set-cursor", "pull", "cursor \(bin)", "\(v.cursors[bin]) → \(maxBinID[bin])") {
                try txn.put(tables.pull, PullKey.cursor(UInt8(bin)).lmdbBytes, LEUInt64(maxBinID[bin]).lmdbBytes)
            }
        }

        // 5. The free list: wrong entries out, every unaccounted slot in. Freed now, so a reader
        //    still holding an older snapshot keeps its view until it ends.
        for entry in v.freeSlotKeys where !entry.ok {
            try act("delete-free-slot", "slots", "\(entry.slot)", "not a valid free slot") { try txn.delete(tables.freeSlots, entry.key) }
        }
        let freedByDrop = Set(droppedSlots)
        for slot in Set(v.orphanSlots).union(freedByDrop).sorted() {
            try act("free-slot", "slots", "\(slot)", freedByDrop.contains(slot) ? "slot of a dropped chunk" : "slot neither used nor free") {
                try txn.put(tables.freeSlots, FreeSlotKey(freedIn: freedIn, slot: slot).bytes, [UInt8]())
            }
        }

        // 6. Records that do not decode, damaged interval sets, fetch entries for stored chunks.
        for key in v.badIntervalKeys {
            try act("reset-intervals", "intervals", Repairer.hex(key), "damaged interval record") {
                try txn.delete(tables.intervals.database, key)
            }
        }
        for address in v.fetchForStored {
            try act("delete-fetch-entry", "fetch", address.hex, "the chunk is already stored") { try txn.delete(tables.fetch, address) }
        }
        for (db, key) in v.badRecords {
            try act("delete-record", db.name, Repairer.hex(key), "does not decode") { try txn.delete(db, key) }
        }
        return plan
    }

    /// Deletes every interval record whose (peer, bin) may have covered one of `addresses`:
    /// the chunk lies in the peer's bin `bin(address, peer)`.
    private func resetIntervals(covering addresses: [ChunkAddress]) throws {
        guard !addresses.isEmpty else { return }
        var doomed: [(IntervalKey, ChunkAddress)] = []
        try txn.scan(tables.intervals.database) { key, _ in
            guard let k = try? IntervalKey(decodingLMDB: key) else { return true }
            if let a = addresses.first(where: { Proximity.bin(of: $0, relativeTo: k.peer) == Int(k.bin) }) {
                doomed.append((k, a))
            }
            return true
        }
        for (key, address) in doomed {
            try act("reset-intervals", "intervals", "\(key.peer.hex)/\(key.bin)", "may cover dropped chunk \(address.hex)") {
                try txn.delete(tables.intervals, key)
            }
        }
    }

    static func hex(_ bytes: [UInt8]) -> String { bytes.hexEncoded }
}
