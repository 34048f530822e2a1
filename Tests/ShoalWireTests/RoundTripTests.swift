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
