/// The connected peers a forwarding machine (retrieval, push) may hand a request to, and its
/// request IDs: what both machines need to pick the next peer toward an address and to tell a
/// late answer from one to a request never made.
public struct ForwardingTable: Sendable, Equatable {
    /// This node's overlay.
    public let base: OverlayAddress
    /// Connected peers, sorted, each once.
    public private(set) var peers: [OverlayAddress] = []
    /// The next request ID; those below it were issued (a reply to one no longer waited for is
    /// late, not a fault). IDs run 1…`ruidMax` and wrap.
    private var nextRuid: UInt32 = 1

    /// Request IDs 1…2³¹−1: the upper half is the downloader's, on the same connections.
    public static let ruidMax: UInt32 = (1 << 31) - 1

    public init(base: OverlayAddress) { self.base = base }

    public mutating func insert(_ peer: OverlayAddress) {
        let i = peers.lowerBound(of: peer)
        if i < peers.count && peers[i] == peer { return }
        peers.insert(peer, at: i)
    }

    public mutating func remove(_ peer: OverlayAddress) {
        let i = peers.lowerBound(of: peer)
        if i < peers.count && peers[i] == peer { peers.remove(at: i) }
    }

    /// The connected peer closest to `address` by XOR distance, not in `skipping`; with
    /// `closerThanBase`, only a peer closer to the address than this node.
    public func closest(to address: ChunkAddress, skipping: [OverlayAddress], closerThanBase: Bool) -> OverlayAddress? {
        var best: OverlayAddress?
        for peer in peers where !skipping.contains(peer) {
            if closerThanBase && !peer.isCloser(to: address, than: base) { continue }
            if best.map({ peer.isCloser(to: address, than: $0) }) ?? true { best = peer }
        }
        return best
    }

    /// Whether any connected peer is closer to `address` than this node.
    public func anyCloser(to address: ChunkAddress) -> Bool {
        peers.contains { $0.isCloser(to: address, than: base) }
    }

    public mutating func issueRuid() -> UInt32 {
        let ruid = nextRuid
        nextRuid = nextRuid == Self.ruidMax ? 1 : nextRuid + 1
        return ruid
    }

    /// Whether `ruid` was issued here (so a reply to it, if no longer awaited, is late).
    public func wasIssued(_ ruid: UInt32) -> Bool { ruid != 0 && ruid < nextRuid }

    public func checkInvariants() {
        precondition(zip(peers, peers.dropFirst()).allSatisfy { $0 < $1 }, "peers not sorted or repeated")
    }
}
