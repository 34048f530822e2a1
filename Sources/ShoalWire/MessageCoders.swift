import NIOCore
import ShoalCore

/// Turns the inbound byte stream of a connection into `Message`s, one frame at a time.
///
///     channel.pipeline.addHandler(ByteToMessageHandler(MessageDecoder()))
///
/// Buffering is bounded by the frame format itself: a length field above the limit of its
/// message type is rejected once the 6 header bytes are in, so at most one frame of the largest
/// type (a full chunk delivery, 262,796 bytes) is waited for. An error is thrown as a `WireError`;
/// the handler then fires `errorCaught` and the connection is to be closed.
public struct MessageDecoder: NIOSingleStepByteToMessageDecoder, Sendable {
    public typealias InboundOut = Message

    public init() {}

    public mutating func decode(buffer: inout ByteBuffer) throws -> Message? {
        try WireCodec.decode(frame: &buffer)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> Message? {
        if let message = try WireCodec.decode(frame: &buffer) { return message }
        // A peer that closes the connection inside a frame sent a truncated frame. Without EOF
        // the handler is being removed, and what is left is passed on as bytes.
        if seenEOF && buffer.readableBytes > 0 {
            throw WireError(.truncated, "the connection ended \(buffer.readableBytes) bytes into a frame")
        }
        return nil
    }
}

/// Frames outbound `Message`s.
///
///     channel.pipeline.addHandler(MessageToByteHandler(MessageEncoder()))
///
/// A message that breaks a protocol limit fails its write with a `WireError` instead of
/// producing a frame the peer would reject.
public struct MessageEncoder: MessageToByteEncoder, Sendable {
    public typealias OutboundIn = Message

    public init() {}

    public func encode(data: Message, out: inout ByteBuffer) throws {
        try WireCodec.encode(data, into: &out)
    }
}
