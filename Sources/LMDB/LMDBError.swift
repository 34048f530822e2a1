import CLMDB

#if canImport(Glibc)
import Glibc
#endif

/// An error from LMDB or from the wrapper's own checks.
///
/// LMDB's errors keep LMDB's names (`MDB_MAP_FULL`, `MDB_NOTFOUND`, …) and say which
/// operation failed, so a log line reads like the C documentation.
public struct LMDBError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The C return code (an LMDB `MDB_*` code or an `errno` value), or 0 for wrapper checks.
    public let code: Int32
    /// The operation that failed, e.g. `mdb_put(chunks)`.
    public let operation: String
    /// LMDB's own text for `code` (`mdb_strerror`), or the wrapper's message.
    public let message: String

    public init(code: Int32, operation: String, message: String? = nil) {
        self.code = code
        self.operation = operation
        self.message = message ?? String(cString: mdb_strerror(code))
    }

    /// LMDB's symbolic name for the code, e.g. `MDB_MAP_FULL`, or `errno N`.
    public var name: String {
        switch code {
        case 0: return "SHOAL_LMDB_CHECK"
        case MDB_KEYEXIST: return "MDB_KEYEXIST"
        case MDB_NOTFOUND: return "MDB_NOTFOUND"
        case MDB_PAGE_NOTFOUND: return "MDB_PAGE_NOTFOUND"
        case MDB_CORRUPTED: return "MDB_CORRUPTED"
        case MDB_PANIC: return "MDB_PANIC"
        case MDB_VERSION_MISMATCH: return "MDB_VERSION_MISMATCH"
        case MDB_INVALID: return "MDB_INVALID"
        case MDB_MAP_FULL: return "MDB_MAP_FULL"
        case MDB_DBS_FULL: return "MDB_DBS_FULL"
        case MDB_READERS_FULL: return "MDB_READERS_FULL"
        case MDB_TLS_FULL: return "MDB_TLS_FULL"
        case MDB_TXN_FULL: return "MDB_TXN_FULL"
        case MDB_CURSOR_FULL: return "MDB_CURSOR_FULL"
        case MDB_PAGE_FULL: return "MDB_PAGE_FULL"
        case MDB_MAP_RESIZED: return "MDB_MAP_RESIZED"
        case MDB_INCOMPATIBLE: return "MDB_INCOMPATIBLE"
        case MDB_BAD_RSLOT: return "MDB_BAD_RSLOT"
        case MDB_BAD_TXN: return "MDB_BAD_TXN"
        case MDB_BAD_VALSIZE: return "MDB_BAD_VALSIZE"
        case MDB_BAD_DBI: return "MDB_BAD_DBI"
        case ENOENT: return "ENOENT"
        case EACCES: return "EACCES"
        case EAGAIN: return "EAGAIN"
        case ENOSPC: return "ENOSPC"
        case EINVAL: return "EINVAL"
        case EBUSY: return "EBUSY"
        case EROFS: return "EROFS"
        default: return "errno \(code)"
        }
    }

    public var description: String { "\(operation): \(name): \(message)" }

    public var isMapFull: Bool { code == MDB_MAP_FULL }
    public var isMapResized: Bool { code == MDB_MAP_RESIZED }
    /// LMDB refuses every further transaction: "a fatal error occurred earlier and the
    /// environment must be shut down" (lmdb.h), e.g. after a failed meta page write.
    public var isPanic: Bool { code == MDB_PANIC }

    /// Throws an `LMDBError` unless `rc` is `MDB_SUCCESS`.
    @inline(__always)
    static func check(_ rc: Int32, _ operation: @autoclosure () -> String) throws(LMDBError) {
        if rc != MDB_SUCCESS { throw LMDBError(code: rc, operation: operation()) }
    }

    /// A wrapper-level failure (bad argument, environment already open, …).
    static func usage(_ operation: String, _ message: String, code: Int32 = 0) -> LMDBError {
        LMDBError(code: code, operation: operation, message: message)
    }
}
