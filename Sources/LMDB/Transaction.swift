import CLMDB

/// A handle to a named database inside an environment (`MDB_dbi`).
public struct Database: Sendable, Hashable {
    public let handle: MDB_dbi
    public let name: String
}

/// Bytes that can be handed to LMDB without copying.
public protocol LMDBBytes {
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: LMDBBytes where Element == UInt8 {}
extension ArraySlice: LMDBBytes where Element == UInt8 {}
extension ContiguousArray: LMDBBytes where Element == UInt8 {}
extension UnsafeRawBufferPointer: LMDBBytes {
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(self)
    }
}

@inline(__always)
func withVal<R>(_ bytes: some LMDBBytes, _ body: (inout MDB_val) throws -> R) rethrows -> R {
    try bytes.withUnsafeBytes { raw in
        var val = MDB_val(mv_size: raw.count, mv_data: UnsafeMutableRawPointer(mutating: raw.baseAddress))
        return try body(&val)
    }
}

@inline(__always)
func buffer(_ val: MDB_val) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(start: val.mv_data, count: val.mv_size)
}

/// A transaction, valid only inside the `read` or `write` closure that received it.
///
/// Pointers handed out by the zero-copy methods point into LMDB's memory map and are valid only
/// inside their own closure; copy what must outlive it.
public final class Transaction {
    let txn: OpaquePointer
    unowned let environment: Environment
    public let isWritable: Bool
    private var isLive = true

    init(_ txn: OpaquePointer, environment: Environment, writable: Bool) {
        self.txn = txn
        self.environment = environment
        self.isWritable = writable
    }

    func end() { isLive = false }

    @inline(__always)
    private func checkLive() {
        precondition(isLive, "LMDB transaction used after its closure returned")
    }

    /// The transaction's ID (`mdb_txn_id`): for a write, the ID its commit will carry; for a
    /// read, the snapshot it sees.
    public var id: Int {
        checkLive()
        return mdb_txn_id(txn)
    }

    // MARK: Databases

    public func openDatabase(_ name: String, flags: UInt32 = 0) throws -> Database {
        checkLive()
        var dbi: MDB_dbi = 0
        try LMDBError.check(mdb_dbi_open(txn, name, flags, &dbi), "mdb_dbi_open(\(name))")
        return Database(handle: dbi, name: name)
    }

    public func stat(_ db: Database) throws -> Environment.Stat {
        checkLive()
        var raw = MDB_stat()
        try LMDBError.check(mdb_stat(txn, db.handle, &raw), "mdb_stat(\(db.name))")
        return Environment.Stat(raw)
    }

    // MARK: Reads

    /// Zero-copy read: `body` sees the value in the memory map, or nil when the key is absent.
    public func withValue<R>(_ db: Database, _ key: some LMDBBytes,
                             _ body: (UnsafeRawBufferPointer?) throws -> R) throws -> R {
        checkLive()
        var value = MDB_val()
        let rc = withVal(key) { k in mdb_get(txn, db.handle, &k, &value) }
        if rc == MDB_NOTFOUND { return try body(nil) }
        try LMDBError.check(rc, "mdb_get(\(db.name))")
        return try body(buffer(value))
    }

    /// A copy of the value under `key`, or nil.
    public func get(_ db: Database, _ key: some LMDBBytes) throws -> [UInt8]? {
        try withValue(db, key) { $0.map { Array($0) } }
    }

    public func contains(_ db: Database, _ key: some LMDBBytes) throws -> Bool {
        try withValue(db, key) { $0 != nil }
    }

    // MARK: Writes

    /// Stores `value` under `key`, replacing any value there.
    public func put(_ db: Database, _ key: some LMDBBytes, _ value: some LMDBBytes) throws {
        checkLive()
        let rc = withVal(key) { k in withVal(value) { v in mdb_put(txn, db.handle, &k, &v, 0) } }
        try LMDBError.check(rc, "mdb_put(\(db.name))")
    }

    /// Stores `value` only if `key` is absent (`MDB_NOOVERWRITE`); returns false if it was present.
    @discardableResult
    public func insert(_ db: Database, _ key: some LMDBBytes, _ value: some LMDBBytes) throws -> Bool {
        checkLive()
        let rc = withVal(key) { k in
            withVal(value) { v in mdb_put(txn, db.handle, &k, &v, UInt32(MDB_NOOVERWRITE)) }
        }
        if rc == MDB_KEYEXIST { return false }
        try LMDBError.check(rc, "mdb_put(\(db.name), MDB_NOOVERWRITE)")
        return true
    }

    /// Stores `value` after every existing key (`MDB_APPEND`): faster for ascending keys.
    /// Fails with `MDB_KEYEXIST` when `key` does not sort after the last key.
    public func append(_ db: Database, _ key: some LMDBBytes, _ value: some LMDBBytes) throws {
        checkLive()
        let rc = withVal(key) { k in
            withVal(value) { v in mdb_put(txn, db.handle, &k, &v, UInt32(MDB_APPEND)) }
        }
        try LMDBError.check(rc, "mdb_put(\(db.name), MDB_APPEND)")
    }

    /// Deletes `key`; returns false if it was absent.
    @discardableResult
    public func delete(_ db: Database, _ key: some LMDBBytes) throws -> Bool {
        checkLive()
        let rc = withVal(key) { k in mdb_del(txn, db.handle, &k, nil) }
        if rc == MDB_NOTFOUND { return false }
        try LMDBError.check(rc, "mdb_del(\(db.name))")
        return true
    }

    /// Deletes `db` itself from the environment; its handle must not be used after.
    public func dropDatabase(_ db: Database) throws {
        checkLive()
        try LMDBError.check(mdb_drop(txn, db.handle, 1), "mdb_drop(\(db.name), delete)")
    }

    /// Deletes every entry of `db`, keeping the database itself.
    public func clear(_ db: Database) throws {
        checkLive()
        try LMDBError.check(mdb_drop(txn, db.handle, 0), "mdb_drop(\(db.name), empty)")
    }

    // MARK: Cursors

    /// Runs `body` with a cursor over `db`; the cursor is closed when `body` returns.
    public func withCursor<R>(_ db: Database, _ body: (Cursor) throws -> R) throws -> R {
        checkLive()
        var cursor: OpaquePointer?
        try LMDBError.check(mdb_cursor_open(txn, db.handle, &cursor), "mdb_cursor_open(\(db.name))")
        let wrapped = Cursor(cursor!, database: db)
        defer {
            wrapped.end()
            mdb_cursor_close(cursor)
        }
        return try body(wrapped)
    }

    /// Visits entries in key order, starting at the first key ≥ `start` (or the first key), until
    /// `body` returns false. Zero-copy: the buffers are valid only during each call.
    public func scan(_ db: Database, from start: [UInt8]? = nil,
                     _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> Bool) throws {
        try withCursor(db) { cursor in
            var more = try start.map { try cursor.seek(atOrAfter: $0) } ?? cursor.first()
            while more {
                guard try body(cursor.currentKey, cursor.currentValue) else { return }
                more = try cursor.next()
            }
        }
    }
}

/// A cursor, valid only inside the `withCursor` closure that received it.
public final class Cursor {
    let cursor: OpaquePointer
    public let database: Database
    private var key = MDB_val()
    private var value = MDB_val()
    private var isLive = true
    private var positioned = false

    init(_ cursor: OpaquePointer, database: Database) {
        self.cursor = cursor
        self.database = database
    }

    func end() { isLive = false }

    private func move(_ op: MDB_cursor_op, _ name: String) throws -> Bool {
        precondition(isLive, "LMDB cursor used after its closure returned")
        let rc = mdb_cursor_get(cursor, &key, &value, op)
        if rc == MDB_NOTFOUND {
            positioned = false
            return false
        }
        try LMDBError.check(rc, "mdb_cursor_get(\(database.name), \(name))")
        positioned = true
        return true
    }

    public func first() throws -> Bool { try move(MDB_FIRST, "MDB_FIRST") }
    public func last() throws -> Bool { try move(MDB_LAST, "MDB_LAST") }
    public func next() throws -> Bool { try move(MDB_NEXT, "MDB_NEXT") }
    public func previous() throws -> Bool { try move(MDB_PREV, "MDB_PREV") }

    /// Positions at the first key ≥ `target` (`MDB_SET_RANGE`).
    public func seek(atOrAfter target: some LMDBBytes) throws -> Bool {
        precondition(isLive, "LMDB cursor used after its closure returned")
        let rc = withVal(target) { k -> Int32 in
            var probe = k
            let rc = mdb_cursor_get(cursor, &probe, &value, MDB_SET_RANGE)
            if rc == MDB_SUCCESS { key = probe }
            return rc
        }
        if rc == MDB_NOTFOUND {
            positioned = false
            return false
        }
        try LMDBError.check(rc, "mdb_cursor_get(\(database.name), MDB_SET_RANGE)")
        positioned = true
        return true
    }

    /// The current key, zero-copy; valid until the cursor moves.
    public var currentKey: UnsafeRawBufferPointer {
        precondition(positioned, "cursor is not on an entry")
        return buffer(key)
    }

    /// The current value, zero-copy; valid until the cursor moves or the entry is written.
    public var currentValue: UnsafeRawBufferPointer {
        precondition(positioned, "cursor is not on an entry")
        return buffer(value)
    }

    /// Deletes the entry under the cursor (write transactions only).
    public func deleteCurrent() throws {
        precondition(isLive && positioned, "cursor is not on an entry")
        try LMDBError.check(mdb_cursor_del(cursor, 0), "mdb_cursor_del(\(database.name))")
    }
}
