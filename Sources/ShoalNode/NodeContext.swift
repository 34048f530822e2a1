import Locking
import Logging
import ShoalCore
import ShoalStore
import Synchronization

/// What every peer session of a node shares.
final class NodeContext: Sendable {
    let overlay: OverlayAddress
    let store: Store
    let writer: StoreWriter
    let inFlight: InFlightChunks
    let logger: Logger
    let clock: any ShoalClock
    /// Per-connection events a stranger can repeat at will (connected, disconnected, dropped,
    /// refused while banned), throttled per kind so no flood of sessions floods the log.
    let events: ThrottledLog
    let limits: SessionLimits
    let sessions = Locked<[OverlayAddress: PeerSession]>([:])
    /// Since the node started: chunks we delivered to peers, chunks peers delivered to us, and
    /// of those the ones the store already held when they were committed.
    let chunksServed = Atomic<Int>(0)
    let chunksReceived = Atomic<Int>(0)
    let chunksDuplicate = Atomic<Int>(0)
    /// The depth the supervisor last computed (read without asking it).
    let depth = Atomic<Int>(0)
    /// Readers on this node waiting for chunks to arrive.
    let arrivals = ChunkArrivals()
    /// Retrieval as its actor last published it (for `/status`, without awaiting the actor).
    let retrieval = Locked(RetrievalStatus())
    /// Push as its actor last published it.
    let push = Locked(PushStatus())
    /// Told what every commit stored (the downloader: a chunk pull sync brings completes a
    /// download too). Called on the committing thread, once per commit: it must not block.
    let storedObserver = Locked<StoredObserver?>(nil)

    init(overlay: OverlayAddress, store: Store, writer: StoreWriter, inFlight: InFlightChunks, logger: Logger,
         limits: SessionLimits, clock: any ShoalClock) {
        self.overlay = overlay
        self.store = store
        self.writer = writer
        self.inFlight = inFlight
        self.logger = logger
        self.clock = clock
        events = ThrottledLog(logger: logger, linesPerWindow: SessionLimits.eventLinesPerWindow)
        self.limits = limits
    }

    /// Our epoch and the cursors of `bins`, for a peer's StreamInfoRequest.
    func streamInfo(bins: [UInt8]) -> StreamInfoResponse {
        let wanted = bins.filter { Int($0) < Proximity.binCount }
        let cursors = (try? store.read { r in try wanted.map { try r.cursor(bin: Int($0)) } }) ?? wanted.map { _ in 0 }
        return StreamInfoResponse(epoch: store.epoch, cursors: zip(wanted, cursors).map { .init(bin: $0, cursor: $1) })
    }

    /// A batch committed: readers waiting for its chunks wake, and every session learns which
    /// of our bins grew (through its mailbox: nobody waits for a session, so a peer whose
    /// socket is full delays only its own).
    func committed(_ result: BatchResult) {
        arrivals.stored(result.stored.lazy.map(\.address))
        if !result.stored.isEmpty, let observer = storedObserver.withLock({ $0 }) { observer.observe(result.stored) }
        var cursors: [UInt8: UInt64] = [:]
        for chunk in result.stored { cursors[chunk.bin] = max(cursors[chunk.bin] ?? 0, chunk.binID) }
        guard !cursors.isEmpty else { return }
        for session in sessions.withLock({ Array($0.values) }) { session.binsGrew(cursors) }
    }
}

/// What `NodeContext.storedObserver` calls, behind a class reference. A closure kept directly as
/// `Locked`'s generic value is re-abstracted on each access through `withLock`'s `inout`, and
/// the re-abstraction thunks stack up in the stored value: two more on every commit, so each call
/// walked a chain as long as the node's commits so far (30 % of a downloading node's CPU at
/// 20,000 chunks, the rate falling as the download grew, and in time a stack overflow). A class
/// reference is not re-abstracted.
final class StoredObserver: Sendable {
    let observe: @Sendable ([StoredChunk]) -> Void
    init(_ observe: @escaping @Sendable ([StoredChunk]) -> Void) { self.observe = observe }
}
