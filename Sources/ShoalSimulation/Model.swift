import ShoalCore

extension Message {
    /// About what the message takes on the wire (for links with a bandwidth).
    var wireBytes: UInt64 {
        switch self {
        case .chunkDelivery(let d): return 16 + d.chunks.reduce(0) { $0 + 12 + UInt64($1.payload.count) }
        case .offeredHashes(let o): return 32 + 32 * UInt64(o.addresses.count)
        case .wantedHashes(let w): return 16 + UInt64(w.bitvector.count)
        case .peers(let p): return 8 + 48 * UInt64(p.peers.count)
        default: return 32
        }
    }
}

/// One end of a connection: the machine syncing from the peer (and serving it), the peer's
/// hive traffic, and when the next tick is due. A class: the machine is large, and events
/// mutate it in place rather than copying it out of the connection table and back.
final class Side {
    var sync: PeerSync
    var hive = HiveMachine()
    /// The time of the tick event scheduled for this side, if one is.
    var tickAt: UInt64?

    init(sync: PeerSync) { self.sync = sync }
}

/// A TCP connection between two nodes: in-order delivery each way, one latency, optionally a
/// bandwidth. `nodes[0]` dialled `nodes[1]`; `sides[k]` is node `nodes[k]`'s end.
final class Connection {
    let id: Int
    let nodes: (Int, Int)
    let latencyMs: UInt64
    var open = true
    var sides: [Side]
    /// Per direction (from side k), when the link is free again (bandwidth), and when the last
    /// message arrives (order).
    var linkFreeAt: [UInt64] = [0, 0]
    var lastArrival: [UInt64] = [0, 0]

    init(id: Int, nodes: (Int, Int), latencyMs: UInt64, sides: [Side]) {
        (self.id, self.nodes, self.latencyMs, self.sides) = (id, nodes, latencyMs, sides)
    }

    func node(_ k: Int) -> Int { k == 0 ? nodes.0 : nodes.1 }
}

/// A store write waiting for its commit.
struct Write {
    enum Origin {
        /// A persist of the session `connection`, end `side`.
        case persist(connection: Int, side: Int, PeerSync.Persist)
        /// Chunk `index` of the run, uploaded to this node.
        case upload(Int)
        /// Interval resets asked by a session.
        case reset
    }

    var origin: Origin
    var batch: MemoryStore.Batch
}

/// One simulated node: its committed store, its table and subscriptions, its sessions, the
/// writes it has not committed yet.
struct SimNode {
    let index: Int
    let overlay: OverlayAddress
    /// "host:port" as the topology keeps it.
    let address: String
    var store: MemoryStore
    var alive = false
    /// Bumped by every crash: events of an earlier incarnation are ignored.
    var incarnation = 0
    var topology: Topology
    var reconciler = SubscriptionReconciler()
    /// The node-wide in-flight claim set (`InFlightChunks`).
    var inFlight = Set<ChunkAddress>()
    /// Connection per connected peer, and the connected peers in overlay order (the order
    /// sessions are told things in).
    var sessions: [OverlayAddress: Int] = [:]
    var sessionOrder: [(peer: OverlayAddress, connection: Int)] = []
    var pendingWrites: [Write] = []
    var commitScheduled = false
    /// The address book as last persisted (what a restart loads).
    var persistedBook: [KnownPeer] = []
    /// Nodes it is told of at start (`--peer`).
    var bootstrap: [Int] = []
    var depth = 0
    var depthChangedMs: UInt64 = 0
    /// Bit i set while partition i cuts this node off.
    var partitionMask: UInt64 = 0

    mutating func addSession(_ peer: OverlayAddress, connection: Int) {
        sessions[peer] = connection
        let i = sessionOrder.partitionPoint { $0.peer >= peer }
        sessionOrder.insert((peer, connection), at: i)
    }

    mutating func removeSession(_ peer: OverlayAddress) {
        sessions[peer] = nil
        let i = sessionOrder.partitionPoint { $0.peer >= peer }
        if i < sessionOrder.count && sessionOrder[i].peer == peer { sessionOrder.remove(at: i) }
    }
}

extension Array {
    /// The first index whose element satisfies `predicate` (false then true along the array).
    func partitionPoint(_ predicate: (Element) -> Bool) -> Int {
        var low = 0, high = count
        while low < high {
            let mid = (low + high) / 2
            if predicate(self[mid]) { high = mid } else { low = mid + 1 }
        }
        return low
    }
}
