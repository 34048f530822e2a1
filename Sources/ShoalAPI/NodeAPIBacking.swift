import ShoalCore
import ShoalFiles
import ShoalNode
import ShoalStore

/// What the HTTP API needs from a node. `Node` conforms; the API is written against this so
/// that the handlers say exactly which parts of the node they touch.
public protocol NodeAPIBacking: Sendable {
    /// The node's overlay address: bins are proximities to it.
    var overlay: OverlayAddress { get }
    /// Stores a chunk durably; returns after the commit.
    func upload(_ chunk: Chunk) async throws -> BatchResult
    /// Pushes a stored chunk toward its neighbourhood; ends with the checked receipt or why none came.
    func push(_ chunk: Chunk) async -> Result<PushReceipt, PushFailure>
    /// A chunk from the local store, re-hashed against its address; nil when absent.
    func chunk(_ address: ChunkAddress) throws -> Chunk?
    /// A chunk from the local store or, on a miss, from the network (retrieval), re-hashed.
    func retrieve(_ address: ChunkAddress) async throws -> Result<Chunk, RetrievalFailure>
    /// Where a stored chunk sits in the local store; nil when absent.
    func storedLocation(_ address: ChunkAddress) throws -> ChunkLocation?
    func status() throws -> NodeStatus
    func peers() async -> [PeerStatus]
    /// Applies a batch (an upload's chunks, pins) durably; returns after the commit.
    func apply(_ batch: StoreBatch) async throws -> BatchResult
    /// Waits until `address` is in the local store (true) or `timeout` passes (false).
    func waitForChunk(_ address: ChunkAddress, timeout: Duration) async -> Bool
    /// Reads the local store in one snapshot.
    func readStore<R>(_ body: (StoreReader) throws -> R) throws -> R
    /// True once the store is open and the peer listener is bound.
    var isReady: Bool { get }
    /// The Kademlia table: depth, radius, bins, and the bins synced from each connected peer.
    func topology() async -> TopologyStatus
    /// Dials "host:port" and runs a session with the peer there; returns once its handshake
    /// proved who it is. Throws when the node is not running or the dial or handshake fails.
    func connect(_ address: String) async throws -> PeerInfo
    /// Ends the session with a connected peer (goodbye); false when it is not connected.
    func disconnect(_ overlay: OverlayAddress) async -> Bool
    /// Starts a download of `addresses` (durable when it returns); throws `DownloadRejected`.
    func startDownload(_ addresses: [ChunkAddress], policy: DownloadPolicy, hints: [OverlayAddress]) async throws -> DownloadReport
    /// Starts one download of every chunk of the file `root` (its tree read locally, else by
    /// retrieval); throws `FileError`, `TreeTooLarge` or `DownloadRejected`.
    func startFileDownload(root: ChunkAddress, including: TreeChunks, policy: DownloadPolicy,
                           hints: [OverlayAddress]) async throws -> DownloadReport
    /// The file root a download was started for; nil for a list of addresses.
    func fileRoot(of id: DownloadID) -> ChunkAddress?
    /// A running download, or one that ended since the node started.
    func download(_ id: DownloadID) async -> DownloadReport?
    func downloadList() async -> [DownloadReport]
    /// Cancels a running download; false when none runs under `id`.
    func cancelDownload(_ id: DownloadID) async -> Bool
}

/// A chunk's place in the local store: its bin and its bin ID there.
public struct ChunkLocation: Sendable, Equatable {
    public var bin: Int
    public var binID: UInt64

    public init(bin: Int, binID: UInt64) {
        self.bin = bin
        self.binID = binID
    }
}

extension Node: NodeAPIBacking {
    public func readStore<R>(_ body: (StoreReader) throws -> R) throws -> R {
        try store.read(body)
    }

    public func storedLocation(_ address: ChunkAddress) throws -> ChunkLocation? {
        try store.read { reader in
            try reader.record(address).map { ChunkLocation(bin: Int($0.bin), binID: $0.binID) }
        }
    }
}
