import NIOCore
import ShoalCore
import Testing

@testable import ShoalWire

@Suite("Round trips of random messages")
struct RoundTripTests {
    @Test("decode(encode(m)) == m, and re-encoding gives the same bytes", arguments: [1, 2, 3, 0x5eed] as [UInt64])
    func randomMessagesRoundTrip(seed: UInt64) throws {
        var random = RandomMessages(seed: seed)
        for _ in 0..<500 {
            let message = random.message()
            let frame = try WireCodec.encodedBytes(message)
            let decoded = try WireCodec.decode(exactFrame: frame)
            #expect(decoded == message, "seed \(seed)")
            #expect(try WireCodec.encodedBytes(decoded) == frame, "seed \(seed)")
            #expect(frame.count - WireFormat.headerBytes <= message.type.payloadBytesMax)
        }
    }

    @Test("a message at every limit at once still fits its type's frame bound")
    func messagesAtTheLimits() throws {
        let longest = String(repeating: "x", count: WireFormat.listenAddressBytesMax)
        let fullChunk = DeliveredChunk(span: .max, payload: .init(repeating: 0x5a, count: Chunk.payloadMax))
        let atLimits: [Message] = [
            .hello(Hello(
                networkID: .max, publicKey: .init(repeating: 1, count: 32), overlay: .zero, epoch: .max,
                nonce: .init(repeating: 2, count: 32),
                listenAddresses: .init(repeating: longest, count: ProtocolLimits.listenAddressesMax),
                agent: String(repeating: "é", count: ProtocolLimits.agentBytesMax / 2))),
            .goodbye(Goodbye(reason: .banned, message: String(repeating: "€", count: 85) + "x")),
            .streamInfoRequest(StreamInfoRequest(bins: (0...31).map(UInt8.init))),
            .streamInfoResponse(StreamInfoResponse(epoch: 1, cursors: (0...31).map { .init(bin: UInt8($0), cursor: .max) })),
            .getRange(GetRange(ruid: .max, bin: 31, from: .max, to: .max, limit: 128)),
            .offeredHashes(OfferedHashes(ruid: 1, from: 1, lastIndex: UInt64(ProtocolLimits.offerBatchMax),
                                         addresses: .init(repeating: Golden.addressB, count: ProtocolLimits.offerBatchMax))),
            .wantedHashes(WantedHashes(ruid: 1, wanted: .init(repeating: true, count: ProtocolLimits.offerBatchMax))),
            .chunkDelivery(ChunkDelivery(ruid: 1, chunks: .init(
                repeating: DeliveredChunk(span: .max, payload: .init(repeating: 0x5a, count: Chunk.payloadMax)), count: ProtocolLimits.deliveryChunksMax))),
            .streamError(StreamError(ruid: 1, code: .shuttingDown, message: String(repeating: "m", count: 256))),
            .retrieveRequest(RetrieveRequest(ruid: .max, address: Golden.addressB, hopsLeft: UInt8(ProtocolLimits.retrieveHopsMax))),
            .retrieveDelivery(RetrieveDelivery(ruid: .max, outcome: .chunk(fullChunk))),
            .wantHave(WantHave(ruid: 1, addresses: .init(repeating: Golden.addressA, count: ProtocolLimits.presenceBatchMax))),
            .presence(Presence(ruid: 1, present: .init(repeating: true, count: ProtocolLimits.presenceBatchMax))),
            .pushChunk(PushChunk(ruid: .max, hopsLeft: UInt8(ProtocolLimits.pushHopsMax), chunk: fullChunk)),
            // A refusal of the longest message is longer than a signed receipt (265 bytes against 133).
            .receipt(Receipt(ruid: 1, outcome: .refused(Refusal(code: .notStored, message: String(repeating: "€", count: 85) + "x")))),
            .peersRequest(PeersRequest(limit: UInt16(ProtocolLimits.hivePeersMax))),
            .peers(Peers(peers: .init(
                repeating: PeerAddress(overlay: Golden.addressA, addresses: .init(repeating: longest, count: ProtocolLimits.listenAddressesMax)),
                count: ProtocolLimits.hivePeersMax))),
        ]
        for message in atLimits {
            let frame = try WireCodec.encodedBytes(message)
            #expect(frame.count - WireFormat.headerBytes == message.type.payloadBytesMax, "\(message.type) at its limits")
            #expect(try WireCodec.decode(exactFrame: frame) == message)
        }
    }

    @Test("the largest frame of any type is far below the 1 MiB frame limit")
    func typeBoundsWithinFrameLimit() {
        for type in MessageType.allCases {
            #expect(WireFormat.headerBytes + type.payloadBytesMax <= ProtocolLimits.frameBytesMax)
        }
        #expect(MessageType.chunkDelivery.payloadBytesMax == 262_790)  // 6 + 64 × (2 + 8 + 4096)
        #expect(MessageType.peers.payloadBytesMax == 73_502)  // 2 + 30 × (32 + 2 + 8 × (2 + 300))
        #expect(MessageType.retrieveRequest.payloadBytesMax == 37)  // 4 + 32 + 1
        #expect(MessageType.retrieveDelivery.payloadBytesMax == 4_111)  // 4 + 1 + 2 + 8 + 4096
        #expect(MessageType.wantHave.payloadBytesMax == 8_198)  // 4 + 2 + 256 × 32
        #expect(MessageType.presence.payloadBytesMax == 38)  // 4 + 2 + 32
        #expect(MessageType.pushChunk.payloadBytesMax == 4_111)  // 4 + 1 + 2 + 8 + 4096
        #expect(MessageType.receipt.payloadBytesMax == 265)  // 4 + 1 + 2 + 2 + 256
    }

    @Test("a refused receipt or delivery is at most the type's largest payload, a signed receipt 133 bytes")
    func outcomeSizes() throws {
        let refusal = Refusal(code: .overloaded, message: String(repeating: "m", count: ProtocolLimits.messageTextBytesMax))
        let refusedDelivery = try WireCodec.encodedBytes(.retrieveDelivery(RetrieveDelivery(ruid: 1, outcome: .refused(refusal))))
        #expect(refusedDelivery.count - WireFormat.headerBytes == 265)
        let signed = Receipt.Stored(address: Golden.addressA, publicKey: Golden.publicKey, signature: Golden.signature)
        let receipt = try WireCodec.encodedBytes(.receipt(Receipt(ruid: 1, outcome: .stored(signed))))
        #expect(receipt.count - WireFormat.headerBytes == 133)
    }

    @Test("a retrieved or pushed chunk carries Chunk.serialized, as a delivered one does")
    func retrievedAndPushedChunksAreSerializedChunks() throws {
        let chunk = try Chunk(span: 0x0102_0304_0506_0708, payload: Array("shoal".utf8))
        let messages: [(Message, bodyOffset: Int)] = [
            (.retrieveDelivery(RetrieveDelivery(ruid: 1, outcome: .chunk(DeliveredChunk(chunk)))), 4 + 1 + 2),
            (.pushChunk(PushChunk(ruid: 1, hopsLeft: 2, chunk: DeliveredChunk(chunk))), 4 + 1 + 2),
        ]
        for (message, bodyOffset) in messages {
            let frame = try WireCodec.encodedBytes(message)
            #expect(Array(frame[(WireFormat.headerBytes + bodyOffset)...]) == chunk.serialized, "\(message.type)")
            var delivered: DeliveredChunk?
            switch try WireCodec.decode(exactFrame: frame) {
            case .retrieveDelivery(let d): if case .chunk(let c) = d.outcome { delivered = c }
            case .pushChunk(let push): delivered = push.chunk
            default: break
            }
            let received = try #require(delivered, "\(message.type) did not decode to its chunk")
            #expect(try Chunk(span: received.span, payload: received.payload).address == chunk.address)
        }
    }

    @Test("a delivered chunk carries Chunk.serialized, so its address is the hash of the bytes received")
    func deliveredChunkIsSerializedChunk() throws {
        let chunk = try Chunk(span: 0x0102_0304_0506_0708, payload: Array("shoal".utf8))
        let frame = try WireCodec.encodedBytes(.chunkDelivery(ChunkDelivery(ruid: 1, chunks: [DeliveredChunk(chunk)])))
        let body = Array(frame[(WireFormat.headerBytes + 4 + 2 + 2)...])
        #expect(body == chunk.serialized)
        guard case .chunkDelivery(let delivery) = try WireCodec.decode(exactFrame: frame) else {
            Issue.record("not a delivery")
            return
        }
        #expect(try Chunk(span: delivery.chunks[0].span, payload: delivery.chunks[0].payload).address == chunk.address)
    }

    @Test("MessageEncoder writes what WireCodec writes")
    func messageEncoderMatchesCodec() throws {
        for vector in Golden.vectors {
            var out = ByteBuffer()
            try MessageEncoder().encode(data: vector.message, out: &out)
            #expect(Array(out.readableBytesView) == bytes(hex: vector.hex), "\(vector.name)")
        }
    }
}
