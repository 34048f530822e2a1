import LMDB
import ShoalCore
import ShoalStore
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A store in a fresh temporary directory, with seeded chunks to put in it.
///
/// Closing it (`close()`, `reopen`, `whileClosed`, or releasing it) first checks that no
/// transaction of the store is still open in this process and records an issue naming those
/// left, at the place given (for a release, where the store was made): transactions are scoped
/// to closures, so one still open when the test ends is a task or thread the test did not stop,
/// holding a snapshot that keeps pages from being reused. Then the directory is removed.
public final class TemporaryStore {
    /// The overlay a test store belongs to unless told otherwise.
    public static let defaultOverlay = Address32(w0: 0xF0F0_F0F0_0000_0000, w1: 1, w2: 2, w3: 3)

    public let directory: String
    public let overlay: OverlayAddress
    public private(set) var store: Store
    /// Chunks from the seed given at `init`.
    public var chunks: SeededChunks
    private let temporary: TemporaryDirectory
    /// Where the test made this store: issues found when it is released are reported there.
    private let createdAt: SourceLocation
    private var isClosed = false

    public init(
        overlay: OverlayAddress = TemporaryStore.defaultOverlay, capacity: UInt64? = nil, seed: UInt64 = 1,
        mapSize: Int = 1 << 26, mapSizeMax: Int = 1 << 34,
        configure: (inout Store.Options) -> Void = { _ in },
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        temporary = try TemporaryDirectory("store")
        directory = temporary.path
        self.overlay = overlay
        var options = Store.Options(overlay: overlay, capacityChunks: capacity)
        options.mapSize = mapSize
        options.mapSizeMax = mapSizeMax
        configure(&options)
        store = try Store(directory: directory, options: options)
        chunks = SeededChunks(seed: seed)
        createdAt = sourceLocation
    }

    deinit { close(sourceLocation: createdAt) }

    public var slotFilePath: String { directory + "/" + Schema.slotFileName }

    /// Closes and opens the store again (as after a restart). Options other than these three
    /// are the defaults.
    public func reopen(readOnly: Bool = false, capacity: UInt64? = nil,
                       sourceLocation: SourceLocation = #_sourceLocation) throws {
        closeStore(sourceLocation: sourceLocation)
        store = try Store(directory: directory, options: Store.Options(overlay: readOnly ? nil : overlay,
                                                                        capacityChunks: capacity, readOnly: readOnly))
        isClosed = false
    }

    /// Runs `body` with the store closed (to tamper with its files), then opens it again.
    public func whileClosed(sourceLocation: SourceLocation = #_sourceLocation, _ body: (String) throws -> Void) throws {
        closeStore(sourceLocation: sourceLocation)
        try body(directory)
        store = try Store(directory: directory, options: Store.Options(overlay: overlay))
        isClosed = false
    }

    /// What is still open: nothing, between transactions.
    public func leaks() -> [TransactionLeak] {
        isClosed || store.environment.isClosed ? [] : TransactionLeak.find(in: store.environment)
    }

    /// Records an issue naming every transaction still open, if any is; whether none is.
    @discardableResult
    public func check(sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        let leaks = leaks()
        guard !leaks.isEmpty else { return true }
        Issue.record("the store at \(directory) leaks: \(leaks.map(\.description).joined(separator: "; "))",
                     sourceLocation: sourceLocation)
        return false
    }

    /// Checks for leaks, closes the store and removes its directory. The value must not be used
    /// after.
    public func close(sourceLocation: SourceLocation = #_sourceLocation) {
        closeStore(sourceLocation: sourceLocation)
        temporary.remove()
    }

    private func closeStore(sourceLocation: SourceLocation) {
        guard !isClosed else { return }
        // After a leak the store is left open: `mdb_env_close` under a live transaction would
        // free what it still uses. The environment closes when its last reference goes.
        if check(sourceLocation: sourceLocation) { store.close() }
        isClosed = true
    }
}

/// A transaction of an environment that has not ended.
public enum TransactionLeak: Sendable, Equatable, CustomStringConvertible {
    /// Read transactions begun in this process and not ended (`Environment.openTransactions`).
    case readTransactions(Int)
    case writeTransactions(Int)
    /// A slot of LMDB's reader table held by this process. With `MDB_NOTLS` a read
    /// transaction gives its slot back when it ends, so a held slot is a reader still running,
    /// or one LMDB never freed. `transactionID` is the snapshot it pins (nil: none).
    case readerSlot(transactionID: Int?)

    /// Everything of `environment` still open in this process. Other processes' slots are
    /// theirs (an inspector reading the same store) and are not counted.
    public static func find(in environment: Environment) -> [TransactionLeak] {
        var leaks: [TransactionLeak] = []
        let open = environment.openTransactions
        if open.reads > 0 { leaks.append(.readTransactions(open.reads)) }
        if open.writes > 0 { leaks.append(.writeTransactions(open.writes)) }
        let me = Int(getpid())
        for reader in environment.readers() where reader.pid == me {
            leaks.append(.readerSlot(transactionID: reader.transactionID))
        }
        return leaks
    }

    public var description: String {
        switch self {
        case .readTransactions(let n): return "\(n) read transaction(s) still open"
        case .writeTransactions(let n): return "\(n) write transaction(s) still open"
        case .readerSlot(let id?): return "a reader slot still holds snapshot \(id)"
        case .readerSlot(nil): return "a reader slot is still held (no snapshot)"
        }
    }
}
