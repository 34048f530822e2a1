import Locking
import CLMDB
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An LMDB environment: one directory holding `data.mdb` and `lock.mdb`.
///
/// Transactions are scoped to closures: `read { txn in … }` and `write { txn in … }`. A write
/// commits when its closure returns and aborts when it throws; nothing it did is visible to
/// anyone until `mdb_txn_commit` has returned success.
///
/// The environment is opened with `MDB_NOTLS`, so a read transaction belongs to the
/// transaction object rather than to the thread (Swift tasks move between threads). The
/// durability-trading flags (`MDB_NOSYNC`, `MDB_NOMETASYNC`, `MDB_WRITEMAP`, `MDB_MAPASYNC`) are
/// never set: a commit that returned is on disk.
public final class Environment: @unchecked Sendable {
    public struct Options: Sendable {
        /// Initial map size in bytes; the map grows on `MDB_MAP_FULL` (see `mapSizeMax`).
        public var mapSize: Int = 1 << 30
        /// The largest map this environment grows to before `MDB_MAP_FULL` is given up on.
        public var mapSizeMax: Int = 1 << 40
        public var maxDatabases: UInt32 = 16
        public var maxReaders: UInt32 = 126
        /// Open with `MDB_RDONLY`: for inspecting a store, even one a live process writes to.
        public var readOnly: Bool = false
        /// File mode for newly created `data.mdb` and `lock.mdb`.
        public var fileMode: mode_t = 0o600

        public init() {}
    }

    /// Canonical paths of the environments open in this process. LMDB forbids opening one
    /// environment twice in a process: closing either would drop the other's POSIX locks.
    private static let openPaths = Locked<Set<String>>([])

    let env: OpaquePointer
    public let path: String
    public let options: Options
    let resizeLock = RWLock()
    private let closed = Locked(false)
    /// Stale reader slots (of dead processes) cleared when this environment was opened.
    public let staleReadersCleared: Int
    /// Transactions begun and not yet ended, in this process. Counts only: they guard no
    /// other memory, so relaxed atomics do (one uncontended add per begin and per end, beside
    /// the shared `resizeLock` every transaction already takes).
    private let readsOpen = Atomic<Int>(0)
    private let writesOpen = Atomic<Int>(0)

    public init(path: String, options: Options = Options()) throws {
        self.options = options
        var resolved = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard realpath(path, &resolved) != nil else {
            throw LMDBError(code: errno, operation: "open(\(path))",
                            message: String(cString: strerror(errno)))
        }
        let canonical = String(decoding: resolved.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        self.path = canonical
        let inserted = Environment.openPaths.withLock { $0.insert(canonical).inserted }
        guard inserted else {
            throw LMDBError.usage("mdb_env_open(\(canonical))",
                                  "this environment is already open in this process", code: EBUSY)
        }
        var handle: OpaquePointer?
        do {
            try LMDBError.check(mdb_env_create(&handle), "mdb_env_create")
            guard let handle else { throw LMDBError.usage("mdb_env_create", "no handle") }
            do {
                try LMDBError.check(mdb_env_set_maxdbs(handle, MDB_dbi(options.maxDatabases)),
                                    "mdb_env_set_maxdbs")
                try LMDBError.check(mdb_env_set_maxreaders(handle, options.maxReaders),
                                    "mdb_env_set_maxreaders")
                try LMDBError.check(mdb_env_set_mapsize(handle, options.mapSize), "mdb_env_set_mapsize")
                var flags = UInt32(MDB_NOTLS)
                if options.readOnly { flags |= UInt32(MDB_RDONLY) }
                try LMDBError.check(mdb_env_open(handle, canonical, flags, options.fileMode),
                                    "mdb_env_open(\(canonical))")
                // "Check for stale entries in the reader lock table" (lmdb.h): a process killed
                // with SIGKILL leaves its reader slot behind, which would pin old pages forever.
                var dead: Int32 = 0
                try LMDBError.check(mdb_reader_check(handle, &dead), "mdb_reader_check")
                staleReadersCleared = Int(dead)
                // A file written by another process may already be larger than our map.
                if !options.readOnly {
                    try LMDBError.check(mdb_env_set_mapsize(handle, 0), "mdb_env_set_mapsize(0)")
                }
            } catch {
                mdb_env_close(handle)
                throw error
            }
            env = handle
        } catch {
            _ = Environment.openPaths.withLock { $0.remove(canonical) }
            throw error
        }
    }

    deinit { close() }

    /// Whether `close()` has been called: nothing may be asked of a closed environment.
    public var isClosed: Bool { closed.withLock { $0 } }

    /// Closes the environment. Every transaction must have ended.
    public func close() {
        let wasOpen = closed.withLock { isClosed in
            defer { isClosed = true }
            return !isClosed
        }
        guard wasOpen else { return }
        resizeLock.withExclusive { mdb_env_close(env) }
        _ = Environment.openPaths.withLock { $0.remove(path) }
    }

    // MARK: Transactions

    /// Runs `body` in a read-only transaction: a consistent snapshot as of its start.
    ///
    /// Do not start a write inside `body` on the same thread: growing the map waits for every
    /// transaction of this process to end.
    public func read<R>(_ body: (Transaction) throws -> R) throws -> R {
        while true {
            do {
                return try resizeLock.withShared { try readOnce(body) }
            } catch is MapResizedByAnotherProcess {
                try adoptMapSizeOfOtherProcess()
            }
        }
    }

    private struct MapResizedByAnotherProcess: Error {}

    private func readOnce<R>(_ body: (Transaction) throws -> R) throws -> R {
        var txn: OpaquePointer?
        let rc = mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn)
        // "Another process wrote data beyond this MDB_env's mapsize" (lmdb.h): adopt its size.
        if rc == MDB_MAP_RESIZED { throw MapResizedByAnotherProcess() }
        try LMDBError.check(rc, "mdb_txn_begin(read)")
        readsOpen.add(1, ordering: .relaxed)
        let transaction = Transaction(txn!, environment: self, writable: false)
        defer {
            transaction.end()
            mdb_txn_abort(txn)
            readsOpen.subtract(1, ordering: .relaxed)
        }
        return try body(transaction)
    }

    /// Runs `body` in a write transaction and commits when it returns; aborts if it throws.
    ///
    /// On `MDB_MAP_FULL` (from a put or from the commit) the transaction is aborted, the map is
    /// doubled (up to `Options.mapSizeMax`) and `body` runs again from the start, so `body` must
    /// do nothing outside the transaction that it cannot safely do twice.
    public func write<R>(_ body: (Transaction) throws -> R) throws -> R {
        guard !options.readOnly else {
            throw LMDBError.usage("mdb_txn_begin(write)", "environment is open read-only", code: EACCES)
        }
        while true {
            do {
                return try resizeLock.withShared { try writeOnce(body) }
            } catch let error as LMDBError where error.isMapFull {
                try growMap(after: error)
            } catch let error as LMDBError where error.isMapResized {
                try adoptMapSizeOfOtherProcess()
            }
        }
    }

    private func writeOnce<R>(_ body: (Transaction) throws -> R) throws -> R {
        var txn: OpaquePointer?
        try LMDBError.check(mdb_txn_begin(env, nil, 0, &txn), "mdb_txn_begin(write)")
        writesOpen.add(1, ordering: .relaxed)
        // Every way out below ends the transaction: abort, or commit (which frees it either way).
        defer { writesOpen.subtract(1, ordering: .relaxed) }
        let transaction = Transaction(txn!, environment: self, writable: true)
        let result: R
        do {
            result = try body(transaction)
        } catch {
            transaction.end()
            mdb_txn_abort(txn)
            throw error
        }
        transaction.end()
        if let code = _Failpoints.fault(.commit, path: path) {
            // A failed commit as LMDB leaves it: the transaction freed, none of it visible.
            mdb_txn_abort(txn)
            throw LMDBError(code: code, operation: "mdb_txn_commit")
        }
        // mdb_txn_commit frees the transaction whether or not it succeeds.
        try LMDBError.check(mdb_txn_commit(txn), "mdb_txn_commit")
        return result
    }

    /// The current map size in bytes.
    public var mapSize: Int { info().mapSize }

    private func growMap(after error: LMDBError) throws {
        try resizeLock.withExclusive {
            let current = info().mapSize
            guard current < options.mapSizeMax else { throw error }
            let next = min(options.mapSizeMax, current * 2)
            try LMDBError.check(mdb_env_set_mapsize(env, next), "mdb_env_set_mapsize(\(next))")
        }
    }

    private func adoptMapSizeOfOtherProcess() throws {
        try resizeLock.withExclusive {
            try LMDBError.check(mdb_env_set_mapsize(env, 0), "mdb_env_set_mapsize(0)")
        }
    }

    // MARK: Databases

    /// Opens (and with `create`, creates) the named database. Handles stay valid for the
    /// environment's lifetime.
    public func openDatabase(_ name: String, create: Bool = false) throws -> Database {
        let flags = create ? UInt32(MDB_CREATE) : 0
        if create && !options.readOnly {
            return try write { txn in try txn.openDatabase(name, flags: flags) }
        }
        // "If the transaction is aborted the handle will be closed automatically. After a
        // successful commit the handle will reside in the shared environment" (lmdb.h) — so
        // even a read-only transaction that opens a handle must commit, not abort.
        return try resizeLock.withShared {
            var txn: OpaquePointer?
            try LMDBError.check(mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn), "mdb_txn_begin(read)")
            readsOpen.add(1, ordering: .relaxed)
            defer { readsOpen.subtract(1, ordering: .relaxed) }
            let transaction = Transaction(txn!, environment: self, writable: false)
            let db: Database
            do {
                db = try transaction.openDatabase(name, flags: flags)
            } catch {
                transaction.end()
                mdb_txn_abort(txn)
                throw error
            }
            transaction.end()
            try LMDBError.check(mdb_txn_commit(txn), "mdb_txn_commit(read)")
            return db
        }
    }

    // MARK: Introspection

    public struct Info: Sendable, Equatable {
        public var mapSize: Int
        public var lastPageNumber: Int
        public var lastTransactionID: Int
        public var maxReaders: Int
        /// Reader lock table slots ever used (`me_numreaders`): a high-water mark that never
        /// goes down, not the slots in use now. For those see `readers()`; for this process's
        /// own transactions, `openTransactions`.
        public var readersUsed: Int
    }

    public func info() -> Info {
        var raw = MDB_envinfo()
        mdb_env_info(env, &raw)
        return Info(mapSize: raw.me_mapsize, lastPageNumber: raw.me_last_pgno,
                    lastTransactionID: raw.me_last_txnid, maxReaders: Int(raw.me_maxreaders),
                    readersUsed: Int(raw.me_numreaders))
    }

    /// Transactions of this environment begun in this process and not yet committed or aborted.
    public struct OpenTransactions: Sendable, Equatable, CustomStringConvertible {
        public var reads: Int
        public var writes: Int

        public init(reads: Int, writes: Int) {
            self.reads = reads
            self.writes = writes
        }

        public var total: Int { reads + writes }
        public var description: String { "\(reads) read, \(writes) write" }
    }

    /// The transactions running now in this process. Exact, unlike the reader table
    /// (`readers()`), which also holds other processes' slots, and unlike `Info.readersUsed`,
    /// which only grows.
    public var openTransactions: OpenTransactions {
        OpenTransactions(reads: readsOpen.load(ordering: .relaxed), writes: writesOpen.load(ordering: .relaxed))
    }

    public struct Stat: Sendable, Equatable, Codable {
        public var pageSize: Int
        public var depth: Int
        public var branchPages: Int
        public var leafPages: Int
        public var overflowPages: Int
        public var entries: Int

        init(_ raw: MDB_stat) {
            pageSize = Int(raw.ms_psize)
            depth = Int(raw.ms_depth)
            branchPages = raw.ms_branch_pages
            leafPages = raw.ms_leaf_pages
            overflowPages = raw.ms_overflow_pages
            entries = raw.ms_entries
        }

        public var pages: Int { branchPages + leafPages + overflowPages }
    }

    /// Statistics of the main (unnamed) database.
    public func stat() -> Stat {
        var raw = MDB_stat()
        mdb_env_stat(env, &raw)
        return Stat(raw)
    }

    /// One slot of the reader lock table.
    public struct Reader: Sendable, Equatable {
        public var pid: Int
        /// The snapshot the reader holds, or nil for a slot with no transaction running.
        public var transactionID: Int?
    }

    /// The reader lock table as `mdb_reader_list` reports it (every process using the environment).
    public func readers() -> [Reader] {
        final class Sink { var text = "" }
        let sink = Sink()
        let context = Unmanaged.passUnretained(sink).toOpaque()
        mdb_reader_list(env, { message, context in
            guard let message, let context else { return 0 }
            Unmanaged<Sink>.fromOpaque(context).takeUnretainedValue().text += String(cString: message)
            return 0
        }, context)
        var result: [Reader] = []
        for line in sink.text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            // "    pid     thread     txnid" header, or "(no active readers)".
            guard fields.count == 3, let pid = Int(fields[0]) else { continue }
            result.append(Reader(pid: pid, transactionID: Int(fields[2])))
        }
        return result
    }

    /// The oldest snapshot any live reader (in any process) still holds, or nil if none.
    public func oldestReaderTransactionID() -> Int? {
        readers().compactMap(\.transactionID).min()
    }

    /// Clears reader slots left by dead processes; returns how many were cleared.
    @discardableResult
    public func clearStaleReaders() throws -> Int {
        var dead: Int32 = 0
        try LMDBError.check(mdb_reader_check(env, &dead), "mdb_reader_check")
        return Int(dead)
    }

    /// Flushes to disk (a no-op for durability here: commits are already synchronous).
    public func sync() throws {
        try LMDBError.check(mdb_env_sync(env, 1), "mdb_env_sync")
    }

    /// Copies the environment to an empty directory `destination`, compacting free pages
    /// (`MDB_CP_COMPACT`). Takes a read transaction for the copy's snapshot.
    public func copy(to destination: String, compact: Bool = true) throws {
        try resizeLock.withShared {
            try LMDBError.check(mdb_env_copy2(env, destination, compact ? UInt32(MDB_CP_COMPACT) : 0),
                                "mdb_env_copy2(\(destination))")
        }
    }
}
