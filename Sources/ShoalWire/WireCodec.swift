import NIOCore
import ShoalCore

/// Frames and messages in their byte form (Docs/Protocol.md).
///
/// A frame is `length: UInt32 BE` ‖ `version: UInt8` ‖ `type: UInt8` ‖ payload, with `length`
/// counting the bytes after itself. Both directions check every limit: `decode` rejects what a
/// peer must not send, and `encode` refuses to produce what a peer would reject.
public enum WireCodec {
    // MARK: Frames

    /// Appends one frame holding `message` to `buffer`.
    ///
    /// Throws when the message breaks a limit of the protocol (e.g. 200 addresses in an
    /// offer, a 31-byte public key); `buffer` is then left as it was.
    public static func encode(_ message: Message, into buffer: inout ByteBuffer) throws(WireError) {
        let start = buffer.writerIndex
        buffer.writeInteger(UInt32(0))  // patched below, once the payload's size is known
        buffer.writeInteger(WireFormat.version)
        buffer.writeInteger(message.type.rawValue)
        do throws(WireError) {
            try writePayload(message, into: &buffer)
            let length = buffer.writerIndex - start - WireFormat.lengthFieldBytes
            let payloadBytes = length - 2
            // Unreachable while the per-field checks hold; kept so that a change to the limits
            // cannot make us send a frame every peer rejects.
            guard payloadBytes <= message.type.payloadBytesMax, length <= WireFormat.lengthMax else {
                throw WireError(.frameTooLarge, "\(message.type): \(payloadBytes) payload bytes, at most \(message.type.payloadBytesMax)")
            }
            buffer.setInteger(UInt32(length), at: start)
        } catch {
            buffer.moveWriterIndex(to: start)
            throw error
        }
    }

    /// One frame holding `message`.
    public static func encode(_ message: Message) throws(WireError) -> ByteBuffer {
        var buffer = ByteBuffer()
        try encode(message, into: &buffer)
        return buffer
    }

    /// One frame holding `message`, as bytes.
    public static func encodedBytes(_ message: Message) throws(WireError) -> [UInt8] {
        let buffer = try encode(message)
        return Array(buffer.readableBytesView)
    }

    /// Decodes the frame at the start of `buffer`'s readable bytes.
    ///
    /// - Returns: the message, having consumed exactly its frame; or `nil` when `buffer` does not
    ///   yet hold a whole frame, leaving `buffer` untouched.
    /// - Throws: as soon as the bytes present are invalid: an oversize length field is rejected
    ///   once its 4 bytes are here, a bad version or type once those bytes are. `buffer` is left
    ///   untouched; the connection is to be dropped.
    public static func decode(frame buffer: inout ByteBuffer) throws(WireError) -> Message? {
        guard let header = try peekHeader(buffer) else { return nil }
        let frameBytes = WireFormat.lengthFieldBytes + header.length
        guard buffer.readableBytes >= frameBytes,
            let payload = buffer.getSlice(at: buffer.readerIndex + WireFormat.headerBytes, length: header.length - 2)
        else { return nil }
        var reader = PayloadReader(payload: payload, type: header.type)
        let message = try readPayload(&reader)
        try reader.finish()
        buffer.moveReaderIndex(forwardBy: frameBytes)
        return message
    }

    /// Decodes `bytes` as exactly one whole frame: fewer bytes is `truncated`, more is
    /// `trailingBytes`.
    public static func decode(exactFrame bytes: some Sequence<UInt8>) throws(WireError) -> Message {
        var buffer = ByteBuffer(bytes: bytes)
        guard let message = try decode(frame: &buffer) else {
            throw WireError(.truncated, "\(buffer.readableBytes) bytes hold no whole frame")
        }
        guard buffer.readableBytes == 0 else {
            throw WireError(.trailingBytes, "\(buffer.readableBytes) bytes after the frame")
        }
        return message
    }

    private struct Header {
        var length: Int
        var type: MessageType
    }

    /// Checks the header bytes that are present, in order; nil until all 6 are here.
    private static func peekHeader(_ buffer: ByteBuffer) throws(WireError) -> Header? {
        let at = buffer.readerIndex
        guard let length32 = buffer.getInteger(at: at, as: UInt32.self) else { return nil }
        let length = Int(length32)
        guard length <= WireFormat.lengthMax else {
            throw WireError(.frameTooLarge, "length field \(length): a frame is at most \(ProtocolLimits.frameBytesMax) bytes in all")
        }
        guard length >= 2 else {
            throw WireError(.frameTooShort, "length field \(length): a frame has at least a version and a type byte")
        }
        guard let version = buffer.getInteger(at: at + 4, as: UInt8.self) else { return nil }
        guard version == WireFormat.version else {
            throw WireError(.unsupportedVersion, "version \(version), this node speaks \(WireFormat.version)")
        }
        guard let typeByte = buffer.getInteger(at: at + 5, as: UInt8.self) else { return nil }
        guard let type = MessageType(rawValue: typeByte) else {
            throw WireError(.unknownType, "type \(hex(typeByte)) is not a message type")
        }
        guard length - 2 <= type.payloadBytesMax else {
            throw WireError(.frameTooLarge, "\(type): length field announces \(length - 2) payload bytes, at most \(type.payloadBytesMax)")
        }
        return Header(length: length, type: type)
    }

    static func hex(_ byte: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return "0x" + String(digits[Int(byte >> 4)]) + String(digits[Int(byte & 0xf)])
    }
}
