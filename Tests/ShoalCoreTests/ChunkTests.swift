import ShoalCore
import Testing

struct ChunkTests {
    @Test(arguments: [
        (UInt64(3), Array("abc".utf8), "ce91dc5eec0139adf091900d225971d6ad246a845bad791b5693a9d0d55dd391"),
        (UInt64(4096), [UInt8](repeating: 0, count: 4096), "34085a3cad6a1a45a68869e5a5eb2bcb79b0b6d84c0af33568f4f062aa43fc69"),
        (UInt64(1), [UInt8(0)], "a536aa3cede6ea3c1f3e0357c3c60e0f216a8c89b853df13b29daa8f85065dfb"),
    ])
    func addressIsSHA256OfLittleEndianSpanThenPayload(span: UInt64, payload: [UInt8], expected: String) throws {
        let chunk = try Chunk(span: span, payload: payload)
        #expect(chunk.address.hex == expected)
    }

    @Test func payloadsOutsideOneTo4096BytesAreRefused() {
        #expect(throws: ChunkError.emptyPayload) { try Chunk(payload: []) }
        #expect(throws: ChunkError.payloadTooLarge(byteCount: 4097)) {
            try Chunk(payload: [UInt8](repeating: 1, count: 4097))
        }
        #expect(throws: Never.self) { try Chunk(payload: [UInt8](repeating: 1, count: 4096)) }
    }

    @Test func serializedFormRoundTripsAndTruncatedInputIsRefused() throws {
        let chunk = try Chunk(span: 0x0102_0304_0506_0708, payload: [9, 8, 7])
        #expect(chunk.serialized == [8, 7, 6, 5, 4, 3, 2, 1, 9, 8, 7])
        #expect(try Chunk(serialized: chunk.serialized) == chunk)
        for n in 0...8 {
            #expect(throws: ChunkError.truncated(byteCount: n)) { try Chunk(serialized: chunk.serialized.prefix(n)) }
        }
    }

    @Test func aClaimedAddressIsNeverTrusted() throws {
        let chunk = try Chunk(payload: Array("hello".utf8))
        var wrong = chunk.address
        wrong.w3 ^= 1
        #expect(throws: ChunkError.addressMismatch(claimed: wrong, actual: chunk.address)) {
            try Chunk(span: chunk.span, payload: chunk.payload, claimedAddress: wrong)
        }
        #expect(try Chunk(span: chunk.span, payload: chunk.payload, claimedAddress: chunk.address) == chunk)
    }
}

struct AddressTests {
    @Test func hexRoundTripsAndRejectsMalformedText() throws {
        let text = "00ff10" + String(repeating: "ab", count: 29)
        let address = try #require(Address32(hex: text))
        #expect(address.hex == text)
        #expect(Address32(hex: text.uppercased()) == address)
        #expect(Address32(hex: String(text.dropLast())) == nil)
        #expect(Address32(hex: text + "0") == nil)
        #expect(Address32(hex: "zz" + text.dropFirst(2)) == nil)
        #expect(Address32(bytes: address.bytes) == address)
        #expect(Address32(bytes: [UInt8](repeating: 0, count: 31)) == nil)
    }

    @Test(arguments: [0, 1, 7, 8, 63, 64, 100, 191, 192, 255])
    func proximityCountsSharedLeadingBits(bit: Int) {
        var a = Address32.zero
        var b = Address32.zero
        // Differ first at `bit`.
        let word = bit / 64, shift = UInt64(63 - bit % 64)
        switch word {
        case 0: b.w0 = 1 << shift
        case 1: b.w1 = 1 << shift
        case 2: b.w2 = 1 << shift
        default: b.w3 = 1 << shift
        }
        a.w3 |= 0  // unchanged
        #expect(a.proximity(to: b) == bit)
        #expect(b.proximity(to: a) == bit)
        #expect(Proximity.bin(of: a, relativeTo: b) == min(bit, 31))
    }

    @Test func identicalAddressesAreInTheLastBin() {
        let a = Address32(w0: 5, w1: 6, w2: 7, w3: 8)
        #expect(a.proximity(to: a) == 256)
        #expect(Proximity.bin(of: a, relativeTo: a) == Proximity.maxBin)
    }

    @Test func overlayIsSHA256OfNetworkIDThenKey() {
        let key = [UInt8](repeating: 7, count: 32)
        #expect(Overlay.address(networkID: 1, publicKey: key) != Overlay.address(networkID: 2, publicKey: key))
        #expect(Overlay.address(networkID: 1, publicKey: key) == Overlay.address(networkID: 1, publicKey: key))
    }
}
