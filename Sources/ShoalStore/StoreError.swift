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
    }

    public let code: Code
    public let message: String
    public let underlying: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, underlying: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String {
        if let underlying { return "\(code.rawValue): \(message) (\(underlying))" }
        return "\(code.rawValue): \(message)"
    }

    static func system(_ operation: String, errno code: Int32) -> StoreError {
        StoreError(.system, "\(operation): \(String(cString: strerror(code))) (errno \(code))")
    }

    static func slotMissing(slot: UInt64, fileBytes: UInt64) -> StoreError {
        StoreError(.slotMissing, "slot \(slot) lies beyond the end of the slot file (\(fileBytes) bytes)")
    }

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
