/// Something a peer did wrong, as a state machine sees it. The shell scores the peer down and,
/// when `dropsPeer`, closes the connection. Input from a peer never reaches a precondition.
public enum PeerFault: Equatable, Sendable, CustomStringConvertible {
    /// A response or delivery for a request ID we have no request under.
    case unknownRequest(RequestID)
    /// A chunk nobody asked this peer for (or asked for already and delivered).
    case unsolicitedChunk(ChunkAddress)
    /// A chunk whose content is not a valid chunk (size).
    case invalidChunk(String)
    /// An offer that contradicts the request: wrong start, beyond the requested end, more
    /// addresses than bin IDs or than the limit.
    case malformedOffer(String)
    /// A request we refuse: bad bin, bad limit, inverted range, request ID in use.
    case malformedRequest(String)
    /// Chunks wanted from an offer did not all arrive in time.
    case batchTimeout(RequestID)
    /// Too many requests in flight from this peer.
    case overloaded(String)
    /// Bytes that do not decode as a frame (the connection cannot go on after them).
    case malformedFrame(String)
    /// More requests a second than any honest peer sends (`SessionLimits.requestsPerSecondMax`).
    case flooding(String)
    /// A push receipt for another chunk than the one pushed, or whose signature does not hold.
    case invalidReceipt(String)

    /// Whether the connection must be closed; otherwise the peer is only scored down.
    public var dropsPeer: Bool {
        switch self {
        case .batchTimeout, .overloaded: return false
        default: return true
        }
    }

    public var description: String {
        switch self {
        case .unknownRequest(let r): return "unknown request id \(r)"
        case .unsolicitedChunk(let a): return "unsolicited chunk \(a)"
        case .invalidChunk(let m): return "invalid chunk: \(m)"
        case .malformedOffer(let m): return "malformed offer: \(m)"
        case .malformedRequest(let m): return "malformed request: \(m)"
        case .batchTimeout(let r): return "chunks for request \(r) did not arrive in time"
        case .overloaded(let m): return "overloaded: \(m)"
        case .malformedFrame(let m): return "malformed frame: \(m)"
        case .flooding(let m): return "flooding: \(m)"
        case .invalidReceipt(let m): return "invalid receipt: \(m)"
        }
    }
}

/// What a node knows about one address when an offer lists it.
public enum ChunkClaim: Equatable, Sendable {
    /// Not stored and nobody is fetching it: this stream now fetches it (the claim is held
    /// until the stream releases it).
    case claimed
    /// Already stored.
    case stored
    /// Another stream is fetching it.
    case inFlightElsewhere
    /// The node does not keep it: its proximity to the node is below the storage radius.
    case notNeeded
}
