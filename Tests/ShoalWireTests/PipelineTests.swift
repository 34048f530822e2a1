// The decoder and encoder in a real NIO channel pipeline. This needs NIOEmbedded (a product of
// swift-nio) linked into the test binary: declared by this target, or brought in by another
// (HummingbirdTesting depends on it). Without it the suite compiles away, and `StreamingTests`
// still drives `MessageDecoder` the way `ByteToMessageHandler` does, through
// `NIOSingleStepByteToMessageProcessor`.

#if canImport(NIOEmbedded)
import NIOCore
import NIOEmbedded
import ShoalCore
import Testing

@testable import ShoalWire

@Suite("MessageDecoder and MessageEncoder in an EmbeddedChannel")
struct EmbeddedPipelineTests {
    func makeChannel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([
            ByteToMessageHandler(MessageDecoder()),
            MessageToByteHandler(MessageEncoder()),
        ])
        return channel
    }

    @Test("messages written go out as the golden frames")
    func outbound() throws {
        let channel = try makeChannel()
        for vector in Golden.vectors { try channel.writeOutbound(vector.message) }
        var wire: [UInt8] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { wire += buffer.readableBytesView }
        #expect(wire == Golden.vectors.flatMap { bytes(hex: $0.hex) })
        #expect(try channel.finish().isClean)
    }

    @Test("bytes read one at a time and in random pieces come in as messages", arguments: [1, 2] as [UInt64])
    func inbound(seed: UInt64) throws {
        let (messages, stream) = try StreamingTests.stream(seed: seed, randomCount: 60)
        var random = SplitMix64(seed: seed)
        let pieces = seed == 1 ? [Int](repeating: 1, count: stream.count) : randomPieces(totalBytes: stream.count, using: &random)
        let channel = try makeChannel()
        var offset = 0
        var received: [Message] = []
        for size in pieces where offset < stream.count {
            let end = min(stream.count, offset + size)
            try channel.writeInbound(ByteBuffer(bytes: stream[offset..<end]))
            offset = end
            while let message = try channel.readInbound(as: Message.self) { received.append(message) }
        }
        #expect(received == messages)
        #expect(try channel.finish().isClean)
    }

    @Test("a malformed frame fails the channel read with its WireError")
    func malformedInbound() throws {
        let channel = try makeChannel()
        let error = #expect(throws: WireError.self) {
            try channel.writeInbound(ByteBuffer(bytes: frame(type: 0x26, payload: [])))
        }
        #expect(error?.code == .unknownType)
        _ = try? channel.finish()
    }

    @Test("a connection closed inside a frame is a truncated frame")
    func closedInsideAFrame() throws {
        let channel = try makeChannel()
        try channel.writeInbound(ByteBuffer(bytes: bytes(hex: Golden.vectors[0].hex).prefix(20)))
        let error = #expect(throws: WireError.self) { _ = try channel.finish() }
        #expect(error?.code == .truncated)
    }

    @Test("an unsendable message fails its write and sends nothing")
    func unsendableOutbound() throws {
        let channel = try makeChannel()
        let count = ProtocolLimits.offerBatchMax + 1
        let offer = Message.offeredHashes(OfferedHashes(ruid: 1, from: 1, lastIndex: UInt64(count), addresses: .init(repeating: .zero, count: count)))
        let error = #expect(throws: WireError.self) { try channel.writeOutbound(offer) }
        #expect(error?.code == .countOutOfRange)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        _ = try? channel.finish()
    }
}
#endif
