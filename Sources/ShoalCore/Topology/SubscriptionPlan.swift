/// Which of a peer's bins we sync, given its PO to us, our depth and our storage radius.
///
/// The PO arithmetic. Let the peer be at PO `p` from us, and let a chunk sit in the peer's
/// bin `b` (it shares exactly `b` leading bits with the peer). The peer shares exactly `p`
/// bits with us, so:
/// - `b < p`: the chunk leaves the peer at bit `b`, where the peer still agrees with us, so
///   it shares exactly `b` bits with us: the peer's bin `b` is our PO `b`;
/// - `b > p`: the chunk follows the peer past bit `p`, where the peer leaves us, so it shares
///   exactly `p` bits with us: every peer bin above `p` is our PO `p`;
/// - `b == p`: the chunk and we both differ from the peer at bit `p`, so we agree there: it
///   shares at least `p + 1` bits with us, more than with the peer.
///
/// Hence the rule, with `floor = max(depth, radius)`:
/// - a peer with `p < floor` gives only bin `p`: its chunks are closer to us than to the
///   peer, and any other bin is at our PO `min(b, p)`, outside the neighbourhood (below
///   depth) or below what we keep (below the radius);
/// - a peer with `p ≥ floor` gives every bin `b ≥ floor`: bins `floor ≤ b < p` are our PO
///   `b`, bin `p` our PO above `p`, bins above `p` our PO `p`, all at or beyond depth and
///   radius; bins below `floor` are our PO below it.
///
/// Without a capacity (radius 0) this is DESIGN's rule: bin `p` from a peer below depth,
/// every bin ≥ depth from a neighbour. With one, the node keeps and syncs only PO ≥ radius,
/// so a neighbour below the radius gives only bin `p` (its bins above `p` would be our PO `p`,
/// which we would not keep).
///
/// A radius of `keepsNothing` (32) or more keeps no bin at all, and no peer gives anything: a
/// light node (pull sync off) syncs by this radius, and so does a store that evicted all 32
/// bins. By the arithmetic above, bin `p` of every peer could still hold chunks at our PO 32
/// or more, but one chunk in 2³² is not worth a stream per peer and its offers.
public enum SubscriptionPlan {
    /// The radius at and above which nothing is synced from anyone.
    public static let keepsNothing = Proximity.binCount

    /// The bins to sync, ascending. Bin `peerBin` is always among them, unless the radius keeps
    /// nothing (then there are none).
    public static func bins(peerBin: Int, depth: Int, radius: Int) -> [UInt8] {
        precondition((0...Proximity.maxBin).contains(peerBin) && (0...Proximity.maxBin).contains(depth) && radius >= 0,
                     "peer bin \(peerBin), depth \(depth), radius \(radius)")
        guard radius < keepsNothing else { return [] }
        let floor = self.floor(depth: depth, radius: radius)
        return peerBin < floor ? [UInt8(peerBin)] : (floor...Proximity.maxBin).map(UInt8.init)
    }

    /// Whether a peer at `peerBin` gives us the neighbourhood's bins rather than its own bin
    /// alone (or nothing, under a radius that keeps nothing).
    public static func givesNeighbourhood(peerBin: Int, depth: Int, radius: Int) -> Bool {
        radius < keepsNothing && peerBin >= floor(depth: depth, radius: radius)
    }

    static func floor(depth: Int, radius: Int) -> Int { max(depth, min(radius, Proximity.maxBin)) }
}
