import NIOCore
import ShoalCore

/// Reads one message's payload field by field. Every read checks the bytes left first and
/// throws a `WireError` naming the field; nothing here traps on input.
struct PayloadReader {
    private var buffer: ByteBuffer
    let type: MessageType

    init(payload: ByteBuffer, type: MessageType) {
        self.buffer = payload
        self.type = type
    }

    var bytesLeft: Int { buffer.readableBytes }

    private func truncated(_ field: String, needs: Int) -> WireError {
        WireError(.truncated, "\(type).\(field): needs \(needs) bytes, the payload has \(bytesLeft) left")
    }

    mutating func readInteger<I: FixedWidthInteger>(
        _ field: String, as: I.Type = I.self, endianness: Endianness = .big
    ) throws(WireError) -> I {
        guard let value = buffer.readInteger(endianness: endianness, as: I.self) else {
            throw truncated(field, needs: MemoryLayout<I>.size)
        }
        return value
    }

    /// Exactly `count` raw bytes (keys, nonces, signatures): a fixed size, so a shortfall is
    /// truncation.
    mutating func readFixedBytes(_ field: String, count: Int) throws(WireError) -> [UInt8] {
        guard let bytes = buffer.readBytes(length: count) else { throw truncated(field, needs: count) }
        return bytes
    }

    mutating func readAddress(_ field: String) throws(WireError) -> Address32 {
        guard buffer.readableBytes >= 32 else { throw truncated(field, needs: 32) }
        let w0: UInt64 = try readInteger(field)
        let w1: UInt64 = try readInteger(field)
        let w2: UInt64 = try readInteger(field)
        let w3: UInt64 = try readInteger(field)
        return Address32(w0: w0, w1: w1, w2: w2, w3: w3)
    }

    /// A UInt16 list count: within `range`, and consistent with the bytes left given that each
    /// element takes at least `elementBytesMin`.
    mutating func readCount(
        _ field: String, range: ClosedRange<Int>, elementBytesMin: Int
    ) throws(WireError) -> Int {
        let count = Int(try readInteger(field + ".count", as: UInt16.self))
        guard range.contains(count) else {
            throw WireError(.countOutOfRange, "\(type).\(field): count \(count) is outside \(range.lowerBound)…\(range.upperBound)")
        }
        guard count * elementBytesMin <= bytesLeft else {
            throw WireError(
                .countExceedsPayload,
                "\(type).\(field): count \(count) needs at least \(count * elementBytesMin) bytes, the payload has \(bytesLeft) left")
        }
        return count
    }

    /// A byte string with a UInt16 length prefix, the length within `range`.
    mutating func readLengthPrefixedBytes(
        _ field: String, range: ClosedRange<Int>, outOfRange: WireError.Code
    ) throws(WireError) -> [UInt8] {
        let length = Int(try readInteger(field + ".length", as: UInt16.self))
        guard range.contains(length) else {
            throw WireError(outOfRange, "\(type).\(field): length \(length) is outside \(range.lowerBound)…\(range.upperBound)")
        }
        guard let bytes = buffer.readBytes(length: length) else {
            throw WireError(.countExceedsPayload, "\(type).\(field): length \(length), the payload has \(bytesLeft) left")
        }
        return bytes
    }

    /// A UTF-8 string with a UInt16 byte-length prefix. Invalid UTF-8 is rejected, not repaired:
    /// a repaired string would re-encode to different bytes.
    mutating func readText(_ field: String, bytes range: ClosedRange<Int>) throws(WireError) -> String {
        let bytes = try readLengthPrefixedBytes(field, range: range, outOfRange: .textLengthOutOfRange)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw WireError(.invalidUTF8, "\(type).\(field): \(bytes.count) bytes are not valid UTF-8")
        }
        return text
    }

    /// A list of "host:port" strings (hello's listen addresses, a hive entry's addresses):
    /// a count within `count`, each string 1…`listenAddressBytesMax` bytes of UTF-8.
    mutating func readListenAddresses(_ field: String, count range: ClosedRange<Int>) throws(WireError) -> [String] {
        // Each address takes at least its 2-byte length and 1 byte.
        let count = try readCount(field, range: range, elementBytesMin: 3)
        var addresses: [String] = []
        addresses.reserveCapacity(count)
        for _ in 0..<count {
            addresses.append(try readText(field + "[]", bytes: 1...WireFormat.listenAddressBytesMax))
        }
        return addresses
    }

    /// A chunk on the wire: a UInt16 size (9…4104) ‖ span (UInt64 little-endian) ‖ payload.
    mutating func readChunk(_ field: String) throws(WireError) -> DeliveredChunk {
        let bytes = try readLengthPrefixedBytes(
            field, range: WireFormat.chunkBytesMin...WireFormat.chunkBytesMax, outOfRange: .invalidChunkSize)
        var span: UInt64 = 0
        for i in 0..<8 { span |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        return DeliveredChunk(span: span, payload: Array(bytes[8...]))
    }

    /// A refusal: a `Refusal.Code` (UInt16) ‖ a message of at most `messageTextBytesMax` bytes.
    mutating func readRefusal() throws(WireError) -> Refusal {
        let raw: UInt16 = try readInteger("refusal.code")
        guard let code = Refusal.Code(rawValue: raw) else {
            throw WireError(.unknownEnumValue, "\(type).refusal.code: unknown value \(raw)")
        }
        let message = try readText("refusal.message", bytes: 0...ProtocolLimits.messageTextBytesMax)
        return Refusal(code: code, message: message)
    }

    mutating func readBin(_ field: String) throws(WireError) -> UInt8 {
        let bin: UInt8 = try readInteger(field)
        guard Int(bin) <= Proximity.maxBin else {
            throw WireError(.invalidBin, "\(type).\(field): bin \(bin) is above \(Proximity.maxBin)")
        }
        return bin
    }

    /// Called after the last field: a payload is consumed exactly.
    func finish() throws(WireError) {
        guard bytesLeft == 0 else {
            throw WireError(.trailingBytes, "\(type): \(bytesLeft) bytes after the last field")
        }
    }
}
