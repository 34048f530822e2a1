import ShoalCore

@testable import ShoalWire

/// Random valid messages of every type, sizes leaning on the limits, from a seeded generator.
struct RandomMessages {
    var random: SplitMix64

    init(seed: UInt64) { random = SplitMix64(seed: seed) }

    /// A count in `range`, one time in four at an end of it.
    mutating func count(_ range: ClosedRange<Int>) -> Int {
        switch random.next() % 8 {
        case 0: return range.lowerBound
        case 1: return range.upperBound
        default: return range.lowerBound + Int(random.next() % UInt64(range.count))
        }
    }

    mutating func u64() -> UInt64 {
        switch random.next() % 6 {
        case 0: return 0
        case 1: return .max
        case 2: return random.next() % 1000
        default: return random.next()
        }
    }

    mutating func u32() -> UInt32 { UInt32(truncatingIfNeeded: u64()) }

    mutating func bin() -> UInt8 { UInt8(count(0...Proximity.maxBin)) }

    mutating func address() -> Address32 {
        Address32(w0: random.next(), w1: random.next(), w2: random.next(), w3: random.next())
    }

    /// A string of at most `bytesMax` UTF-8 bytes (at least `bytesMin`), mixing 1- to 4-byte
    /// scalars, NUL included.
    mutating func text(bytesMin: Int = 0, bytesMax: Int) -> String {
        let pool: [Unicode.Scalar] = ["a", "Z", "0", ":", ".", "\u{0}", "\u{7f}", "é", "ß", "€", "中", "𝄞", "😀"]
        let target = count(bytesMin...bytesMax)
        var scalars = String.UnicodeScalarView()
        var length = 0
        while length < target {
            var scalar = pool[Int(random.next() % UInt64(pool.count))]
            if length + scalar.utf8.count > target { scalar = "x" }
            scalars.append(scalar)
            length += scalar.utf8.count
        }
        return String(scalars)
    }

    /// A chunk whose payload is mostly small, which keeps the tests fast; the ends of 1…4096
    /// still come up.
    mutating func chunk() -> DeliveredChunk {
        let size = random.next() % 4 == 0 ? count(1...Chunk.payloadMax) : count(1...64)
        return DeliveredChunk(span: u64(), payload: random.bytes(size))
    }

    mutating func refusal() -> Refusal {
        let code = [Refusal.Code.notFound, .hopLimit, .overloaded, .shuttingDown, .notStored, .loop][Int(random.next() % 6)]
        return Refusal(code: code, message: text(bytesMax: ProtocolLimits.messageTextBytesMax))
    }

    mutating func message() -> Message {
        switch MessageType.allCases[Int(random.next() % UInt64(MessageType.allCases.count))] {
        case .hello:
            let listen = (0..<count(0...ProtocolLimits.listenAddressesMax)).map { _ in
                text(bytesMin: 1, bytesMax: WireFormat.listenAddressBytesMax)
            }
            return .hello(Hello(
                networkID: u64(), publicKey: random.bytes(32), overlay: address(), epoch: u64(),
                nonce: random.bytes(32), listenAddresses: listen, agent: text(bytesMax: ProtocolLimits.agentBytesMax)))
        case .helloProof:
            return .helloProof(HelloProof(signature: random.bytes(64)))
        case .ping:
            return .ping(nonce: u64())
        case .pong:
            return .pong(nonce: u64())
        case .goodbye:
            let reason = [Goodbye.Reason.shutdown, .protocolViolation, .banned, .tooManyPeers, .idle][Int(random.next() % 5)]
            return .goodbye(Goodbye(reason: reason, message: text(bytesMax: ProtocolLimits.messageTextBytesMax)))
        case .streamInfoRequest:
            return .streamInfoRequest(StreamInfoRequest(bins: (0..<count(0...WireFormat.binsMax)).map { _ in bin() }))
        case .streamInfoResponse:
            let cursors = (0..<count(0...WireFormat.binsMax)).map { _ in StreamInfoResponse.BinCursor(bin: bin(), cursor: u64()) }
            return .streamInfoResponse(StreamInfoResponse(epoch: u64(), cursors: cursors))
        case .getRange:
            let from = u64()
            let to: UInt64? = random.next() % 2 == 0 ? nil : from + (UInt64.max - from) / UInt64(1 + random.next() % 4)
            return .getRange(GetRange(ruid: u32(), bin: bin(), from: from, to: to, limit: UInt16(count(1...WireFormat.rangeLimitMax))))
        case .offeredHashes:
            let addresses = (0..<count(0...ProtocolLimits.offerBatchMax)).map { _ in address() }
            return .offeredHashes(OfferedHashes(ruid: u32(), from: u64(), lastIndex: u64(), addresses: addresses))
        case .wantedHashes:
            return .wantedHashes(WantedHashes(ruid: u32(), bitvector: random.bytes(count(0...WireFormat.wantedBitvectorBytesMax))))
        case .chunkDelivery:
            let chunks = (0..<count(1...ProtocolLimits.deliveryChunksMax)).map { _ in chunk() }
            return .chunkDelivery(ChunkDelivery(ruid: u32(), chunks: chunks))
        case .streamError:
            let code = [StreamError.Code.binNotServed, .rangeEvicted, .overloaded, .badRequest, .shuttingDown][Int(random.next() % 5)]
            return .streamError(StreamError(ruid: u32(), code: code, message: text(bytesMax: ProtocolLimits.messageTextBytesMax)))
        case .retrieveRequest:
            return .retrieveRequest(RetrieveRequest(ruid: u32(), address: address(), hopsLeft: UInt8(count(0...ProtocolLimits.retrieveHopsMax))))
        case .retrieveDelivery:
            let outcome: RetrieveDelivery.Outcome = random.next() % 2 == 0 ? .chunk(chunk()) : .refused(refusal())
            return .retrieveDelivery(RetrieveDelivery(ruid: u32(), outcome: outcome))
        case .wantHave:
            return .wantHave(WantHave(ruid: u32(), addresses: (0..<count(1...ProtocolLimits.presenceBatchMax)).map { _ in address() }))
        case .presence:
            return .presence(Presence(ruid: u32(), bitvector: random.bytes(count(1...WireFormat.presenceBitvectorBytesMax))))
        case .pushChunk:
            return .pushChunk(PushChunk(ruid: u32(), hopsLeft: UInt8(count(0...ProtocolLimits.pushHopsMax)), chunk: chunk()))
        case .receipt:
            let outcome: Receipt.Outcome = random.next() % 2 == 0
                ? .stored(.init(address: address(), publicKey: random.bytes(32), signature: random.bytes(64)))
                : .refused(refusal())
            return .receipt(Receipt(ruid: u32(), outcome: outcome))
        case .peersRequest:
            return .peersRequest(PeersRequest(limit: UInt16(count(1...ProtocolLimits.hivePeersMax))))
        case .peers:
            // Entries repeat and addresses need not parse as "host:port": the codec checks sizes only.
            let peers = (0..<count(0...ProtocolLimits.hivePeersMax)).map { _ in
                PeerAddress(overlay: address(), addresses: (0..<count(1...ProtocolLimits.listenAddressesMax)).map { _ in
                    text(bytesMin: 1, bytesMax: WireFormat.listenAddressBytesMax)
                })
            }
            return .peers(Peers(peers: peers))
        }
    }
}
