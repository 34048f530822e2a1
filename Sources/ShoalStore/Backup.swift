import LMDB
import ShoalCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What `backup` wrote.
public struct BackupReport: Sendable, Codable, Equatable {
    public var destination: String
    public var chunks: Int
    public var payloadBytes: UInt64
    /// The source snapshot copied.
    public var transactionID: Int
}

extension Store {
    /// Writes a compacted copy of the store, as of one read snapshot, to `destination` (a
    /// directory that must not exist or be empty). Payloads are renumbered into dense slots and
    /// free space is left behind; epoch, overlay, bin IDs, cursors and every sync record are
    /// kept, so the copy is the same store. Safe on a live store.
    ///
    /// The copy is marked a store (schema version written) only by its last transaction, so an
    /// interrupted backup is never mistaken for a store.
    public func backup(to destination: String, chunksPerCommit: Int = 50_000) throws(StoreError) -> BackupReport {
        if mkdir(destination, 0o700) != 0 && errno != EEXIST {
            throw StoreError.system("mkdir(\(destination))", errno: errno)
        }
        if access(destination + "/data.mdb", F_OK) == 0 || access(destination + "/" + Schema.slotFileName, F_OK) == 0 {
            throw StoreError(.invalidBatch, "\(destination) already holds a store; back up into a new directory")
        }
        do {
            var options = Environment.Options()
            options.maxDatabases = UInt32(Schema.Name.all.count + 4)
            options.mapSize = max(environment.info().mapSize, 1 << 30)
            let dest = try Environment(path: destination, options: options)
            defer { dest.close() }
            let destSlots = try SlotFile(path: destination + "/" + Schema.slotFileName, slotSize: Schema.slotSize, readOnly: false)
            let names = Schema.Name.all
            let dbs = try dest.write { txn in try names.map { try txn.openDatabase($0, flags: 0x40000 /* MDB_CREATE */) } }
            let destDB = Dictionary(uniqueKeysWithValues: zip(names, dbs))

            return try environment.read { src in
                var report = BackupReport(destination: destination, chunks: 0, payloadBytes: 0, transactionID: src.id)
                // Everything but chunks and the free list is copied verbatim, in one transaction.
                try dest.write { txn in
                    for (name, db) in [(Schema.Name.meta, tables.meta), (Schema.Name.pull, tables.pull),
                                       (Schema.Name.intervals, tables.intervals.database), (Schema.Name.fetch, tables.fetch.database),
                                       (Schema.Name.peers, tables.peers.database), (Schema.Name.downloads, tables.downloads.database),
                                       (Schema.Name.journal, tables.journal.database),
                                       (Schema.Name.pins, tables.pins.database), (Schema.Name.pinned, tables.pinned.database)] {
                        try src.scan(db) { key, value in
                            if name == Schema.Name.meta,
                               key.elementsEqual(Schema.MetaKey.schemaVersion.utf8) || key.elementsEqual(Schema.MetaKey.slotsNext.utf8) {
                                return true
                            }
                            try txn.append(destDB[name]!, key, value)
                            return true
                        }
                    }
                }
                // Chunks in address order, each into the next dense slot.
                var buffer = [UInt8](repeating: 0, count: Schema.slotSize)
                var pending: [([UInt8], ChunkRecord)] = []
                func flush() throws {
                    guard !pending.isEmpty else { return }
                    try destSlots.sync()
                    try dest.write { txn in
                        for (key, record) in pending { try txn.append(destDB[Schema.Name.chunks]!, key, record.lmdbBytes) }
                    }
                    pending.removeAll(keepingCapacity: true)
                }
                let slotsNext = try src.metaUInt64(tables.meta, Schema.MetaKey.slotsNext) ?? 0
                // `chunks` and `landing` in one address order: the copy holds every chunk in `chunks`.
                try Store.forEachRecord(txn: src, tables: tables) { address, stored in
                    var record = stored
                    let key = address.bytes
                    guard record.slot < slotsNext else {
                        throw StoreError(.corrupt, "chunk \(address.hex) points to slot \(record.slot), beyond slots_next \(slotsNext); verify and repair the store before backing it up")
                    }
                    try buffer.withUnsafeMutableBytes { raw in
                        try slotFile.read(slot: record.slot, length: Int(record.length), into: raw)
                        record.slot = UInt64(report.chunks)
                        try destSlots.write(slot: record.slot, payload: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(raw)[0..<Int(record.length)]))
                    }
                    pending.append((key, record))
                    report.chunks += 1
                    report.payloadBytes += UInt64(record.length)
                    if pending.count >= chunksPerCommit { try flush() }
                    return true
                }
                try flush()
                try destSlots.sync()
                try dest.write { txn in
                    let meta = destDB[Schema.Name.meta]!
                    try txn.putMeta(meta, Schema.MetaKey.slotsNext, UInt64(report.chunks))
                    try txn.putMeta(meta, Schema.MetaKey.schemaVersion, Schema.version)
                }
                return report
            }
        } catch {
            throw StoreError.wrap(error, "backing up to \(destination)")
        }
    }
}
