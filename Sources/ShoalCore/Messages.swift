/// The messages of Shoal's peer protocol (DESIGN.md §2), as values. `ShoalWire` gives them
/// their byte form (`Docs/Protocol.md`); the state machines here consume and produce them.

/// A request ID, unique per peer connection and direction.
public typealias RequestID = UInt32

/// The first message each side sends after TLS: who it is, and a fresh nonce.
public struct Hello: Equatable, Sendable {
    public var networkID: UInt64
    /// The sender's Ed25519 public key (32 bytes); its TLS certificate carries the same key.
    public var publicKey: [UInt8]
    /// SHA-256(network id ‖ public key); the receiver recomputes and compares.
    public var overlay: OverlayAddress
    /// The sender's store epoch.
    public var epoch: UInt64
    /// 32 fresh random bytes; the peer's signature must cover them.
    public var nonce: [UInt8]
    /// "host:port" addresses the sender accepts connections on (at most 8).
    public var listenAddresses: [String]
    /// Free text, e.g. "shoal/0.1" (at most 64 bytes).
    public var agent: String

    public init(networkID: UInt64, publicKey: [UInt8], overlay: OverlayAddress, epoch: UInt64, nonce: [UInt8],
                listenAddresses: [String] = [], agent: String = "shoal") {
        self.networkID = networkID
        self.publicKey = publicKey
        self.overlay = overlay
        self.epoch = epoch
        self.nonce = nonce
        self.listenAddresses = listenAddresses
        self.agent = agent
    }
}

/// The second handshake message: an Ed25519 signature by the sender's identity key over
/// `HelloProof.signedBytes(...)`, binding both hellos' nonces to this connection.
public struct HelloProof: Equatable, Sendable {
    public var signature: [UInt8]  // 64 bytes
    public init(signature: [UInt8]) { self.signature = signature }

    /// What a side signs: a domain tag, its own hello's fields, and the peer's nonce.
    public static func signedBytes(own: Hello, peerNonce: [UInt8]) -> [UInt8] {
        var out = Array("shoal-hello-v1".utf8)
        withUnsafeBytes(of: own.networkID.bigEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: own.publicKey)
        own.overlay.append(to: &out)
        withUnsafeBytes(of: own.epoch.bigEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: own.nonce)
        out.append(contentsOf: peerNonce)
        return out
    }
}

public struct StreamInfoRequest: Equatable, Sendable {
    public var bins: [UInt8]
    public init(bins: [UInt8]) { self.bins = bins }
}

public struct StreamInfoResponse: Equatable, Sendable {
    public struct BinCursor: Equatable, Sendable {
        public var bin: UInt8
        public var cursor: UInt64
        public init(bin: UInt8, cursor: UInt64) { (self.bin, self.cursor) = (bin, cursor) }
    }

    public var epoch: UInt64
    public var cursors: [BinCursor]
    public init(epoch: UInt64, cursors: [BinCursor]) { (self.epoch, self.cursors) = (epoch, cursors) }
}

/// Asks for the addresses of `bin` from bin ID `from`: up to `to` (history), or, with no `to`,
/// whatever arrives (live: the server answers when it has something or after its idle timeout
/// with an empty offer).
public struct GetRange: Equatable, Sendable {
    public var ruid: RequestID
    public var bin: UInt8
    public var from: UInt64
    public var to: UInt64?
    /// At most this many addresses in the offer.
    public var limit: UInt16
    public init(ruid: RequestID, bin: UInt8, from: UInt64, to: UInt64?, limit: UInt16) {
        (self.ruid, self.bin, self.from, self.to, self.limit) = (ruid, bin, from, to, limit)
    }
}

/// The answer to `GetRange`: the addresses with bin IDs in `[from, lastIndex]`, in bin-ID order.
/// An empty offer still carries `lastIndex`, so the client can seal the range as synced.
public struct OfferedHashes: Equatable, Sendable {
    public var ruid: RequestID
    public var from: UInt64
    public var lastIndex: UInt64
    public var addresses: [ChunkAddress]
    public init(ruid: RequestID, from: UInt64, lastIndex: UInt64, addresses: [ChunkAddress]) {
        (self.ruid, self.from, self.lastIndex, self.addresses) = (ruid, from, lastIndex, addresses)
    }
}

/// Which offered addresses the client wants: bit `i` (LSB-first within each byte) for offer
/// entry `i`. `ceil(count / 8)` bytes; bits past the offer's count must be zero.
public struct WantedHashes: Equatable, Sendable {
    public var ruid: RequestID
    public var bitvector: [UInt8]
    public init(ruid: RequestID, bitvector: [UInt8]) { (self.ruid, self.bitvector) = (ruid, bitvector) }

    public init(ruid: RequestID, wanted: [Bool]) {
        var bits = [UInt8](repeating: 0, count: (wanted.count + 7) / 8)
        for (i, w) in wanted.enumerated() where w { bits[i / 8] |= 1 << UInt8(i % 8) }
        self.init(ruid: ruid, bitvector: bits)
    }

    public func isWanted(_ index: Int) -> Bool {
        index / 8 < bitvector.count && bitvector[index / 8] & (1 << UInt8(index % 8)) != 0
    }
}

/// A chunk as it travels: span and payload. The receiver computes the address (it never
/// trusts one it is told).
public struct DeliveredChunk: Equatable, Sendable {
    public var span: UInt64
    public var payload: [UInt8]
    public init(span: UInt64, payload: [UInt8]) { (self.span, self.payload) = (span, payload) }
    public init(_ chunk: Chunk) { (span, payload) = (chunk.span, chunk.payload) }
}

public struct ChunkDelivery: Equatable, Sendable {
    public var ruid: RequestID
    public var chunks: [DeliveredChunk]
    public init(ruid: RequestID, chunks: [DeliveredChunk]) { (self.ruid, self.chunks) = (ruid, chunks) }
}

public struct StreamError: Equatable, Sendable {
    public enum Code: UInt16, Sendable {
        case binNotServed = 1
        case rangeEvicted = 2
        case overloaded = 3
        case badRequest = 4
        case shuttingDown = 5
    }

    public var ruid: RequestID
    public var code: Code
    public var message: String
    public init(ruid: RequestID, code: Code, message: String) { (self.ruid, self.code, self.message) = (ruid, code, message) }
}

public struct Goodbye: Equatable, Sendable {
    public enum Reason: UInt16, Sendable {
        case shutdown = 0
        case protocolViolation = 1
        case banned = 2
        case tooManyPeers = 3
        case idle = 4
    }

    public var reason: Reason
    public var message: String
    public init(reason: Reason, message: String) { (self.reason, self.message) = (reason, message) }
}

/// Hive: asks a peer for peers it knows (overlays and listen addresses), at most `limit`
/// (1…`ProtocolLimits.hivePeersMax`).
public struct PeersRequest: Equatable, Sendable {
    public var limit: UInt16
    public init(limit: UInt16) { self.limit = limit }
}

/// One peer as hive tells of it: an overlay and where it says it listens. A hint only: the
/// overlay is proved by a handshake with whoever answers at these addresses, never by this.
public struct PeerAddress: Equatable, Sendable {
    public var overlay: OverlayAddress
    /// "host:port" addresses, 1…`ProtocolLimits.listenAddressesMax`.
    public var addresses: [String]
    public init(overlay: OverlayAddress, addresses: [String]) { (self.overlay, self.addresses) = (overlay, addresses) }
}

/// Hive: peers the sender knows, 0…`ProtocolLimits.hivePeersMax`. The answer to a
/// `PeersRequest`, or sent unsolicited (a node tells its neighbours about a new peer).
public struct Peers: Equatable, Sendable {
    public var peers: [PeerAddress]
    public init(peers: [PeerAddress]) { self.peers = peers }
}

/// Why a peer did not serve a `RetrieveRequest` or store a `PushChunk`. A refusal ends the
/// request; it is not a fault, and the asker may try elsewhere.
public struct Refusal: Equatable, Sendable {
    public enum Code: UInt16, Sendable {
        /// Retrieval: the chunk is not stored here and was not found one hop on.
        case notFound = 1
        /// The request would have to be forwarded beyond the hops it has left.
        case hopLimit = 2
        /// Too many requests now: try later, or another peer.
        case overloaded = 3
        case shuttingDown = 4
        /// Push: the chunk could not be stored (the store is full, or its write failed).
        case notStored = 5
        /// Retrieval: the asker is already on this address's path (the request came back to a
        /// node that forwarded it).
        case loop = 6
    }

    public var code: Code
    /// For logs only, at most `ProtocolLimits.messageTextBytesMax` bytes.
    public var message: String
    public init(code: Code, message: String) { (self.code, self.message) = (code, message) }
}

/// Retrieval: asks a peer for one chunk by address. The peer serves it from its store or
/// forwards the request to a peer closer to the address (forwarding Kademlia), at most
/// `hopsLeft` more times.
public struct RetrieveRequest: Equatable, Sendable {
    /// Chosen by the asker, unique among its requests on this connection.
    public var ruid: RequestID
    public var address: ChunkAddress
    /// 0…`ProtocolLimits.retrieveHopsMax`; 0: answer from the store or refuse.
    public var hopsLeft: UInt8
    public init(ruid: RequestID, address: ChunkAddress, hopsLeft: UInt8) {
        (self.ruid, self.address, self.hopsLeft) = (ruid, address, hopsLeft)
    }
}

/// Retrieval: the answer to a `RetrieveRequest`, the chunk or a refusal. The asker hashes the
/// chunk and matches it against the address it asked for: nothing here says what it is.
public struct RetrieveDelivery: Equatable, Sendable {
    public enum Outcome: Equatable, Sendable {
        case chunk(DeliveredChunk)
        case refused(Refusal)
    }

    public var ruid: RequestID
    public var outcome: Outcome
    public init(ruid: RequestID, outcome: Outcome) { (self.ruid, self.outcome) = (ruid, outcome) }
}

/// Presence: asks which of these addresses the peer stores, 1…`ProtocolLimits.presenceBatchMax`
/// of them. The answer is a hint for the downloader, not a promise to serve.
public struct WantHave: Equatable, Sendable {
    public var ruid: RequestID
    public var addresses: [ChunkAddress]
    public init(ruid: RequestID, addresses: [ChunkAddress]) { (self.ruid, self.addresses) = (ruid, addresses) }
}

/// Presence: the answer to a `WantHave`, bit `i` (LSB-first within each byte) set when the
/// sender stores address `i`. As with `WantedHashes`: `ceil(count / 8)` bytes, bits past the
/// count zero; the asker, which knows the count, checks both.
public struct Presence: Equatable, Sendable {
    public var ruid: RequestID
    public var bitvector: [UInt8]
    public init(ruid: RequestID, bitvector: [UInt8]) { (self.ruid, self.bitvector) = (ruid, bitvector) }

    public init(ruid: RequestID, present: [Bool]) {
        var bits = [UInt8](repeating: 0, count: (present.count + 7) / 8)
        for (i, p) in present.enumerated() where p { bits[i / 8] |= 1 << UInt8(i % 8) }
        self.init(ruid: ruid, bitvector: bits)
    }

    public func isPresent(_ index: Int) -> Bool {
        index >= 0 && index / 8 < bitvector.count && bitvector[index / 8] & (1 << UInt8(index % 8)) != 0
    }
}

/// Push: an uploaded chunk on its way to the neighbourhood of its address. A peer in that
/// neighbourhood stores it and answers with a signed `Receipt`; one farther away forwards it
/// closer, at most `hopsLeft` more times.
public struct PushChunk: Equatable, Sendable {
    public var ruid: RequestID
    /// 0…`ProtocolLimits.pushHopsMax`.
    public var hopsLeft: UInt8
    public var chunk: DeliveredChunk
    public init(ruid: RequestID, hopsLeft: UInt8, chunk: DeliveredChunk) {
        (self.ruid, self.hopsLeft, self.chunk) = (ruid, hopsLeft, chunk)
    }
}

/// Push: the answer to a `PushChunk`. Either the storer's statement that it stores the chunk,
/// signed by its identity key, or a refusal.
public struct Receipt: Equatable, Sendable {
    /// A storer's signed statement. Its overlay is `Overlay.address(networkID:publicKey:)`, so
    /// whoever checks the signature knows which node stored the chunk, and whether that node
    /// is in the chunk's neighbourhood.
    public struct Stored: Equatable, Sendable {
        public var address: ChunkAddress
        /// The storer's Ed25519 public key (32 bytes).
        public var publicKey: [UInt8]
        /// Ed25519 over `Receipt.signedBytes(networkID:address:)` (64 bytes).
        public var signature: [UInt8]
        public init(address: ChunkAddress, publicKey: [UInt8], signature: [UInt8]) {
            (self.address, self.publicKey, self.signature) = (address, publicKey, signature)
        }
    }

    public enum Outcome: Equatable, Sendable {
        case stored(Stored)
        case refused(Refusal)
    }

    public var ruid: RequestID
    public var outcome: Outcome
    public init(ruid: RequestID, outcome: Outcome) { (self.ruid, self.outcome) = (ruid, outcome) }

    /// What a storer signs: a domain tag of its own (so no receipt can pass for a hello
    /// proof, which the same key signs), the network, and the chunk's address. Nothing of the
    /// connection: a receipt stays verifiable after it, by anyone who has it.
    public static func signedBytes(networkID: UInt64, address: ChunkAddress) -> [UInt8] {
        var out = Array("shoal-receipt-v1".utf8)
        withUnsafeBytes(of: networkID.bigEndian) { out.append(contentsOf: $0) }
        address.append(to: &out)
        return out
    }
}

/// Every message of the protocol.
public enum Message: Equatable, Sendable {
    case hello(Hello)
    case helloProof(HelloProof)
    case streamInfoRequest(StreamInfoRequest)
    case streamInfoResponse(StreamInfoResponse)
    case getRange(GetRange)
    case offeredHashes(OfferedHashes)
    case wantedHashes(WantedHashes)
    case chunkDelivery(ChunkDelivery)
    case streamError(StreamError)
    case ping(nonce: UInt64)
    case pong(nonce: UInt64)
    case goodbye(Goodbye)
    case peersRequest(PeersRequest)
    case peers(Peers)
    case retrieveRequest(RetrieveRequest)
    case retrieveDelivery(RetrieveDelivery)
    case wantHave(WantHave)
    case presence(Presence)
    case pushChunk(PushChunk)
    case receipt(Receipt)
}

/// Protocol limits shared by the codec and the machines.
public enum ProtocolLimits {
    /// Hard limit on one frame, header included.
    public static let frameBytesMax = 1 << 20
    /// Addresses in one offer. Measured: 256 instead of 128 made two-node sync about 12%
    /// faster (half the requests, offers, wants and seals per chunk; Docs/Performance.md). A
    /// client then has up to `historyStreamsMax` × 256 chunks (64 MiB) wanted from one peer.
    public static let offerBatchMax = 256
    /// Chunks in one delivery frame (at most about 263 KiB). Measured: 64 instead of 16 made
    /// two-node sync about 12% faster, since per-message work on both sides dominates once
    /// the store is cheap (Docs/Performance.md); 128 was no faster and doubles what the
    /// inbound queue (64 messages) may hold.
    public static let deliveryChunksMax = 64
    public static let listenAddressesMax = 8
    public static let agentBytesMax = 64
    public static let messageTextBytesMax = 256
    /// Peers in one hive message (`Peers`, and the largest `PeersRequest.limit`). Bee sends at
    /// most 30 per message; 30 entries of 8 longest addresses stay a 73,502-byte payload.
    public static let hivePeersMax = 30
    /// How many more times a `RetrieveRequest` may be forwarded, at most. Each hop goes to a
    /// peer in a deeper bin of the forwarder's table, and with 8 peers in a bin the closest
    /// is about 3 bits closer still: a network of 10,000 nodes (depth about 11) is crossed in
    /// 3 or 4 hops, so 8 leaves room and still ends a request that goes round in circles.
    public static let retrieveHopsMax = 8
    /// A push is forwarded through the same tables, so it is bounded alike.
    public static let pushHopsMax = retrieveHopsMax
    /// Addresses in one `WantHave`: as many as an offer holds, so a `Presence` bitvector is
    /// at most as long as a `WantedHashes` one.
    public static let presenceBatchMax = offerBatchMax
}
