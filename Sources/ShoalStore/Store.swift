import Locking
import LMDB
import ShoalCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Shoal's store: every chunk and every piece of sync state, in one LMDB environment plus a
/// slot file for chunk payloads.
///
/// All state changes in write transactions, and the write-ahead rule holds: a caller learns
/// that something was stored only after `mdb_txn_commit` returned success, and a payload is on
/// disk before the transaction that points to its slot commits.
public final class Store: @unchecked Sendable {
    public struct Options: Sendable {
        /// The node's overlay. Required to create a store; checked against the stored one after.
        public var overlay: OverlayAddress?
        /// Keep at most this many chunks, evicting the farthest bins first; nil for unbounded.
        public var capacityChunks: UInt64?
        public var readOnly = false
        public var mapSize = 1 << 30
        public var mapSizeMax = 1 << 40
        public var maxReaders: UInt32 = 126
        /// `landing` is merged into `chunks` once it holds this many chunks (and whenever the
        /// writer is idle). Larger means fewer, bigger merges, and a larger in-memory index.
        public var landingMax = 65_536
        /// Wall-clock milliseconds since 1970 (injected so tests can fix time).
        public var now: @Sendable () -> UInt64 = { Store.wallClockMs() }

        public init(overlay: OverlayAddress? = nil, capacityChunks: UInt64? = nil, readOnly: Bool = false) {
            self.overlay = overlay
            self.capacityChunks = capacityChunks
            self.readOnly = readOnly
        }
    }

    public let directory: String
    public let environment: Environment
    public let options: Options
    /// The overlay bins are computed against.
    public let overlay: OverlayAddress
    /// Fixed when the store was created; a new epoch tells peers our store was lost.
    public let epoch: UInt64
    let slotFile: SlotFile
    let tables: Tables
    /// Address → `landing` sequence, kept by a writable store (nil when read-only).
    let landingIndex: LandingIndex?
    /// How a read-only store finds `landing` entries (nil when writable).
    let landingSnapshot: LandingSnapshot?
    /// Held by a writable store until `close()`: one writer per store, in any process.
    private let writerLock: WriterLock?
    /// The write failure that stopped writes (decision 0011), or nil while writes go on.
    private let stoppingFailure = Locked<StoreError?>(nil)

    struct Tables: Sendable {
        let meta: Database
        let chunks: Table<ChunkAddress, ChunkRecord>
        let pull: Database
        let intervals: Table<IntervalKey, IntervalRecord>
        let fetch: Table<ChunkAddress, FetchRecord>
        let peers: Table<OverlayAddress, PeerRecord>
        let downloads: Table<ChunkAddress, DownloadRecord>
        let journal: Table<UInt64, JournalEntry>
        /// Key: freeing transaction ID (8, BE) ‖ slot (8, BE); empty value. Ordered by when freed,
        /// so the reusable slots are a prefix.
        let freeSlots: Database
        let landing: Table<UInt64, LandingEntry>
        let pins: Table<ChunkAddress, PinRecord>
        let pinned: Table<ChunkAddress, LEUInt64>
    }

    /// Finds the LMDB directory in `path`: the path itself if it holds `data.mdb`, else
    /// `path/store` (a node's data directory). For a new store, `path/store` when `path` looks
    /// like a data directory is not guessed: the path is used as given.
    public static func locate(_ path: String) -> String {
        if access(path + "/data.mdb", F_OK) == 0 { return path }
        if access(path + "/store/data.mdb", F_OK) == 0 { return path + "/store" }
        return path
    }

    /// Opens (or, writable, creates) the store in `directory`, running any pending migration.
    public init(directory: String, options: Options = Options()) throws(StoreError) {
        let dir = options.readOnly ? Store.locate(directory) : directory
        if !options.readOnly {
            if mkdir(dir, 0o700) != 0 && errno != EEXIST {
                throw StoreError.system("mkdir(\(dir))", errno: errno)
            }
        } else if access(dir + "/data.mdb", F_OK) != 0 {
            throw StoreError(.notAStore, "\(directory) holds no data.mdb")
        }
        self.directory = dir
        self.options = options
        // Before the environment opens: a second writer learns it at once, and touches nothing.
        writerLock = options.readOnly ? nil : try WriterLock(directory: dir)
        var envOptions = Environment.Options()
        // A read-only open takes the map size the file records (0: "use the size in the file").
        envOptions.mapSize = options.readOnly ? 0 : options.mapSize
        envOptions.mapSizeMax = options.mapSizeMax
        envOptions.maxReaders = options.maxReaders
        envOptions.readOnly = options.readOnly
        envOptions.maxDatabases = UInt32(Schema.Name.all.count + 4)
        do {
            environment = try Environment(path: dir, options: envOptions)
        } catch {
            throw StoreError.wrap(error, "opening the LMDB environment in \(dir)")
        }
        do {
            let version = try Migrations.currentVersion(of: environment)
            if version > Schema.version {
                throw StoreError(.schemaTooNew,
                                 "store schema is version \(version); this build understands up to \(Schema.version)")
            }
            if version < Schema.version {
                guard !options.readOnly else {
                    if version == 0 { throw StoreError(.notAStore, "\(dir) holds an LMDB environment but no Shoal store") }
                    throw StoreError(.migrationNeeded, "store schema \(version) needs migrating to \(Schema.version); open it writable")
                }
                guard version > 0 || options.overlay != nil else {
                    throw StoreError(.notAStore, "creating a store needs the node's overlay")
                }
                try Migrations.run(on: environment, from: version, options: options)
            }
            let tables = try Store.openTables(environment)
            self.tables = tables
            let environment = self.environment
            let (storedOverlay, storedEpoch) = try environment.read { txn in
                (try txn.get(tables.meta, Schema.MetaKey.overlay.lmdbBytes).flatMap { Address32(bytes: $0) },
                 try txn.metaUInt64(tables.meta, Schema.MetaKey.epoch))
            }
            guard let storedOverlay, let storedEpoch else {
                throw StoreError(.corrupt, "meta has no overlay or epoch")
            }
            if let wanted = options.overlay, wanted != storedOverlay {
                throw StoreError(.overlayMismatch, "store belongs to overlay \(storedOverlay), not \(wanted)")
            }
            overlay = storedOverlay
            epoch = storedEpoch
            let capacity = options.capacityChunks ?? 0
            if !options.readOnly, try environment.read({ try $0.metaUInt64(tables.meta, Schema.MetaKey.capacity) }) != capacity {
                try environment.write { txn in try txn.putMeta(tables.meta, Schema.MetaKey.capacity, capacity) }
            }
            slotFile = try SlotFile(path: dir + "/" + Schema.slotFileName, slotSize: Schema.slotSize,
                                    readOnly: options.readOnly)
            if options.readOnly {
                landingIndex = nil
                landingSnapshot = LandingSnapshot()
            } else {
                landingSnapshot = nil
                let index = LandingIndex()
                try environment.read { try index.rebuild(from: $0, tables: tables) }
                landingIndex = index
            }
        } catch {
            environment.close()
            throw StoreError.wrap(error, "opening the store in \(dir)")
        }
    }

    /// Closes the environment and, if writable, lets another writer open the store; the store
    /// must not be used after.
    public func close() {
        environment.close()
        writerLock?.release()
    }

    static func openTables(_ env: Environment) throws -> Tables {
        let n = Schema.Name.self
        return Tables(
            meta: try env.openDatabase(n.meta),
            chunks: Table(try env.openDatabase(n.chunks)),
            pull: try env.openDatabase(n.pull),
            intervals: Table(try env.openDatabase(n.intervals)),
            fetch: Table(try env.openDatabase(n.fetch)),
            peers: Table(try env.openDatabase(n.peers)),
            downloads: Table(try env.openDatabase(n.downloads)),
            journal: Table(try env.openDatabase(n.journal)),
            freeSlots: try env.openDatabase(n.slots),
            landing: Table(try env.openDatabase(n.landing)),
            pins: Table(try env.openDatabase(n.pins)),
            pinned: Table(try env.openDatabase(n.pinned)))
    }

    public static func wallClockMs() -> UInt64 { SystemClock().wallMs() }

    // MARK: Writing

    /// Applies `batch` in one write transaction and returns once it has committed.
    @discardableResult
    public func apply(_ batch: StoreBatch) throws(StoreError) -> BatchResult {
        try applyGroup([batch])[0]
    }

    /// Applies several batches in one transaction (a group commit): all commit or none do.
    public func applyGroup(_ batches: [StoreBatch]) throws(StoreError) -> [BatchResult] {
        guard !options.readOnly else { throw StoreError(.readOnly, "the store is open read-only") }
        try refuseWritesIfStopped()
        for batch in batches {
            for seal in batch.seals where Int(seal.bin) >= Proximity.binCount {
                throw StoreError(.invalidBatch, "interval seal for bin \(seal.bin) (bins are 0…31)")
            }
        }
        do {
            let (results, changes) = try environment.write { txn in
                var writer = try WriteContext(store: self, txn: txn)
                var results = try batches.map { try writer.apply($0) }
                let (evicted, radius) = try writer.evictIfOverCapacity()
                try writer.finish(merge: writer.landingCount >= options.landingMax)
                for i in results.indices {
                    results[i].radius = radius
                    results[i].transactionID = txn.id
                }
                if !results.isEmpty { results[results.count - 1].evicted = evicted }
                return (results, writer.landingChanges)
            }
            landingIndex?.committed(changes, transactionID: results.first?.transactionID ?? 0)
            return results
        } catch {
            throw stopWritesIfUnsafe(StoreError.wrap(error, "applying a batch"))
        }
    }

    /// Merges `landing` into `chunks` in one write transaction (the writer does this when idle,
    /// and `apply` when `landing` is full). Returns the chunks moved.
    @discardableResult
    public func mergeLanding() throws(StoreError) -> Int {
        guard !options.readOnly else { throw StoreError(.readOnly, "the store is open read-only") }
        try refuseWritesIfStopped()
        do {
            let (moved, changes, id) = try environment.write { txn in
                var writer = try WriteContext(store: self, txn: txn)
                try writer.finish(merge: true)
                return (writer.landingChanges.removed.count, writer.landingChanges, txn.id)
            }
            landingIndex?.committed(changes, transactionID: id)
            return moved
        } catch {
            throw stopWritesIfUnsafe(StoreError.wrap(error, "merging landing into chunks"))
        }
    }

    // MARK: Write failures (decision 0011)

    /// The failure that stopped writes, or nil while writes go on. Once set it stays until the
    /// store is closed: reopening (restarting the process) trusts LMDB's last committed state.
    public var writeFailure: StoreError? { stoppingFailure.withLock { $0 } }

    func refuseWritesIfStopped() throws(StoreError) {
        if let first = writeFailure { throw Store.writesStopped(by: first) }
    }

    /// Stops writes if `error` leaves the disk in a state no later write can be trusted on,
    /// and returns what the caller is to see: the refusal, naming the first such failure, or
    /// `error` itself when the store goes on (a full disk, a bad batch).
    func stopWritesIfUnsafe(_ error: StoreError) -> StoreError {
        guard error.code == .writerFailed || Store.stopsWrites(error) else { return error }
        let first = stoppingFailure.withLock { failure in
            if failure == nil { failure = error.code == .writerFailed ? error.underlying as? StoreError ?? error : error }
            return failure!
        }
        return Store.writesStopped(by: first)
    }

    static func writesStopped(by first: StoreError) -> StoreError {
        StoreError(.writerFailed, "writes to the store stopped after a write failed; reads go on. "
                   + "Check the disk, then restart: the store reopens at its last commit", underlying: first)
    }

    /// Whether a failed write makes every later write unsafe:
    ///
    /// - any failed `fdatasync`: after it the kernel may have dropped the dirty pages and marked
    ///   them clean, so a retried sync "succeeds" without the data (PostgreSQL, 2018);
    /// - `EIO` (or any errno but a full disk) from `pwrite` or `mdb_txn_commit`;
    /// - `MDB_PANIC`: LMDB itself refuses after a failed meta page write.
    ///
    /// `ENOSPC` and `EDQUOT` from `pwrite` or the commit fail only their batch: nothing it wrote
    /// is referenced by a committed record, and the next batch may find space again.
    static func stopsWrites(_ error: StoreError) -> Bool {
        if let call = error.systemCall {
            switch call.name {
            case "fdatasync": return true
            case "pwrite": return !isDiskFull(call.errno)
            default: return false
            }
        }
        if let lmdb = error.underlying as? LMDBError {
            if lmdb.isPanic { return true }
            if lmdb.operation == "mdb_txn_commit" && lmdb.code > 0 { return !isDiskFull(lmdb.code) }
        }
        return false
    }

    static func isDiskFull(_ code: Int32) -> Bool { code == ENOSPC || code == EDQUOT }

    // MARK: Reading

    /// Runs `body` in one read transaction: every read inside sees the same snapshot.
    public func read<R>(_ body: (StoreReader) throws -> R) throws(StoreError) -> R {
        do {
            return try environment.read { txn in try body(StoreReader(store: self, txn: txn)) }
        } catch {
            throw StoreError.wrap(error, "reading the store")
        }
    }

    /// The chunk at `address`, or nil. With `verify`, the payload is re-hashed against the address.
    public func get(_ address: ChunkAddress, verify: Bool = false) throws(StoreError) -> Chunk? {
        try read { try $0.chunk(address, verify: verify) }
    }

    /// Which of `addresses` are stored, in one snapshot.
    public func has(_ addresses: [ChunkAddress]) throws(StoreError) -> [Bool] {
        try read { r in try addresses.map { try r.has($0) } }
    }

    public func has(_ address: ChunkAddress) throws(StoreError) -> Bool {
        try read { try $0.has(address) }
    }

    /// The number of chunks stored.
    public func count() throws(StoreError) -> Int {
        try read { try $0.chunkCount() }
    }
}
