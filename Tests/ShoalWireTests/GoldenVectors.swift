import ShoalCore

/// Frames written by hand from Docs/Protocol.md, one or more per message type. The same hex is
/// printed in Protocol.md §8; `GoldenVectorTests` checks both directions and that the document
/// still says the same.
struct GoldenVector: Sendable, CustomStringConvertible {
    let name: String
    let message: Message
    let hex: String

    var description: String { name }
}

enum Golden {
    static let publicKey = Array(UInt8(0x00)...UInt8(0x1f))
    /// SHA-256(01 00 00 00 00 00 00 00 ‖ publicKey): network id 1, little-endian.
    static let overlay = Address32(hex: "dd5826d1a3b00e5675501b34ce37e53c7aeca1ac6d259ac3b9543c5eefeda7f2")!
    static let nonce = Array(UInt8(0xa0)...UInt8(0xbf))
    static let signature = Array(UInt8(0x40)...UInt8(0x7f))
    static let addressA = Address32(bytes: [UInt8](repeating: 0xaa, count: 32))!
    static let addressB = Address32(bytes: Array(UInt8(0xe0)...UInt8(0xff)))!

    static let hello = Hello(
        networkID: 1, publicKey: publicKey, overlay: overlay, epoch: 0x0102_0304_0506_0708, nonce: nonce,
        listenAddresses: ["127.0.0.1:1634"], agent: "shoal/0.1")

    static let vectors: [GoldenVector] = [
        GoldenVector(
            name: "hello",
            message: .hello(hello),
            hex: """
                0000008f 01 01
                0000000000000001
                000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
                dd5826d1a3b00e5675501b34ce37e53c7aeca1ac6d259ac3b9543c5eefeda7f2
                0102030405060708
                a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf
                0001 000e 3132372e302e302e313a31363334
                0009 73686f616c2f302e31
                """),
        GoldenVector(
            name: "hello-minimal",
            message: .hello(Hello(
                networkID: 1, publicKey: publicKey, overlay: overlay, epoch: 0, nonce: nonce,
                listenAddresses: [], agent: "")),
            hex: """
                00000076 01 01
                0000000000000001
                000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
                dd5826d1a3b00e5675501b34ce37e53c7aeca1ac6d259ac3b9543c5eefeda7f2
                0000000000000000
                a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf
                0000
                0000
                """),
        GoldenVector(
            name: "helloProof",
            message: .helloProof(HelloProof(signature: signature)),
            hex: """
                00000042 01 02
                404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f
                606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f
                """),
        GoldenVector(
            name: "ping",
            message: .ping(nonce: 0x0123_4567_89ab_cdef),
            hex: "0000000a 01 03 0123456789abcdef"),
        GoldenVector(
            name: "pong",
            message: .pong(nonce: 0x0123_4567_89ab_cdef),
            hex: "0000000a 01 04 0123456789abcdef"),
        GoldenVector(
            name: "goodbye",
            message: .goodbye(Goodbye(reason: .shutdown, message: "bye")),
            hex: "00000009 01 05 0000 0003 627965"),
        GoldenVector(
            name: "goodbye-utf8",
            message: .goodbye(Goodbye(reason: .idle, message: "adiós")),
            hex: "0000000c 01 05 0004 0006 616469c3b373"),
        GoldenVector(
            name: "streamInfoRequest",
            message: .streamInfoRequest(StreamInfoRequest(bins: [0, 5, 31])),
            hex: "00000007 01 10 0003 00 05 1f"),
        GoldenVector(
            name: "streamInfoResponse",
            message: .streamInfoResponse(StreamInfoResponse(
                epoch: 0x0102_0304_0506_0708, cursors: [.init(bin: 0, cursor: 42), .init(bin: 31, cursor: 0x0102)])),
            hex: """
                0000001e 01 11
                0102030405060708
                0002
                00 000000000000002a
                1f 0000000000000102
                """),
        GoldenVector(
            name: "getRange-history",
            message: .getRange(GetRange(ruid: 7, bin: 3, from: 1, to: 1000, limit: 128)),
            hex: "0000001a 01 12 00000007 03 01 0000000000000001 00000000000003e8 0080"),
        GoldenVector(
            name: "getRange-live",
            message: .getRange(GetRange(ruid: 8, bin: 31, from: 1001, to: nil, limit: 64)),
            hex: "00000012 01 12 00000008 1f 00 00000000000003e9 0040"),
        GoldenVector(
            name: "offeredHashes",
            message: .offeredHashes(OfferedHashes(ruid: 7, from: 1, lastIndex: 2, addresses: [addressA, addressB])),
            hex: """
                00000058 01 13
                00000007
                0000000000000001
                0000000000000002
                0002
                aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
                e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff
                """),
        GoldenVector(
            name: "offeredHashes-empty",
            message: .offeredHashes(OfferedHashes(ruid: 9, from: 5, lastIndex: 9, addresses: [])),
            hex: "00000018 01 13 00000009 0000000000000005 0000000000000009 0000"),
        GoldenVector(
            name: "wantedHashes",
            message: .wantedHashes(WantedHashes(ruid: 7, wanted: [false, true])),
            hex: "00000009 01 14 00000007 0001 02"),
        GoldenVector(
            name: "chunkDelivery",
            message: .chunkDelivery(ChunkDelivery(ruid: 7, chunks: [
                DeliveredChunk(span: 3, payload: Array("abc".utf8)),
                DeliveredChunk(span: 4096, payload: [0xff]),
            ])),
            hex: """
                00000020 01 15
                00000007
                0002
                000b 0300000000000000 616263
                0009 0010000000000000 ff
                """),
        GoldenVector(
            name: "streamError",
            message: .streamError(StreamError(ruid: 7, code: .binNotServed, message: "not served")),
            hex: "00000014 01 16 00000007 0001 000a 6e6f7420736572766564"),
        GoldenVector(
            name: "peersRequest",
            message: .peersRequest(PeersRequest(limit: 30)),
            hex: "00000004 01 30 001e"),
        GoldenVector(
            name: "peers",
            message: .peers(Peers(peers: [
                PeerAddress(overlay: overlay, addresses: ["127.0.0.1:1634"]),
                PeerAddress(overlay: addressB, addresses: ["[::1]:1634", "node.example:1635"]),
            ])),
            hex: """
                00000077 01 31
                0002
                dd5826d1a3b00e5675501b34ce37e53c7aeca1ac6d259ac3b9543c5eefeda7f2
                0001 000e 3132372e302e302e313a31363334
                e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff
                0002 000a 5b3a3a315d3a31363334 0011 6e6f64652e6578616d706c653a31363335
                """),
        GoldenVector(
            name: "peers-empty",
            message: .peers(Peers(peers: [])),
            hex: "00000004 01 31 0000"),
        GoldenVector(
            name: "retrieveRequest",
            message: .retrieveRequest(RetrieveRequest(ruid: 7, address: addressA, hopsLeft: 8)),
            hex: """
                00000027 01 20
                00000007
                aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
                08
                """),
        GoldenVector(
            name: "retrieveDelivery",
            message: .retrieveDelivery(RetrieveDelivery(ruid: 7, outcome: .chunk(DeliveredChunk(span: 3, payload: Array("abc".utf8))))),
            hex: "00000014 01 21 00000007 00 000b 0300000000000000 616263"),
        GoldenVector(
            name: "retrieveDelivery-refused",
            message: .retrieveDelivery(RetrieveDelivery(ruid: 8, outcome: .refused(Refusal(code: .notFound, message: "not found")))),
            hex: "00000014 01 21 00000008 01 0001 0009 6e6f7420666f756e64"),
        GoldenVector(
            name: "wantHave",
            message: .wantHave(WantHave(ruid: 9, addresses: [addressA, addressB])),
            hex: """
                00000048 01 22
                00000009
                0002
                aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
                e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff
                """),
        GoldenVector(
            name: "presence",
            message: .presence(Presence(ruid: 9, present: [false, true])),
            hex: "00000009 01 23 00000009 0001 02"),
        GoldenVector(
            name: "pushChunk",
            message: .pushChunk(PushChunk(ruid: 10, hopsLeft: 3, chunk: DeliveredChunk(span: 4096, payload: [0xff]))),
            hex: "00000012 01 24 0000000a 03 0009 0010000000000000 ff"),
        GoldenVector(
            name: "receipt",
            message: .receipt(Receipt(ruid: 10, outcome: .stored(.init(address: addressA, publicKey: publicKey, signature: signature)))),
            hex: """
                00000087 01 25
                0000000a
                00
                aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
                000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
                404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f
                606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f
                """),
        GoldenVector(
            name: "receipt-refused",
            message: .receipt(Receipt(ruid: 11, outcome: .refused(Refusal(code: .notStored, message: "store full")))),
            hex: "00000015 01 25 0000000b 01 0005 000a 73746f72652066756c6c"),
    ]
}
