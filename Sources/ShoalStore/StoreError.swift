import LMDB
import ShoalCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An error from the store: a code to switch on, a message for people, and the cause.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        /// The directory holds no Shoal store (and this open may not create one).
        case notAStore
        /// The store was written by a newer Shoal; this build will not touch it.
        case schemaTooNew
        /// The store needs a migration, but it was opened read-only.
        case migrationNeeded
        /// The store belongs to another node overlay: its bins would be wrong.
        case overlayMismatch
        /// A record or a payload is not what the schema says.
        case corrupt
        /// A payload slot lies beyond the end of the slot file.
        case slotMissing
        /// LMDB failed; `underlying` is the `LMDBError`.
        case lmdb
        /// A system call failed.
        case system
        /// The operation needs a writable store.
        case readOnly
        /// A batch that cannot be applied (e.g. an interval range that is inverted).
        case invalidBatch
        /// An earlier write failed in a way that makes further writes unsafe (a failed
        /// `fdatasync`, an `EIO`, a failed commit); the store refuses every write until it is
        /// reopened (the process restarts). Reads go on. `underlying` is that first failure.
        case writerFailed
        /// Another open of the store (in this process or another) has it open for writing.
        case inUse
    }

    /// The system call that failed and its errno, for `.system` errors.
    public struct SystemCall: Sendable, Equatable {
        /// `pwrite`, `fdatasync`, `open`, …
        public var name: String
        public var errno: Int32
    }

    public let code: Code
    public let message: String
    public let underlying: (any Error & Sendable)?
    /// For `.system` errors: which call failed, with what errno.
    public let systemCall: SystemCall?

    public init(_ code: Code, _ message: String, underlying: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
        self.systemCall = nil
    }

    init(_ code: Code, _ message: String, systemCall: SystemCall) {
        self.code = code
        self.message = message
        self.underlying = nil
        self.systemCall = systemCall
    }

    /// The errno behind this error, if a system call or LMDB reported one (`EIO`, `ENOSPC`, …),
    /// looking through a wrapped cause.
    public var systemErrno: Int32? {
        if let systemCall { return systemCall.errno }
        // LMDB's own codes are negative (`MDB_KEYEXIST` is -30799); positive codes are errnos.
        if let lmdb = underlying as? LMDBError, lmdb.code > 0 { return lmdb.code }
        if let store = underlying as? StoreError { return store.systemErrno }
        return nil
    }

    public var description: String {
        if let underlying { return "\(code.rawValue): \(message) (\(underlying))" }
        return "\(code.rawValue): \(message)"
    }

    /// `operation` is the call and its arguments, e.g. `pwrite(PATH, slots 3…7)`.
    static func system(_ operation: String, errno code: Int32) -> StoreError {
        StoreError(.system, "\(operation): \(String(cString: strerror(code))) (errno \(code))",
                   systemCall: SystemCall(name: String(operation.prefix { $0 != "(" }), errno: code))
    }

    static func slotMissing(slot: UInt64, fileBytes: UInt64) -> StoreError {
        StoreError(.slotMissing, "slot \(slot) lies beyond the end of the slot file (\(fileBytes) bytes)")
    }

    /// A failure of the disk or the file system (an errno from a write or a sync), or writes
    /// stopped after one, rather than of what a batch holds.
    var isFromTheDisk: Bool { code == .writerFailed || systemErrno != nil }

    /// Wraps anything thrown below the store into a `StoreError`, keeping it as the cause.
    static func wrap(_ error: any Error, _ context: String) -> StoreError {
        switch error {
        case let e as StoreError: return e
        case let e as LMDBError: return StoreError(.lmdb, context, underlying: e)
        case let e as LMDBDecodingError: return StoreError(.corrupt, context, underlying: e)
        case let e as ChunkError: return StoreError(.corrupt, context, underlying: e)
        default: return StoreError(.system, "\(context): \(error)")
        }
    }
}
