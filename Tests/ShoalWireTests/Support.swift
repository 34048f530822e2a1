import NIOCore
import ShoalCore
import Testing

@testable import ShoalWire

/// Bytes from hex digits; spaces, newlines and `|` separators are ignored. Traps on a typo: the
/// hex strings are part of the tests, not input.
func bytes(hex: String) -> [UInt8] {
    let digits = hex.unicodeScalars.filter { !" \n\t|".unicodeScalars.contains($0) }.map { Character($0) }
    precondition(digits.count % 2 == 0, "odd number of hex digits in \(hex)")
    return stride(from: 0, to: digits.count, by: 2).map { i in
        guard let byte = UInt8(String(digits[i...i + 1]), radix: 16) else { preconditionFailure("not hex: \(hex)") }
        return byte
    }
}

func hexString(_ bytes: some Sequence<UInt8>) -> String {
    bytes.map { byte in
        let digits = Array("0123456789abcdef")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 0xf)]])
    }.joined()
}

/// A frame around `payload`, with a length field that is right unless told otherwise.
func frame(type: UInt8, payload: [UInt8], version: UInt8 = WireFormat.version, length: UInt32? = nil) -> [UInt8] {
    var out: [UInt8] = []
    let announced = length ?? UInt32(payload.count + 2)
    withUnsafeBytes(of: announced.bigEndian) { out.append(contentsOf: $0) }
    out.append(version)
    out.append(type)
    out.append(contentsOf: payload)
    return out
}

func be16(_ value: UInt16) -> [UInt8] { withUnsafeBytes(of: value.bigEndian) { Array($0) } }
func be32(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.bigEndian) { Array($0) } }
func be64(_ value: UInt64) -> [UInt8] { withUnsafeBytes(of: value.bigEndian) { Array($0) } }
func le64(_ value: UInt64) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }

/// Decodes every frame in `bytes`; the end of `bytes` is the end of the connection.
func decodeAll(_ bytes: [UInt8]) throws(WireError) -> [Message] {
    var buffer = ByteBuffer(bytes: bytes)
    var messages: [Message] = []
    for _ in 0...(bytes.count / WireFormat.headerBytes) {
        guard let message = try WireCodec.decode(frame: &buffer) else { break }
        messages.append(message)
    }
    if buffer.readableBytes > 0 {
        throw WireError(.truncated, "the connection ended \(buffer.readableBytes) bytes into a frame")
    }
    return messages
}

/// Feeds `bytes` through `MessageDecoder` the way `ByteToMessageHandler` does, in pieces of the
/// given sizes (the last piece takes the rest).
func decodeThroughProcessor(_ bytes: [UInt8], pieces: [Int]) throws -> [Message] {
    let processor = NIOSingleStepByteToMessageProcessor(MessageDecoder())
    var messages: [Message] = []
    var offset = 0
    for size in pieces where offset < bytes.count {
        let end = min(bytes.count, offset + size)
        try processor.process(buffer: ByteBuffer(bytes: bytes[offset..<end])) { messages.append($0) }
        offset = end
    }
    if offset < bytes.count {
        try processor.process(buffer: ByteBuffer(bytes: bytes[offset...])) { messages.append($0) }
    }
    try processor.finishProcessing(seenEOF: true) { messages.append($0) }
    return messages
}

/// Random piece sizes: mostly tiny, so headers and fields are cut at every offset.
func randomPieces(totalBytes: Int, using random: inout SplitMix64) -> [Int] {
    var pieces: [Int] = []
    var covered = 0
    while covered < totalBytes {
        let size = random.next() % 5 == 0 ? 1 + Int(random.next() % 3000) : 1 + Int(random.next() % 9)
        pieces.append(size)
        covered += size
    }
    return pieces
}

extension WireError.Code {
    /// What a frame whose payload was cut short may be rejected as.
    static let shortPayload: Set<WireError.Code> = [.truncated, .countExceedsPayload]
}

/// The error `body` throws, as a `WireError`; nil when it does not throw. Anything else thrown
/// is a test failure: the codec throws nothing but `WireError`.
func wireError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> WireError? {
    do {
        try body()
        return nil
    } catch let error as WireError {
        return error
    } catch {
        Issue.record("threw \(error), not a WireError", sourceLocation: sourceLocation)
        return nil
    }
}
