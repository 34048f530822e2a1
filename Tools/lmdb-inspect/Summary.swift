import ArgumentParser
import Foundation
import LMDB
import ShoalCore
import ShoalStore

struct Summary: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the store's identity, per-database and per-bin counts, map, readers and disk use.",
        discussion: """
            Counts per named database are LMDB's own (`mdb_stat -a` shows the same numbers); map \
            size, page size and the reader table match `mdb_stat -e` and `mdb_stat -r`. On-disk \
            bytes are those of data.mdb, lock.mdb and chunks.slots (allocated: st_blocks × 512; \
            apparent: st_size); payload bytes are the sum of the stored chunks' lengths.
            """)

    @OptionGroup var location: StoreLocation
    @OptionGroup var output: OutputOptions

    func run() throws {
        try runReporting(json: output.json) {
            try location.checkExists()
            // Before opening: asking the lock table needs this process not to hold the lock file.
            let otherUser = LockTable.otherUser(of: location.resolved)
            let report = try location.withReadOnlyStore { try SummaryReport(store: $0, otherUser: otherUser) }
            if output.json { Output.json(report) } else { Output.line(report.text) }
            return ExitStatus.ok
        }
    }
}

/// Everything `summary` prints.
struct SummaryReport: Encodable {
    struct DatabaseStat: Encodable {
        var name: String
        var entries: Int
        var depth: Int
        var branchPages: Int
        var leafPages: Int
        var overflowPages: Int
        var pages: Int

        init(name: String, _ s: Environment.Stat) {
            self.name = name
            (entries, depth, branchPages, leafPages, overflowPages, pages) =
                (s.entries, s.depth, s.branchPages, s.leafPages, s.overflowPages, s.pages)
        }
    }

    struct Bin: Encodable {
        var bin: Int
        var chunks: Int
        /// The last bin ID given out (0: none yet).
        var cursor: UInt64
    }

    struct Map: Encodable {
        var mapSizeBytes: Int
        var pageSize: Int
        var maxPages: Int
        var lastPageNumber: Int
        /// Pages 0…lastPageNumber: what `mdb_stat -e` calls "Number of pages used".
        var pagesUsed: Int
        var usedBytes: Int
        var lastTransactionID: Int
    }

    struct Reader: Encodable {
        var pid: Int
        /// The snapshot the reader holds; nil for a slot with no transaction running.
        var transactionID: Int?
    }

    struct Readers: Encodable {
        var maxReaders: Int
        /// Reader slots ever taken in the lock file (LMDB's high-water mark, `me_numreaders`).
        var slotsUsed: Int
        /// Slots held by a live process, as `mdb_stat -r` lists them.
        var active: [Reader]
    }

    struct File: Encodable {
        var name: String
        var exists: Bool
        var apparentBytes: UInt64
        var allocatedBytes: UInt64
    }

    struct Disk: Encodable {
        var files: [File]
        var apparentBytes: UInt64
        var allocatedBytes: UInt64
    }

    struct Payload: Encodable {
        /// Chunk records summed (a scan of `chunks` and `landing`).
        var chunks: Int
        var bytes: UInt64
        /// Records of `chunks` that do not decode (run `verify`).
        var undecodableRecords: Int
        var snapshotTransactionID: Int
        /// On-disk bytes per payload byte; nil with no payload.
        var allocatedPerPayloadByte: Double?
        var apparentPerPayloadByte: Double?
    }

    var directory: String
    var schemaVersion: UInt64
    var epoch: UInt64
    var overlay: String
    var createdAtMs: UInt64
    var createdAt: String?
    var storageRadius: UInt8
    /// The capacity last configured, in chunks; 0: unbounded.
    var capacityChunks: UInt64
    var chunks: Int
    var slotsNext: UInt64
    var freeSlots: Int
    /// The LMDB snapshot the counts were read from.
    var snapshotTransactionID: Int
    var databases: [DatabaseStat]
    var mainDatabase: DatabaseStat
    var bins: [Bin]
    var map: Map
    var readers: Readers
    /// Another process with the environment open when the summary started (a running node), if any.
    var openByPID: Int32?
    var disk: Disk
    var payload: Payload

    init(store: Store, otherUser: pid_t?) throws {
        directory = store.directory
        overlay = store.overlay.hex
        epoch = store.epoch
        openByPID = otherUser
        struct Counts {
            var schema: UInt64 = 0, created: UInt64 = 0, radius: UInt8 = 0, capacity: UInt64 = 0
            var chunks = 0, slotsNext: UInt64 = 0, freeSlots = 0, snapshot = 0
            var databases: [(name: String, stat: Environment.Stat)] = []
            var binCounts: [Int] = [], cursors: [UInt64] = []
        }
        let c = try store.read { r in
            var c = Counts()
            c.schema = try r.schemaVersion()
            c.created = try r.createdAtMs()
            c.radius = try r.radius()
            c.capacity = try r.capacityChunks()
            c.chunks = try r.chunkCount()
            c.slotsNext = try r.slotsNext()
            c.freeSlots = try r.freeSlotCount()
            c.snapshot = r.transactionID
            c.databases = try r.databaseStats()
            c.binCounts = try r.binCounts()
            c.cursors = try r.cursors()
            return c
        }
        schemaVersion = c.schema
        createdAtMs = c.created
        createdAt = Format.time(ms: c.created)
        storageRadius = c.radius
        capacityChunks = c.capacity
        chunks = c.chunks
        slotsNext = c.slotsNext
        freeSlots = c.freeSlots
        snapshotTransactionID = c.snapshot
        databases = c.databases.map { DatabaseStat(name: $0.name, $0.stat) }
        bins = c.binCounts.indices.map { Bin(bin: $0, chunks: c.binCounts[$0], cursor: c.cursors[$0]) }

        let env = store.environment
        mainDatabase = DatabaseStat(name: "", env.stat())
        let info = env.info()
        let pageSize = env.stat().pageSize
        map = Map(mapSizeBytes: info.mapSize, pageSize: pageSize,
                  maxPages: pageSize > 0 ? info.mapSize / pageSize : 0,
                  lastPageNumber: info.lastPageNumber, pagesUsed: info.lastPageNumber + 1,
                  usedBytes: (info.lastPageNumber + 1) * pageSize,
                  lastTransactionID: info.lastTransactionID)
        // No transaction of ours is running here, so the table lists other processes only.
        readers = Readers(maxReaders: info.maxReaders, slotsUsed: info.readersUsed,
                          active: env.readers().map { Reader(pid: $0.pid, transactionID: $0.transactionID) })

        let files = ["data.mdb", "lock.mdb", Schema.slotFileName].map { SummaryReport.file(store.directory, $0) }
        disk = Disk(files: files, apparentBytes: files.reduce(0) { $0 + $1.apparentBytes },
                    allocatedBytes: files.reduce(0) { $0 + $1.allocatedBytes })
        payload = try SummaryReport.payload(store)
        if payload.bytes > 0 {
            payload.allocatedPerPayloadByte = Double(disk.allocatedBytes) / Double(payload.bytes)
            payload.apparentPerPayloadByte = Double(disk.apparentBytes) / Double(payload.bytes)
        }
    }

    static func file(_ directory: String, _ name: String) -> File {
        var st = stat()
        guard stat(directory + "/" + name, &st) == 0 else {
            return File(name: name, exists: false, apparentBytes: 0, allocatedBytes: 0)
        }
        return File(name: name, exists: true, apparentBytes: UInt64(st.st_size),
                    allocatedBytes: UInt64(st.st_blocks) * 512)
    }

    /// Sums the lengths of every record of `chunks`, in its own read snapshot. Records that do
    /// not decode are counted, not fatal: a damaged store still gets its summary.
    static func payload(_ store: Store) throws -> Payload {
        let db = try store.environment.openDatabase(Schema.Name.chunks)
        let landing = try store.environment.openDatabase(Schema.Name.landing)
        return try store.environment.read { txn in
            var p = Payload(chunks: 0, bytes: 0, undecodableRecords: 0, snapshotTransactionID: txn.id)
            try txn.scan(db) { _, value in
                if let record = try? ChunkRecord(decodingLMDB: value) {
                    p.chunks += 1
                    p.bytes += UInt64(record.length)
                } else {
                    p.undecodableRecords += 1
                }
                return true
            }
            // Chunks not yet merged into `chunks`.
            try txn.scan(landing) { _, value in
                if let entry = try? LandingEntry(decodingLMDB: value) {
                    p.chunks += 1
                    p.bytes += UInt64(entry.record.length)
                } else {
                    p.undecodableRecords += 1
                }
                return true
            }
            return p
        }
    }

    var text: String {
        var lines: [String] = []
        func row(_ label: String, _ value: String) { lines.append(Format.pad(label, 14) + value) }
        row("store", directory)
        row("schema", "version \(schemaVersion)")
        row("epoch", "\(epoch)")
        row("overlay", overlay)
        row("created", "\(Format.timeText(ms: createdAtMs)) (\(createdAtMs) ms)")
        row("radius", "\(storageRadius)")
        row("capacity", capacityChunks == 0 ? "unbounded" : "\(capacityChunks) chunks")
        row("chunks", "\(chunks) (slots handed out \(slotsNext), free \(freeSlots))")
        row("snapshot", "transaction \(snapshotTransactionID)")
        if let openByPID { row("in use", "open by process \(openByPID) (a running node?)") }

        lines.append("")
        lines.append(Format.pad("database", 12) + ["entries", "depth", "branch", "leaf", "overflow", "pages"]
            .map { Format.padLeft($0, 10) }.joined())
        var main = mainDatabase
        main.name = "(main)"
        for d in databases + [main] {
            lines.append(Format.pad(d.name, 12) + [d.entries, d.depth, d.branchPages, d.leafPages, d.overflowPages, d.pages]
                .map { Format.padLeft($0, 10) }.joined())
        }

        lines.append("")
        let used = bins.filter { $0.chunks > 0 || $0.cursor > 0 }
        if used.isEmpty {
            lines.append("bins          none used")
        } else {
            lines.append(Format.pad("bin", 12) + Format.padLeft("chunks", 10) + Format.padLeft("cursor", 12))
            for b in used {
                lines.append(Format.pad("\(b.bin)", 12) + Format.padLeft(b.chunks, 10) + Format.padLeft(b.cursor, 12))
            }
        }

        lines.append("")
        row("map size", "\(map.mapSizeBytes) bytes (\(Format.bytes(map.mapSizeBytes))), page size \(map.pageSize)")
        row("map used", "\(map.pagesUsed) pages, \(map.usedBytes) bytes (\(Format.bytes(map.usedBytes)), \(Format.percent(map.usedBytes, of: map.mapSizeBytes))); last page \(map.lastPageNumber), last transaction \(map.lastTransactionID)")
        row("readers", "max \(readers.maxReaders), slots used \(readers.slotsUsed), active \(readers.active.count)")
        for r in readers.active {
            lines.append("  pid \(r.pid)  " + (r.transactionID.map { "transaction \($0)" } ?? "no transaction"))
        }

        lines.append("")
        lines.append(Format.pad("file", 14) + Format.padLeft("allocated", 16) + Format.padLeft("apparent", 16))
        for f in disk.files {
            lines.append(Format.pad(f.name, 14) + (f.exists
                ? Format.padLeft(f.allocatedBytes, 16) + Format.padLeft(f.apparentBytes, 16)
                : Format.padLeft("missing", 16)))
        }
        lines.append(Format.pad("total", 14) + Format.padLeft(disk.allocatedBytes, 16) + Format.padLeft(disk.apparentBytes, 16))
        var payloadLine = "\(payload.bytes) bytes (\(Format.bytes(payload.bytes))) in \(payload.chunks) chunks"
        if payload.undecodableRecords > 0 { payloadLine += ", \(payload.undecodableRecords) undecodable records (run verify)" }
        row("payload", payloadLine)
        row("on disk", "\(Format.ratio(payload.allocatedPerPayloadByte)) the payload allocated, \(Format.ratio(payload.apparentPerPayloadByte)) apparent")
        return lines.joined(separator: "\n")
    }
}
