import NIOCore
import ShoalCore
import Testing

@testable import ShoalWire

/// One malformed input and the error it must be rejected with.
struct MalformedCase: Sendable, CustomStringConvertible {
    let name: String
    let bytes: [UInt8]
    let expected: WireError.Code

    init(_ name: String, _ bytes: [UInt8], _ expected: WireError.Code) {
        (self.name, self.bytes, self.expected) = (name, bytes, expected)
    }

    var description: String { name }
}

enum Malformed {
    static let t = (hello: UInt8(0x01), proof: UInt8(0x02), ping: UInt8(0x03), goodbye: UInt8(0x05),
                    infoReq: UInt8(0x10), infoRes: UInt8(0x11), range: UInt8(0x12), offer: UInt8(0x13),
                    wanted: UInt8(0x14), delivery: UInt8(0x15), streamError: UInt8(0x16),
                    retrieveRequest: UInt8(0x20), retrieveDelivery: UInt8(0x21), wantHave: UInt8(0x22),
                    presence: UInt8(0x23), pushChunk: UInt8(0x24), receipt: UInt8(0x25),
                    peersRequest: UInt8(0x30), peers: UInt8(0x31))

    /// A hello's fields up to the listen-address count.
    static let helloFixed = be64(1) + Golden.publicKey + Golden.overlay.bytes + be64(0) + Golden.nonce
    static func text(_ raw: [UInt8]) -> [UInt8] { be16(UInt16(raw.count)) + raw }
    static func chunk(_ payloadBytes: Int, span: UInt64 = 1) -> [UInt8] {
        be16(UInt16(8 + payloadBytes)) + le64(span) + [UInt8](repeating: 0x61, count: payloadBytes)
    }
    static let oneChunk = chunk(3)
    /// One `peers` entry: overlay ‖ address count ‖ addresses (as raw strings).
    static func entry(_ addresses: [[UInt8]], overlay: Address32 = Golden.addressA) -> [UInt8] {
        overlay.bytes + be16(UInt16(addresses.count)) + addresses.flatMap(text)
    }
    static let goodEntry = entry([Array("127.0.0.1:1634".utf8)])
    static func getRange(bin: UInt8 = 3, flags: UInt8 = 1, from: UInt64 = 1, to: UInt64 = 9, limit: UInt16 = 128) -> [UInt8] {
        be32(7) + [bin, flags] + be64(from) + (flags == 1 ? be64(to) : []) + be16(limit)
    }

    static let cases: [MalformedCase] = frameCases + truncatedCases + trailingCases + countCases + chunkCases
        + textCases + enumCases + binCases + valueCases + hiveCases + retrievalCases

    static let frameCases: [MalformedCase] = [
        .init("length field of 1 MiB, only the 4 length bytes seen", bytes(hex: "00100000"), .frameTooLarge),
        .init("length field 0xffffffff", bytes(hex: "ffffffff"), .frameTooLarge),
        .init("length field one above 1 MiB - 4", be32(UInt32(WireFormat.lengthMax + 1)) + [1, t.ping], .frameTooLarge),
        .init("ping announcing a 9-byte payload", frame(type: t.ping, payload: be64(1) + [0]), .frameTooLarge),
        .init("delivery announcing one byte more than 64 full chunks",
              be32(UInt32(MessageType.chunkDelivery.payloadBytesMax + 3)) + [1, t.delivery], .frameTooLarge),
        .init("length field 0", bytes(hex: "00000000"), .frameTooShort),
        .init("length field 1", bytes(hex: "00000001 01"), .frameTooShort),
        .init("version 0", frame(type: t.ping, payload: be64(1), version: 0), .unsupportedVersion),
        .init("version 2", frame(type: t.ping, payload: be64(1), version: 2), .unsupportedVersion),
        .init("version 0xff", frame(type: t.ping, payload: be64(1), version: 0xff), .unsupportedVersion),
        .init("type 0x00", frame(type: 0x00, payload: []), .unknownType),
        .init("type 0x06", frame(type: 0x06, payload: be64(1)), .unknownType),
        .init("type 0x17", frame(type: 0x17, payload: []), .unknownType),
        .init("type 0x32, after the hive types", frame(type: 0x32, payload: be16(0)), .unknownType),
        .init("type 0x7f", frame(type: 0x7f, payload: [1, 2, 3]), .unknownType),
        .init("type 0xff", frame(type: 0xff, payload: []), .unknownType),
        .init("type 0x26, after the push types", frame(type: 0x26, payload: be32(7)), .unknownType),
        .init("type 0x2f, the last of the retrieval family", frame(type: 0x2f, payload: []), .unknownType),
    ]

    static let truncatedCases: [MalformedCase] = [
        .init("ping with a 7-byte nonce", frame(type: t.ping, payload: [1, 2, 3, 4, 5, 6, 7]), .truncated),
        .init("ping with no payload", frame(type: t.ping, payload: []), .truncated),
        .init("hello proof with a 63-byte signature", frame(type: t.proof, payload: .init(repeating: 1, count: 63)), .truncated),
        .init("hello cut inside the public key", frame(type: t.hello, payload: be64(1) + [1, 2, 3]), .truncated),
        .init("hello without the agent", frame(type: t.hello, payload: helloFixed + be16(0)), .truncated),
        .init("getRange flagged with `to` but without it",
              frame(type: t.range, payload: be32(7) + [3, 1] + be64(1) + be16(128)), .truncated),
        .init("offer with an empty payload", frame(type: t.offer, payload: []), .truncated),
        .init("stream error without its message length", frame(type: t.streamError, payload: be32(7) + be16(1)), .truncated),
    ]

    static let trailingCases: [MalformedCase] = [
        .init("goodbye with a byte after its message", frame(type: t.goodbye, payload: be16(0) + text([0x62]) + [0]), .trailingBytes),
        .init("live getRange followed by a `to` its flag does not announce",
              frame(type: t.range, payload: getRange(flags: 0) + be64(9)), .trailingBytes),
        .init("empty offer followed by an address", frame(type: t.offer, payload: be32(7) + be64(1) + be64(1) + be16(0) + Golden.addressA.bytes), .trailingBytes),
        .init("stream-info request with a byte beyond its count", frame(type: t.infoReq, payload: be16(1) + [3, 4]), .trailingBytes),
        .init("hello with a byte after the agent", frame(type: t.hello, payload: helloFixed + be16(0) + be16(0) + [0]), .trailingBytes),
        .init("wanted hashes with a byte beyond its count", frame(type: t.wanted, payload: be32(7) + be16(1) + [1, 1]), .trailingBytes),
    ]

    static let countCases: [MalformedCase] = [
        .init("offer of 2 addresses carrying 1", frame(type: t.offer, payload: be32(7) + be64(1) + be64(2) + be16(2) + Golden.addressA.bytes), .countExceedsPayload),
        .init("offer of 128 addresses carrying none", frame(type: t.offer, payload: be32(7) + be64(1) + be64(2) + be16(128)), .countExceedsPayload),
        .init("delivery of 3 chunks carrying 1", frame(type: t.delivery, payload: be32(7) + be16(3) + oneChunk), .countExceedsPayload),
        .init("goodbye text of 5 bytes carrying 3", frame(type: t.goodbye, payload: be16(0) + be16(5) + [0x61, 0x62, 0x63]), .countExceedsPayload),
        .init("hello announcing 8 listen addresses, carrying none", frame(type: t.hello, payload: helloFixed + be16(8)), .countExceedsPayload),
        .init("hello listen address of 20 bytes carrying 4", frame(type: t.hello, payload: helloFixed + be16(1) + be16(20) + [0x61, 0x62, 0x63, 0x64]), .countExceedsPayload),
        .init("stream-info response of 2 cursors carrying 1", frame(type: t.infoRes, payload: be64(1) + be16(2) + [3] + be64(5)), .countExceedsPayload),
        .init("stream-info request of 3 bins carrying 2", frame(type: t.infoReq, payload: be16(3) + [1, 2]), .countExceedsPayload),
        .init("chunk of 11 bytes carrying 5", frame(type: t.delivery, payload: be32(7) + be16(1) + be16(11) + [1, 2, 3, 4, 5]), .countExceedsPayload),
        .init("bitvector of 4 bytes carrying 2", frame(type: t.wanted, payload: be32(7) + be16(4) + [1, 2]), .countExceedsPayload),
        .init("offer of 257 addresses", frame(type: t.offer, payload: be32(7) + be64(1) + be64(2) + be16(257)), .countOutOfRange),
        .init("offer of 65535 addresses", frame(type: t.offer, payload: be32(7) + be64(1) + be64(2) + be16(0xffff)), .countOutOfRange),
        .init("delivery of 65 chunks", frame(type: t.delivery, payload: be32(7) + be16(65) + oneChunk), .countOutOfRange),
        .init("delivery of no chunks", frame(type: t.delivery, payload: be32(7) + be16(0)), .countOutOfRange),
        .init("stream-info request announcing 33 bins", frame(type: t.infoReq, payload: be16(33) + [1, 2, 3]), .countOutOfRange),
        .init("stream-info request carrying 33 bins (more than the type's largest payload)",
              frame(type: t.infoReq, payload: be16(33) + .init(repeating: 1, count: 33)), .frameTooLarge),
        .init("stream-info response of 33 cursors", frame(type: t.infoRes, payload: be64(1) + be16(33)), .countOutOfRange),
        .init("hello with 9 listen addresses", frame(type: t.hello, payload: helloFixed + be16(9)), .countOutOfRange),
        .init("bitvector of 33 bytes", frame(type: t.wanted, payload: be32(7) + be16(33) + .init(repeating: 0xff, count: 32)), .countOutOfRange),
    ]

    static let chunkCases: [MalformedCase] = [
        .init("chunk with an empty payload (span only)", frame(type: t.delivery, payload: be32(7) + be16(2) + chunk(0) + oneChunk), .invalidChunkSize),
        .init("chunk of 0 bytes", frame(type: t.delivery, payload: be32(7) + be16(1) + be16(0) + .init(repeating: 0, count: 9)), .invalidChunkSize),
        .init("chunk of 4 bytes (half a span)", frame(type: t.delivery, payload: be32(7) + be16(1) + be16(4) + .init(repeating: 0, count: 9)), .invalidChunkSize),
        .init("a lone chunk too short to hold a span and a byte", frame(type: t.delivery, payload: be32(7) + be16(1) + chunk(0)), .countExceedsPayload),
        .init("chunk with a 4097-byte payload", frame(type: t.delivery, payload: be32(7) + be16(1) + chunk(4097)), .invalidChunkSize),
        .init("second chunk with a 4097-byte payload", frame(type: t.delivery, payload: be32(7) + be16(2) + oneChunk + chunk(4097)), .invalidChunkSize),
        .init("chunk announcing 65535 bytes", frame(type: t.delivery, payload: be32(7) + be16(1) + be16(0xffff) + oneChunk), .invalidChunkSize),
    ]

    static let textCases: [MalformedCase] = [
        .init("goodbye message of byte 0xff", frame(type: t.goodbye, payload: be16(0) + text([0xff])), .invalidUTF8),
        .init("goodbye message with an overlong '/' (c0 af)", frame(type: t.goodbye, payload: be16(0) + text([0xc0, 0xaf])), .invalidUTF8),
        .init("goodbye message with a surrogate (ed a0 80)", frame(type: t.goodbye, payload: be16(0) + text([0xed, 0xa0, 0x80])), .invalidUTF8),
        .init("goodbye message ending inside a scalar (e2 82)", frame(type: t.goodbye, payload: be16(0) + text([0x61, 0xe2, 0x82])), .invalidUTF8),
        .init("goodbye message above U+10FFFF (f4 90 80 80)", frame(type: t.goodbye, payload: be16(0) + text([0xf4, 0x90, 0x80, 0x80])), .invalidUTF8),
        .init("stream error message of a lone continuation byte", frame(type: t.streamError, payload: be32(7) + be16(1) + text([0x80])), .invalidUTF8),
        .init("hello agent not UTF-8", frame(type: t.hello, payload: helloFixed + be16(0) + text([0x73, 0xfe])), .invalidUTF8),
        .init("hello listen address not UTF-8", frame(type: t.hello, payload: helloFixed + be16(1) + text([0x31, 0xc3]) + be16(0)), .invalidUTF8),
        .init("hello agent of 65 bytes", frame(type: t.hello, payload: helloFixed + be16(0) + text(.init(repeating: 0x61, count: 65))), .textLengthOutOfRange),
        .init("hello listen address empty", frame(type: t.hello, payload: helloFixed + be16(1) + be16(0) + be16(0)), .textLengthOutOfRange),
        .init("hello listen address of 301 bytes", frame(type: t.hello, payload: helloFixed + be16(1) + text(.init(repeating: 0x61, count: 301)) + be16(0)), .textLengthOutOfRange),
        .init("goodbye message of 257 bytes", frame(type: t.goodbye, payload: be16(0) + be16(257)), .textLengthOutOfRange),
        .init("stream error message of 65535 bytes", frame(type: t.streamError, payload: be32(7) + be16(1) + be16(0xffff)), .textLengthOutOfRange),
    ]

    static let enumCases: [MalformedCase] = [
        .init("goodbye reason 5", frame(type: t.goodbye, payload: be16(5) + be16(0)), .unknownEnumValue),
        .init("goodbye reason 0xffff", frame(type: t.goodbye, payload: be16(0xffff) + be16(0)), .unknownEnumValue),
        .init("stream error code 0", frame(type: t.streamError, payload: be32(7) + be16(0) + be16(0)), .unknownEnumValue),
        .init("stream error code 6", frame(type: t.streamError, payload: be32(7) + be16(6) + be16(0)), .unknownEnumValue),
    ]

    static let binCases: [MalformedCase] = [
        .init("getRange of bin 32", frame(type: t.range, payload: getRange(bin: 32)), .invalidBin),
        .init("getRange of bin 255", frame(type: t.range, payload: getRange(bin: 0xff)), .invalidBin),
        .init("stream-info request for bin 32", frame(type: t.infoReq, payload: be16(2) + [0, 32]), .invalidBin),
        .init("stream-info response cursor of bin 32", frame(type: t.infoRes, payload: be64(1) + be16(1) + [32] + be64(1)), .invalidBin),
    ]

    static let valueCases: [MalformedCase] = [
        .init("getRange flags 0x02", frame(type: t.range, payload: getRange(flags: 2) + be64(9)), .invalidValue),
        .init("getRange flags 0x81", frame(type: t.range, payload: getRange(flags: 0x81) + be64(9)), .invalidValue),
        .init("getRange from above to", frame(type: t.range, payload: getRange(from: 10, to: 9)), .invalidValue),
        .init("getRange limit 0", frame(type: t.range, payload: getRange(limit: 0)), .invalidValue),
        .init("getRange limit 257", frame(type: t.range, payload: getRange(limit: 257)), .invalidValue),
        .init("live getRange limit 0xffff", frame(type: t.range, payload: getRange(flags: 0, limit: 0xffff)), .invalidValue),
    ]
}

extension Malformed {
    static let hiveCases: [MalformedCase] = [
        .init("peers request with no payload", frame(type: t.peersRequest, payload: []), .truncated),
        .init("peers request of 1 byte", frame(type: t.peersRequest, payload: [30]), .truncated),
        .init("peers request with a byte after the limit", frame(type: t.peersRequest, payload: be16(30) + [0]), .frameTooLarge),
        .init("peers request limit 0", frame(type: t.peersRequest, payload: be16(0)), .invalidValue),
        .init("peers request limit 31", frame(type: t.peersRequest, payload: be16(31)), .invalidValue),
        .init("peers request limit 0xffff", frame(type: t.peersRequest, payload: be16(0xffff)), .invalidValue),
        .init("peers announcing one byte more than 30 largest entries",
              be32(UInt32(MessageType.peers.payloadBytesMax + 3)) + [1, t.peers], .frameTooLarge),
        .init("peers with no payload", frame(type: t.peers, payload: []), .truncated),
        // A count is checked against the bytes left at 37 bytes an entry, so only a later entry, after
        // a long first one, can end inside its fixed fields.
        .init("second peers entry cut inside its overlay",
              frame(type: t.peers, payload: be16(2) + entry([.init(repeating: 0x61, count: 40)]) + Array(Golden.addressB.bytes[..<10])), .truncated),
        .init("second peers entry without its address count",
              frame(type: t.peers, payload: be16(2) + entry([.init(repeating: 0x61, count: 40)]) + Golden.addressB.bytes + [0]), .truncated),
        .init("peers of 31 entries", frame(type: t.peers, payload: be16(31) + goodEntry), .countOutOfRange),
        .init("peers of 65535 entries", frame(type: t.peers, payload: be16(0xffff)), .countOutOfRange),
        .init("peers of 2 entries carrying 1", frame(type: t.peers, payload: be16(2) + goodEntry), .countExceedsPayload),
        .init("peers of 30 entries carrying none", frame(type: t.peers, payload: be16(30)), .countExceedsPayload),
        .init("peers entry with no address", frame(type: t.peers, payload: be16(1) + entry([]) + [0, 0, 0]), .countOutOfRange),
        .init("peers entry with 9 addresses", frame(type: t.peers, payload: be16(1) + entry(.init(repeating: [0x61], count: 9))), .countOutOfRange),
        .init("peers entry announcing 8 addresses carrying 1", frame(type: t.peers, payload: be16(1) + Golden.addressA.bytes + be16(8) + text([0x61])), .countExceedsPayload),
        .init("peers entry address of 20 bytes carrying 4", frame(type: t.peers, payload: be16(1) + Golden.addressA.bytes + be16(1) + be16(20) + [0x61, 0x62, 0x63, 0x64]), .countExceedsPayload),
        .init("peers entry with an empty address", frame(type: t.peers, payload: be16(1) + entry([[]]) + [0]), .textLengthOutOfRange),
        .init("peers second address empty", frame(type: t.peers, payload: be16(1) + entry([[0x61], []]) + [0]), .textLengthOutOfRange),
        .init("peers entry address of 301 bytes", frame(type: t.peers, payload: be16(1) + entry([.init(repeating: 0x61, count: 301)])), .textLengthOutOfRange),
        .init("peers entry address not UTF-8", frame(type: t.peers, payload: be16(1) + entry([[0x68, 0x3a, 0x31, 0xff]])), .invalidUTF8),
        .init("peers second entry address with a surrogate", frame(type: t.peers, payload: be16(2) + goodEntry + entry([[0xed, 0xa0, 0x80]])), .invalidUTF8),
        .init("peers with a byte after the last entry", frame(type: t.peers, payload: be16(1) + goodEntry + [0]), .trailingBytes),
        .init("empty peers followed by an entry", frame(type: t.peers, payload: be16(0) + goodEntry), .trailingBytes),
    ]
}

@Suite("Malformed input is rejected with the right WireError, never a crash")
struct MalformedInputTests {
    @Test("WireCodec.decode rejects it, leaving the buffer untouched", arguments: Malformed.cases)
    func codecRejects(_ row: MalformedCase) {
        var buffer = ByteBuffer(bytes: row.bytes)
        let before = buffer
        let error = wireError { _ = try WireCodec.decode(frame: &buffer) }
        #expect(error?.code == row.expected, "\(error?.description ?? "no error")")
        #expect(buffer == before && buffer.readerIndex == before.readerIndex)
    }

    @Test("MessageDecoder rejects it the same way, whether it arrives whole or byte by byte", arguments: Malformed.cases)
    func messageDecoderRejects(_ row: MalformedCase) {
        for pieces in [[row.bytes.count], [Int](repeating: 1, count: row.bytes.count)] {
            let error = #expect(throws: WireError.self) {
                _ = try decodeThroughProcessor(row.bytes, pieces: pieces)
            }
            #expect(error?.code == row.expected, "\(pieces.count) pieces: \(error?.description ?? "no error")")
        }
    }

    @Test("after a good frame, the bad one is still rejected", arguments: Malformed.cases)
    func rejectedAfterAGoodFrame(_ row: MalformedCase) throws {
        var buffer = ByteBuffer(bytes: try WireCodec.encodedBytes(.ping(nonce: 3)) + row.bytes)
        #expect(try WireCodec.decode(frame: &buffer) == .ping(nonce: 3))
        #expect(wireError { _ = try WireCodec.decode(frame: &buffer) }?.code == row.expected)
    }

    @Test("a bad header is rejected as soon as its bytes arrive, before the payload is buffered")
    func headerJudgedEarly() {
        let early: [(bytes: [UInt8], code: WireError.Code)] = [
            (bytes(hex: "00100000"), .frameTooLarge),
            (bytes(hex: "0000ffff 01 03"), .frameTooLarge),
            (bytes(hex: "0000000a 02"), .unsupportedVersion),
            (bytes(hex: "0000000a 01 26"), .unknownType),
            (bytes(hex: "00000028 01 20"), .frameTooLarge),  // a retrieveRequest is 37 payload bytes, not 38
            (bytes(hex: "0000000a 01 99"), .unknownType),
        ]
        for (header, code) in early {
            var buffer = ByteBuffer(bytes: header)
            #expect(wireError { _ = try WireCodec.decode(frame: &buffer) }?.code == code, "\(hexString(header))")
        }
        // The largest frame the limit allows is merely incomplete until it has all arrived.
        var buffer = ByteBuffer(bytes: be32(UInt32(MessageType.chunkDelivery.payloadBytesMax + 2)) + [1, 0x15])
        #expect(wireError { _ = try WireCodec.decode(frame: &buffer) } == nil)
    }

    @Test("a payload cut short anywhere is rejected, never decoded as something else", arguments: Golden.vectors)
    func everyShorterPayload(_ vector: GoldenVector) {
        let whole = bytes(hex: vector.hex)
        let payload = Array(whole[WireFormat.headerBytes...])
        for length in 0..<payload.count {
            let short = frame(type: whole[5], payload: Array(payload[..<length]))
            let error = wireError { _ = try WireCodec.decode(exactFrame: short) }
            #expect(error.map { WireError.Code.shortPayload.contains($0.code) } == true,
                    "\(vector.name) cut to \(length) payload bytes: \(error?.description ?? "decoded")")
        }
    }

    @Test("every error says what it is about")
    func errorsAreDescribed() {
        for row in Malformed.cases {
            var buffer = ByteBuffer(bytes: row.bytes)
            let error = wireError { _ = try WireCodec.decode(frame: &buffer) }
            #expect(error?.description.hasPrefix(row.expected.rawValue + ": ") == true)
            #expect((error?.message.count ?? 0) > 10)
        }
    }
}

extension Malformed {
    /// A refusal: code ‖ message (as raw bytes).
    static func refusal(_ code: UInt16, _ message: [UInt8] = []) -> [UInt8] { be16(code) + text(message) }
    /// A receipt's stored outcome: address ‖ public key ‖ signature.
    static let stored = Golden.addressA.bytes + Golden.publicKey + Golden.signature

    static let retrievalCases: [MalformedCase] = [
        .init("retrieve request with no payload", frame(type: t.retrieveRequest, payload: []), .truncated),
        .init("retrieve request cut inside its address", frame(type: t.retrieveRequest, payload: be32(7) + Array(Golden.addressA.bytes[..<20])), .truncated),
        .init("retrieve request without hopsLeft", frame(type: t.retrieveRequest, payload: be32(7) + Golden.addressA.bytes), .truncated),
        .init("retrieve request with a byte after hopsLeft", frame(type: t.retrieveRequest, payload: be32(7) + Golden.addressA.bytes + [1, 0]), .frameTooLarge),
        .init("retrieve request with 9 hops left", frame(type: t.retrieveRequest, payload: be32(7) + Golden.addressA.bytes + [9]), .invalidValue),
        .init("retrieve request with 255 hops left", frame(type: t.retrieveRequest, payload: be32(7) + Golden.addressA.bytes + [0xff]), .invalidValue),

        .init("retrieve delivery with no payload", frame(type: t.retrieveDelivery, payload: []), .truncated),
        .init("retrieve delivery without its outcome", frame(type: t.retrieveDelivery, payload: be32(7)), .truncated),
        .init("retrieve delivery outcome 0x02", frame(type: t.retrieveDelivery, payload: be32(7) + [2] + oneChunk), .invalidValue),
        .init("retrieve delivery outcome 0xff", frame(type: t.retrieveDelivery, payload: be32(7) + [0xff]), .invalidValue),
        .init("retrieve delivery of a chunk without its size", frame(type: t.retrieveDelivery, payload: be32(7) + [0]), .truncated),
        .init("retrieve delivery of a chunk with an empty payload", frame(type: t.retrieveDelivery, payload: be32(7) + [0] + chunk(0)), .invalidChunkSize),
        .init("retrieve delivery of a chunk of 11 bytes carrying 5", frame(type: t.retrieveDelivery, payload: be32(7) + [0] + be16(11) + [1, 2, 3, 4, 5]), .countExceedsPayload),
        .init("retrieve delivery of a chunk announcing 4105 bytes", frame(type: t.retrieveDelivery, payload: be32(7) + [0] + be16(4105) + oneChunk), .invalidChunkSize),
        .init("retrieve delivery of a 4097-byte payload (more than the type's largest payload)",
              frame(type: t.retrieveDelivery, payload: be32(7) + [0] + chunk(4097)), .frameTooLarge),
        .init("retrieve delivery with a byte after its chunk", frame(type: t.retrieveDelivery, payload: be32(7) + [0] + oneChunk + [0]), .trailingBytes),
        .init("retrieve delivery refusal code 0", frame(type: t.retrieveDelivery, payload: be32(7) + [1] + refusal(0)), .unknownEnumValue),
        .init("retrieve delivery refusal code 7", frame(type: t.retrieveDelivery, payload: be32(7) + [1] + refusal(7)), .unknownEnumValue),
        .init("retrieve delivery refusal without its message", frame(type: t.retrieveDelivery, payload: be32(7) + [1] + be16(1)), .truncated),
        .init("retrieve delivery refusal message of 257 bytes", frame(type: t.retrieveDelivery, payload: be32(7) + [1] + be16(1) + be16(257)), .textLengthOutOfRange),
        .init("retrieve delivery refusal message not UTF-8", frame(type: t.retrieveDelivery, payload: be32(7) + [1] + refusal(1, [0x61, 0xc3])), .invalidUTF8),
        .init("retrieve delivery refusal followed by a chunk", frame(type: t.retrieveDelivery, payload: be32(7) + [1] + refusal(1) + oneChunk), .trailingBytes),

        .init("want-have with no payload", frame(type: t.wantHave, payload: []), .truncated),
        .init("want-have of no addresses", frame(type: t.wantHave, payload: be32(9) + be16(0)), .countOutOfRange),
        .init("want-have of 257 addresses", frame(type: t.wantHave, payload: be32(9) + be16(257)), .countOutOfRange),
        .init("want-have of 2 addresses carrying 1", frame(type: t.wantHave, payload: be32(9) + be16(2) + Golden.addressA.bytes), .countExceedsPayload),
        .init("want-have of 256 addresses carrying none", frame(type: t.wantHave, payload: be32(9) + be16(256)), .countExceedsPayload),
        .init("want-have with a byte after its addresses", frame(type: t.wantHave, payload: be32(9) + be16(1) + Golden.addressA.bytes + [0]), .trailingBytes),
        .init("want-have announcing one byte more than 256 addresses",
              be32(UInt32(MessageType.wantHave.payloadBytesMax + 3)) + [1, t.wantHave], .frameTooLarge),

        .init("presence with no payload", frame(type: t.presence, payload: []), .truncated),
        .init("presence bitvector of no bytes", frame(type: t.presence, payload: be32(9) + be16(0)), .countOutOfRange),
        .init("presence bitvector of 33 bytes", frame(type: t.presence, payload: be32(9) + be16(33) + .init(repeating: 0xff, count: 32)), .countOutOfRange),
        .init("presence bitvector of 4 bytes carrying 2", frame(type: t.presence, payload: be32(9) + be16(4) + [1, 2]), .countExceedsPayload),
        .init("presence with a byte beyond its bitvector", frame(type: t.presence, payload: be32(9) + be16(1) + [1, 1]), .trailingBytes),

        .init("push with no payload", frame(type: t.pushChunk, payload: []), .truncated),
        .init("push without hopsLeft", frame(type: t.pushChunk, payload: be32(10)), .truncated),
        .init("push with 9 hops left", frame(type: t.pushChunk, payload: be32(10) + [9] + oneChunk), .invalidValue),
        .init("push without its chunk", frame(type: t.pushChunk, payload: be32(10) + [3]), .truncated),
        .init("push of a chunk with an empty payload", frame(type: t.pushChunk, payload: be32(10) + [3] + chunk(0)), .invalidChunkSize),
        .init("push of a chunk of 11 bytes carrying 5", frame(type: t.pushChunk, payload: be32(10) + [3] + be16(11) + [1, 2, 3, 4, 5]), .countExceedsPayload),
        .init("push with a byte after its chunk", frame(type: t.pushChunk, payload: be32(10) + [3] + oneChunk + [0]), .trailingBytes),
        .init("push of a 4097-byte payload (more than the type's largest payload)",
              frame(type: t.pushChunk, payload: be32(10) + [3] + chunk(4097)), .frameTooLarge),

        .init("receipt with no payload", frame(type: t.receipt, payload: []), .truncated),
        .init("receipt outcome 0x02", frame(type: t.receipt, payload: be32(10) + [2] + stored), .invalidValue),
        .init("receipt without its public key", frame(type: t.receipt, payload: be32(10) + [0] + Golden.addressA.bytes), .truncated),
        .init("receipt cut inside its signature", frame(type: t.receipt, payload: be32(10) + [0] + Array(stored.dropLast())), .truncated),
        .init("receipt with a byte after its signature", frame(type: t.receipt, payload: be32(10) + [0] + stored + [0]), .trailingBytes),
        .init("receipt refusal code 0xffff", frame(type: t.receipt, payload: be32(10) + [1] + refusal(0xffff)), .unknownEnumValue),
        .init("receipt refusal message with a surrogate", frame(type: t.receipt, payload: be32(10) + [1] + refusal(5, [0xed, 0xa0, 0x80])), .invalidUTF8),
        .init("receipt refusal message of 300 bytes", frame(type: t.receipt, payload: be32(10) + [1] + be16(5) + be16(300)), .textLengthOutOfRange),
        .init("receipt refusal with a byte after its message", frame(type: t.receipt, payload: be32(10) + [1] + refusal(5, [0x61]) + [0]), .trailingBytes),
        .init("receipt announcing one byte more than its largest payload",
              be32(UInt32(MessageType.receipt.payloadBytesMax + 3)) + [1, t.receipt], .frameTooLarge),
    ]
}
