import ShoalCore

/// How a node runs. Every field has a default a local node can run on.
public struct NodeConfiguration: Sendable {
    /// Holds `identity.key` and the store (`store/`).
    public var dataDirectory: String
    /// Nodes with another network id are refused in the handshake.
    public var networkID: UInt64 = 1
    /// Where peers connect; port 0 picks a free one (see `Node.listeningPort`).
    public var listenHost = "127.0.0.1"
    public var listenPort = 1634
    /// "host:port" of peers to dial and keep dialling (bootstrap: the rest are found through hive).
    public var peers: [String] = []
    /// "host:port" addresses our hello tells peers to reach us at (and they tell others);
    /// empty: the listen address, unless it is a wildcard such as 0.0.0.0.
    public var advertise: [String] = []
    /// The Kademlia table's limits (depth, saturation, dialling).
    public var topology = TopologyLimits()
    /// Keep at most this many chunks (farthest bins evicted first); nil for unbounded.
    public var capacityChunks: UInt64?
    /// Pull what the neighbourhood holds from peers (Docs/Topology.md). False: a light node,
    /// which keeps no neighbourhood: it subscribes no bin from any peer (it syncs by a radius
    /// of 32, `SubscriptionPlan.keepsNothing`), and gets chunks only by retrieval and
    /// downloads. It still serves what it stores, to peers' sync requests too.
    public var pullSync = true
    public var handshakeTimeout: Duration = .seconds(5)
    /// Back-off between dial attempts to one peer: from `redialDelayMin`, doubling, up to `redialDelayMax`.
    public var redialDelayMin: Duration = .milliseconds(500)
    public var redialDelayMax: Duration = .seconds(30)
    /// How long a graceful shutdown waits for peers to close.
    public var drainTimeout: Duration = .seconds(5)
    /// Peer records kept in the store (`peers`). Every identity that completes a handshake
    /// gets one, and identities cost nothing to make, so beyond this the least useful are
    /// forgotten (see `Node.peerRecordsToForget`), checked every `peerRecordsCheckInterval`.
    public var peerRecordsMax = 10_000
    public var peerRecordsCheckInterval: Duration = .seconds(30)
    public var session = SessionLimits()
    /// Retrieval: attempts, timeouts per hop, hops, and what one peer may keep open with us.
    public var retrieval = RetrievalLimits()
    /// Push: attempts, timeouts per hop, hops, and what one peer may keep open with us.
    public var push = PushLimits()
    /// The downloader: requests in flight, retries and back-offs, budgets (`DownloadLimits`).
    public var downloads = DownloadLimits()
    /// Bounds on inbound connections and the penalty box for addresses that keep offending
    /// (see `InboundLimits`). Outbound connections (to `peers`) never count against them.
    public var inboundLimits = InboundLimits()
    /// Where sessions read the time (a test or simulation may pass its own).
    public var clock: any ShoalClock = SystemClock()

    public init(dataDirectory: String) {
        self.dataDirectory = dataDirectory
    }

    /// The store directory inside the data directory.
    public var storeDirectory: String { dataDirectory + "/store" }
}

/// The node as the API shows it.
public struct NodeStatus: Sendable, Equatable, Codable {
    public struct Bin: Sendable, Equatable, Codable {
        public var bin: Int
        public var chunks: Int
        public var cursor: UInt64
    }

    public var overlay: String
    public var networkID: UInt64
    public var epoch: UInt64
    public var chunks: Int
    public var storageRadius: Int
    /// The neighbourhood depth (Docs/Topology.md).
    public var depth: Int
    public var bins: [Bin]
    public var peers: Int
    public var listenAddress: String?
    /// Since this process started: chunks delivered to peers, received from peers, and received
    /// although already stored.
    public var chunksServed: Int
    public var chunksReceived: Int
    public var chunksDuplicate: Int
    /// Connections: inbound (with their limits and what was refused) and outbound.
    public var connections: Connections
    /// Retrieval: peers it may ask, fetches open, and its counters (nil from an older node).
    public var retrieval: RetrievalStatus?
    /// Push: pushes open and its counters (nil from an older node).
    public var push: PushStatus?
    /// False for a light node: it pulls nothing by sync (`NodeConfiguration.pullSync`); nil
    /// from an older node, which always pulls.
    public var pullSync: Bool?

    public struct Connections: Sendable, Equatable, Codable {
        /// Nil until the node listens.
        public var inbound: InboundStatus?
        /// Peers this node dialled and is connected to.
        public var outbound: Int
    }
}
