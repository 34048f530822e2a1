import ShoalCore

/// The constants of the frame format (Docs/Protocol.md §1).
public enum WireFormat {
    /// The protocol version every frame carries. A frame with any other version is rejected.
    public static let version: UInt8 = 1
    /// The length prefix: a UInt32, big-endian, counting the bytes after it.
    public static let lengthFieldBytes = 4
    /// Length field, version byte and type byte.
    public static let headerBytes = 6
    /// The largest value the length field may hold: the whole frame stays within
    /// `ProtocolLimits.frameBytesMax`.
    public static let lengthMax = ProtocolLimits.frameBytesMax - lengthFieldBytes

    /// A "host:port" listen address: a 253-byte DNS name, ":" and a 5-digit port fit.
    public static let listenAddressBytesMax = 300
    /// Bins 0…31, so a stream-info request or response lists at most 32.
    public static let binsMax = Proximity.binCount
    /// One bit per offered address.
    public static let wantedBitvectorBytesMax = (ProtocolLimits.offerBatchMax + 7) / 8
    /// One bit per address a `wantHave` asks about.
    public static let presenceBitvectorBytesMax = (ProtocolLimits.presenceBatchMax + 7) / 8
    /// `GetRange.limit` is 1…`offerBatchMax`: an offer never holds more.
    public static let rangeLimitMax = ProtocolLimits.offerBatchMax
    /// A chunk on the wire is `Chunk.serialized`: span (8 bytes) ‖ payload (1…4096 bytes).
    public static let chunkBytesMin = 8 + 1
    public static let chunkBytesMax = Chunk.serializedMax

    public static let publicKeyBytes = 32
    public static let nonceBytes = 32
    public static let signatureBytes = 64

    /// A refusal at its largest: code, and a message of `ProtocolLimits.messageTextBytesMax`.
    public static let refusalBytesMax = 2 + 2 + ProtocolLimits.messageTextBytesMax
    /// A receipt's stored outcome: address, public key, signature.
    public static let receiptStoredBytes = 32 + publicKeyBytes + signatureBytes

    /// One `Peers` entry at its largest: overlay, address count, and
    /// `ProtocolLimits.listenAddressesMax` addresses of `listenAddressBytesMax` bytes.
    public static let peerAddressBytesMax = 32 + 2 + ProtocolLimits.listenAddressesMax * (2 + listenAddressBytesMax)
    /// One `Peers` entry at its smallest: overlay, address count, one 1-byte address.
    public static let peerAddressBytesMin = 32 + 2 + 2 + 1
}

/// The type byte of each message (Docs/Protocol.md §3).
public enum MessageType: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    // Connection: handshake, liveness, farewell.
    case hello = 0x01
    case helloProof = 0x02
    case ping = 0x03
    case pong = 0x04
    case goodbye = 0x05
    // Pull sync (`stream!`).
    case streamInfoRequest = 0x10
    case streamInfoResponse = 0x11
    case getRange = 0x12
    case offeredHashes = 0x13
    case wantedHashes = 0x14
    case chunkDelivery = 0x15
    case streamError = 0x16
    // Retrieval, presence and push.
    case retrieveRequest = 0x20
    case retrieveDelivery = 0x21
    case wantHave = 0x22
    case presence = 0x23
    case pushChunk = 0x24
    case receipt = 0x25
    // Hive: peers telling each other about peers.
    case peersRequest = 0x30
    case peers = 0x31

    public var description: String {
        switch self {
        case .hello: "hello"
        case .helloProof: "helloProof"
        case .ping: "ping"
        case .pong: "pong"
        case .goodbye: "goodbye"
        case .streamInfoRequest: "streamInfoRequest"
        case .streamInfoResponse: "streamInfoResponse"
        case .getRange: "getRange"
        case .offeredHashes: "offeredHashes"
        case .wantedHashes: "wantedHashes"
        case .chunkDelivery: "chunkDelivery"
        case .streamError: "streamError"
        case .retrieveRequest: "retrieveRequest"
        case .retrieveDelivery: "retrieveDelivery"
        case .wantHave: "wantHave"
        case .presence: "presence"
        case .pushChunk: "pushChunk"
        case .receipt: "receipt"
        case .peersRequest: "peersRequest"
        case .peers: "peers"
        }
    }

    /// The largest payload a valid message of this type has, from `ProtocolLimits`. A length
    /// field announcing more is rejected as soon as the type byte is seen, so a peer cannot make
    /// us buffer a megabyte for a ping.
    public var payloadBytesMax: Int {
        let text = 2  // UInt16 length prefix of a string or list
        switch self {
        case .hello:
            return 8 + WireFormat.publicKeyBytes + 32 + 8 + WireFormat.nonceBytes
                + text + ProtocolLimits.listenAddressesMax * (text + WireFormat.listenAddressBytesMax)
                + text + ProtocolLimits.agentBytesMax
        case .helloProof:
            return WireFormat.signatureBytes
        case .ping, .pong:
            return 8
        case .goodbye:
            return 2 + text + ProtocolLimits.messageTextBytesMax
        case .streamInfoRequest:
            return text + WireFormat.binsMax
        case .streamInfoResponse:
            return 8 + text + WireFormat.binsMax * (1 + 8)
        case .getRange:
            return 4 + 1 + 1 + 8 + 8 + 2
        case .offeredHashes:
            return 4 + 8 + 8 + text + ProtocolLimits.offerBatchMax * 32
        case .wantedHashes:
            return 4 + text + WireFormat.wantedBitvectorBytesMax
        case .chunkDelivery:
            return 4 + text + ProtocolLimits.deliveryChunksMax * (text + WireFormat.chunkBytesMax)
        case .streamError:
            return 4 + 2 + text + ProtocolLimits.messageTextBytesMax
        case .retrieveRequest:
            return 4 + 32 + 1
        case .retrieveDelivery:
            return 4 + 1 + max(text + WireFormat.chunkBytesMax, WireFormat.refusalBytesMax)
        case .wantHave:
            return 4 + text + ProtocolLimits.presenceBatchMax * 32
        case .presence:
            return 4 + text + WireFormat.presenceBitvectorBytesMax
        case .pushChunk:
            return 4 + 1 + text + WireFormat.chunkBytesMax
        case .receipt:
            return 4 + 1 + max(WireFormat.receiptStoredBytes, WireFormat.refusalBytesMax)
        case .peersRequest:
            return 2
        case .peers:
            return text + ProtocolLimits.hivePeersMax * WireFormat.peerAddressBytesMax
        }
    }
}

extension Message {
    /// The type byte this message is framed with.
    public var type: MessageType {
        switch self {
        case .hello: .hello
        case .helloProof: .helloProof
        case .ping: .ping
        case .pong: .pong
        case .goodbye: .goodbye
        case .streamInfoRequest: .streamInfoRequest
        case .streamInfoResponse: .streamInfoResponse
        case .getRange: .getRange
        case .offeredHashes: .offeredHashes
        case .wantedHashes: .wantedHashes
        case .chunkDelivery: .chunkDelivery
        case .streamError: .streamError
        case .retrieveRequest: .retrieveRequest
        case .retrieveDelivery: .retrieveDelivery
        case .wantHave: .wantHave
        case .presence: .presence
        case .pushChunk: .pushChunk
        case .receipt: .receipt
        case .peersRequest: .peersRequest
        case .peers: .peers
        }
    }
}
