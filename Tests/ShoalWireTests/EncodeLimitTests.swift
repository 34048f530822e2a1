import NIOCore
import ShoalCore
import Testing

@testable import ShoalWire

/// A message the encoder must refuse, and why.
struct UnsendableCase: Sendable, CustomStringConvertible {
    let name: String
    let message: Message
    let expected: WireError.Code

    init(_ name: String, _ message: Message, _ expected: WireError.Code) {
        (self.name, self.message, self.expected) = (name, message, expected)
    }

    var description: String { name }
}

enum Unsendable {
    static func hello(publicKey: [UInt8] = Golden.publicKey, nonce: [UInt8] = Golden.nonce,
                      listen: [String] = [], agent: String = "shoal") -> Message {
        .hello(Hello(networkID: 1, publicKey: publicKey, overlay: Golden.overlay, epoch: 0, nonce: nonce,
                     listenAddresses: listen, agent: agent))
    }

    static func delivery(_ payloadSizes: [Int]) -> Message {
        .chunkDelivery(ChunkDelivery(ruid: 1, chunks: payloadSizes.map { DeliveredChunk(span: 1, payload: .init(repeating: 7, count: $0)) }))
    }

    static func peer(_ addresses: [String]) -> PeerAddress { PeerAddress(overlay: Golden.addressA, addresses: addresses) }
    static func peers(_ entries: [PeerAddress]) -> Message { .peers(Peers(peers: entries)) }

    static func retrieved(payloadBytes: Int) -> Message {
        .retrieveDelivery(RetrieveDelivery(ruid: 1, outcome: .chunk(DeliveredChunk(span: 1, payload: .init(repeating: 7, count: payloadBytes)))))
    }

    static func receipt(publicKey: [UInt8] = Golden.publicKey, signature: [UInt8] = Golden.signature) -> Message {
        .receipt(Receipt(ruid: 1, outcome: .stored(.init(address: Golden.addressA, publicKey: publicKey, signature: signature))))
    }

    static let longRefusal = Refusal(code: .overloaded, message: String(repeating: "m", count: 257))

    static let cases: [UnsendableCase] = [
        .init("offer of 400 addresses", .offeredHashes(OfferedHashes(ruid: 1, from: 1, lastIndex: 400, addresses: .init(repeating: .zero, count: 400))), .countOutOfRange),
        .init("offer of 257 addresses", .offeredHashes(OfferedHashes(ruid: 1, from: 1, lastIndex: 257, addresses: .init(repeating: .zero, count: 257))), .countOutOfRange),
        .init("delivery of 65 chunks", delivery(.init(repeating: 1, count: ProtocolLimits.deliveryChunksMax + 1)), .countOutOfRange),
        .init("delivery of no chunks", delivery([]), .countOutOfRange),
        .init("chunk with an empty payload", delivery([5, 0]), .invalidChunkSize),
        .init("chunk with a 4097-byte payload", delivery([4097]), .invalidChunkSize),
        .init("hello with a 31-byte public key", hello(publicKey: .init(repeating: 1, count: 31)), .invalidValue),
        .init("hello with a 33-byte nonce", hello(nonce: .init(repeating: 1, count: 33)), .invalidValue),
        .init("hello with 9 listen addresses", hello(listen: .init(repeating: "h:1", count: 9)), .countOutOfRange),
        .init("hello with an empty listen address", hello(listen: [""]), .textLengthOutOfRange),
        .init("hello with a 301-byte listen address", hello(listen: [String(repeating: "h", count: 301)]), .textLengthOutOfRange),
        .init("hello agent of 33 two-byte characters (66 bytes)", hello(agent: String(repeating: "é", count: 33)), .textLengthOutOfRange),
        .init("hello proof of 63 bytes", .helloProof(HelloProof(signature: .init(repeating: 1, count: 63))), .invalidValue),
        .init("goodbye message of 257 bytes", .goodbye(Goodbye(reason: .idle, message: String(repeating: "m", count: 257))), .textLengthOutOfRange),
        .init("stream error message of 257 bytes", .streamError(StreamError(ruid: 1, code: .overloaded, message: String(repeating: "m", count: 257))), .textLengthOutOfRange),
        .init("stream-info request of 33 bins", .streamInfoRequest(StreamInfoRequest(bins: .init(repeating: 1, count: 33))), .countOutOfRange),
        .init("stream-info request for bin 32", .streamInfoRequest(StreamInfoRequest(bins: [32])), .invalidBin),
        .init("stream-info response cursor of bin 32", .streamInfoResponse(StreamInfoResponse(epoch: 1, cursors: [.init(bin: 32, cursor: 1)])), .invalidBin),
        .init("getRange of bin 32", .getRange(GetRange(ruid: 1, bin: 32, from: 1, to: nil, limit: 1)), .invalidBin),
        .init("getRange limit 0", .getRange(GetRange(ruid: 1, bin: 1, from: 1, to: nil, limit: 0)), .invalidValue),
        .init("getRange limit 257", .getRange(GetRange(ruid: 1, bin: 1, from: 1, to: 2, limit: 257)), .invalidValue),
        .init("getRange from above to", .getRange(GetRange(ruid: 1, bin: 1, from: 3, to: 2, limit: 1)), .invalidValue),
        .init("bitvector of 33 bytes", .wantedHashes(WantedHashes(ruid: 1, wanted: .init(repeating: true, count: 257))), .countOutOfRange),
        .init("retrieve request with 9 hops left", .retrieveRequest(RetrieveRequest(ruid: 1, address: Golden.addressA, hopsLeft: 9)), .invalidValue),
        .init("retrieve delivery of an empty chunk", retrieved(payloadBytes: 0), .invalidChunkSize),
        .init("retrieve delivery of a 4097-byte payload", retrieved(payloadBytes: 4097), .invalidChunkSize),
        .init("retrieve delivery refusal message of 257 bytes", .retrieveDelivery(RetrieveDelivery(ruid: 1, outcome: .refused(longRefusal))), .textLengthOutOfRange),
        .init("want-have of no addresses", .wantHave(WantHave(ruid: 1, addresses: [])), .countOutOfRange),
        .init("want-have of 257 addresses", .wantHave(WantHave(ruid: 1, addresses: .init(repeating: .zero, count: 257))), .countOutOfRange),
        .init("presence of no bytes", .presence(Presence(ruid: 1, present: [])), .countOutOfRange),
        .init("presence of 33 bytes", .presence(Presence(ruid: 1, present: .init(repeating: true, count: 257))), .countOutOfRange),
        .init("push with 9 hops left", .pushChunk(PushChunk(ruid: 1, hopsLeft: 9, chunk: DeliveredChunk(span: 1, payload: [1]))), .invalidValue),
        .init("push of an empty chunk", .pushChunk(PushChunk(ruid: 1, hopsLeft: 1, chunk: DeliveredChunk(span: 1, payload: []))), .invalidChunkSize),
        .init("push of a 4097-byte payload", .pushChunk(PushChunk(ruid: 1, hopsLeft: 1, chunk: DeliveredChunk(span: 1, payload: .init(repeating: 1, count: 4097)))), .invalidChunkSize),
        .init("receipt with a 31-byte public key", receipt(publicKey: .init(repeating: 1, count: 31)), .invalidValue),
        .init("receipt with a 65-byte signature", receipt(signature: .init(repeating: 1, count: 65)), .invalidValue),
        .init("receipt refusal message of 257 bytes", .receipt(Receipt(ruid: 1, outcome: .refused(longRefusal))), .textLengthOutOfRange),
        .init("peers request limit 0", .peersRequest(PeersRequest(limit: 0)), .invalidValue),
        .init("peers request limit 31", .peersRequest(PeersRequest(limit: 31)), .invalidValue),
        .init("peers of 31 entries", peers(.init(repeating: peer(["h:1"]), count: ProtocolLimits.hivePeersMax + 1)), .countOutOfRange),
        .init("peers entry with no address", peers([peer(["h:1"]), peer([])]), .countOutOfRange),
        .init("peers entry with 9 addresses", peers([peer(.init(repeating: "h:1", count: 9))]), .countOutOfRange),
        .init("peers entry with an empty address", peers([peer(["h:1", ""])]), .textLengthOutOfRange),
        .init("peers entry with a 301-byte address", peers([peer([String(repeating: "h", count: 301)])]), .textLengthOutOfRange),
        .init("peers entry with a 151-character address of 302 bytes", peers([peer([String(repeating: "é", count: 151)])]), .textLengthOutOfRange),
    ]
}

@Suite("The encoder refuses what a peer would reject")
struct EncodeLimitTests {
    @Test("it throws and leaves the buffer as it was", arguments: Unsendable.cases)
    func refuses(_ row: UnsendableCase) throws {
        var buffer = ByteBuffer(bytes: [0xde, 0xad])
        buffer.moveReaderIndex(forwardBy: 1)
        let before = buffer
        let error = wireError { try WireCodec.encode(row.message, into: &buffer) }
        #expect(error?.code == row.expected, "\(error?.description ?? "encoded")")
        #expect(buffer == before && buffer.writerIndex == before.writerIndex)
    }

    @Test("MessageEncoder fails the write the same way", arguments: Unsendable.cases)
    func messageEncoderRefuses(_ row: UnsendableCase) {
        var out = ByteBuffer()
        let error = #expect(throws: WireError.self) { try MessageEncoder().encode(data: row.message, out: &out) }
        #expect(error?.code == row.expected)
        #expect(out.readableBytes == 0)
    }

    @Test("what the encoder refuses, the decoder would have refused too", arguments: Unsendable.cases)
    func decoderAgrees(_ row: UnsendableCase) throws {
        // Frame the message by hand with the limits ignored, as a careless peer would.
        let forced = try #require(ForcedFrame.bytes(row.message))
        let error = wireError { _ = try WireCodec.decode(exactFrame: forced) }
        #expect(error != nil, "the decoder accepts what the encoder refuses: \(row.name)")
    }
}

/// Frames a message with no limit checked, the same layout as WireCodec: what a peer that
/// ignores the limits would send.
enum ForcedFrame {
    static func bytes(_ message: Message) -> [UInt8]? {
        var p: [UInt8] = []
        func text(_ s: String) { p += be16(UInt16(truncatingIfNeeded: s.utf8.count)) + Array(s.utf8) }
        func chunk(_ c: DeliveredChunk) -> [UInt8] { be16(UInt16(8 + c.payload.count)) + le64(c.span) + c.payload }
        switch message {
        case .hello(let h):
            p += be64(h.networkID) + h.publicKey + h.overlay.bytes + be64(h.epoch) + h.nonce + be16(UInt16(h.listenAddresses.count))
            h.listenAddresses.forEach(text)
            text(h.agent)
        case .helloProof(let proof): p += proof.signature
        case .goodbye(let g): p += be16(g.reason.rawValue); text(g.message)
        case .streamError(let e): p += be32(e.ruid) + be16(e.code.rawValue); text(e.message)
        case .streamInfoRequest(let r): p += be16(UInt16(r.bins.count)) + r.bins
        case .streamInfoResponse(let r): p += be64(r.epoch) + be16(UInt16(r.cursors.count)) + r.cursors.flatMap { [$0.bin] + be64($0.cursor) }
        case .getRange(let g): p += be32(g.ruid) + [g.bin, g.to == nil ? 0 : 1] + be64(g.from) + (g.to.map(be64) ?? []) + be16(g.limit)
        case .offeredHashes(let o): p += be32(o.ruid) + be64(o.from) + be64(o.lastIndex) + be16(UInt16(o.addresses.count)) + o.addresses.flatMap(\.bytes)
        case .wantedHashes(let w): p += be32(w.ruid) + be16(UInt16(w.bitvector.count)) + w.bitvector
        case .chunkDelivery(let d): p += be32(d.ruid) + be16(UInt16(d.chunks.count)) + d.chunks.flatMap(chunk)
        case .retrieveRequest(let r): p += be32(r.ruid) + r.address.bytes + [r.hopsLeft]
        case .retrieveDelivery(let d):
            p += be32(d.ruid)
            switch d.outcome {
            case .chunk(let c): p += [0] + chunk(c)
            case .refused(let r): p += [1] + be16(r.code.rawValue); text(r.message)
            }
        case .wantHave(let w): p += be32(w.ruid) + be16(UInt16(truncatingIfNeeded: w.addresses.count)) + w.addresses.flatMap(\.bytes)
        case .presence(let presence): p += be32(presence.ruid) + be16(UInt16(presence.bitvector.count)) + presence.bitvector
        case .pushChunk(let push): p += be32(push.ruid) + [push.hopsLeft] + chunk(push.chunk)
        case .receipt(let r):
            p += be32(r.ruid)
            switch r.outcome {
            case .stored(let s): p += [0] + s.address.bytes + s.publicKey + s.signature
            case .refused(let refusal): p += [1] + be16(refusal.code.rawValue); text(refusal.message)
            }
        case .peersRequest(let r): p += be16(r.limit)
        case .peers(let m):
            p += be16(UInt16(m.peers.count))
            for peer in m.peers {
                p += peer.overlay.bytes + be16(UInt16(peer.addresses.count))
                peer.addresses.forEach(text)
            }
        case .ping, .pong: return nil
        }
        return frame(type: message.type.rawValue, payload: p)
    }
}
