import NIOCore
import ShoalCore
import Testing

@testable import ShoalWire

@Suite("Decoding a byte stream however it is split")
struct StreamingTests {
    /// Every golden vector, then random messages: one connection's worth of frames.
    static func stream(seed: UInt64, randomCount: Int) throws -> (messages: [Message], bytes: [UInt8]) {
        var random = RandomMessages(seed: seed)
        let messages = Golden.vectors.map(\.message) + (0..<randomCount).map { _ in random.message() }
        var buffer = ByteBuffer()
        for message in messages { try WireCodec.encode(message, into: &buffer) }
        return (messages, Array(buffer.readableBytesView))
    }

    @Test("a frame's every proper prefix decodes to nil and leaves the buffer untouched", arguments: Golden.vectors)
    func everyPrefixIsIncomplete(_ vector: GoldenVector) throws {
        let frame = bytes(hex: vector.hex)
        for length in 0..<frame.count {
            var buffer = ByteBuffer(bytes: frame[..<length])
            let before = buffer
            #expect(try WireCodec.decode(frame: &buffer) == nil, "\(vector.name), \(length) bytes")
            #expect(buffer == before && buffer.readerIndex == before.readerIndex)
        }
    }

    @Test("a connection that ends inside a frame is a truncated frame", arguments: Golden.vectors)
    func endOfStreamInsideAFrame(_ vector: GoldenVector) throws {
        let frame = bytes(hex: vector.hex)
        for length in 1..<frame.count {
            #expect(wireError { _ = try WireCodec.decode(exactFrame: frame[..<length]) }?.code == .truncated)
            var decoder = MessageDecoder()
            var buffer = ByteBuffer(bytes: frame[..<length])
            #expect(throws: WireError.self) { _ = try decoder.decodeLast(buffer: &buffer, seenEOF: true) }
            // Without EOF the handler is only being removed: the bytes are handed on, not an error.
            #expect(try decoder.decodeLast(buffer: &buffer, seenEOF: false) == nil)
        }
    }

    @Test("WireCodec.decode fed one byte at a time gives the same messages")
    func byteAtATime() throws {
        let (messages, stream) = try Self.stream(seed: 11, randomCount: 40)
        var buffer = ByteBuffer()
        var decoded: [Message] = []
        for byte in stream {
            buffer.writeInteger(byte)
            let before = buffer.readableBytes
            if let message = try WireCodec.decode(frame: &buffer) {
                decoded.append(message)
                #expect(buffer.readableBytes == 0)
            } else {
                #expect(buffer.readableBytes == before)
            }
        }
        #expect(decoded == messages)
    }

    @Test("WireCodec.decode on an accumulating buffer, random splits", arguments: [21, 22, 23] as [UInt64])
    func randomSplitsAccumulating(seed: UInt64) throws {
        let (messages, stream) = try Self.stream(seed: seed, randomCount: 150)
        var random = SplitMix64(seed: seed)
        var buffer = ByteBuffer()
        var decoded: [Message] = []
        var offset = 0
        for size in randomPieces(totalBytes: stream.count, using: &random) {
            let end = min(stream.count, offset + size)
            buffer.writeBytes(stream[offset..<end])
            offset = end
            // At most one frame per 6 bytes: the inner loop is bounded by the buffer.
            for _ in 0...(buffer.readableBytes / WireFormat.headerBytes) {
                guard let message = try WireCodec.decode(frame: &buffer) else { break }
                decoded.append(message)
            }
            buffer.discardReadBytes()
        }
        #expect(decoded == messages, "seed \(seed)")
        #expect(buffer.readableBytes == 0)
    }

    @Test("MessageDecoder driven as ByteToMessageHandler drives it, in random splits and whole",
          arguments: [31, 32, 33] as [UInt64])
    func messageDecoderSplits(seed: UInt64) throws {
        let (messages, stream) = try Self.stream(seed: seed, randomCount: 150)
        var random = SplitMix64(seed: seed)
        #expect(try decodeThroughProcessor(stream, pieces: randomPieces(totalBytes: stream.count, using: &random)) == messages)
        #expect(try decodeThroughProcessor(stream, pieces: [stream.count]) == messages)
    }

    @Test("MessageDecoder fed one byte at a time")
    func messageDecoderByteAtATime() throws {
        let (messages, stream) = try Self.stream(seed: 34, randomCount: 40)
        #expect(try decodeThroughProcessor(stream, pieces: .init(repeating: 1, count: stream.count)) == messages)
    }

    @Test("an error ends decoding after the good frames before it")
    func errorAfterGoodFrames() throws {
        let good = try WireCodec.encodedBytes(.ping(nonce: 1)) + WireCodec.encodedBytes(.pong(nonce: 1))
        let bad = frame(type: 0x7f, payload: [])
        var received: [Message] = []
        let processor = NIOSingleStepByteToMessageProcessor(MessageDecoder())
        let error = try #require(throws: WireError.self) {
            try processor.process(buffer: ByteBuffer(bytes: good + bad)) { received.append($0) }
        }
        #expect(error.code == .unknownType)
        #expect(received == [.ping(nonce: 1), .pong(nonce: 1)])
    }
}
