import ShoalCore
import Testing

/// The pure parts of the retrieval, presence and push messages: what a storer signs, and presence bits.
struct RetrievalMessageTests {
    static let address = ChunkAddress(bytes: [UInt8](repeating: 0xaa, count: 32))!

    @Test func signedBytesAreTheDomainTagTheNetworkBigEndianAndTheAddress() {
        let signed = Receipt.signedBytes(networkID: 0x0102_0304_0506_0708, address: Self.address)
        #expect(signed.count == 16 + 8 + 32)
        #expect(Array(signed[0..<16]) == Array("shoal-receipt-v1".utf8))
        #expect(Array(signed[16..<24]) == [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(Array(signed[24...]) == Self.address.bytes)
    }

    @Test func aReceiptForAnotherNetworkOrChunkSignsOtherBytes() {
        var other = Self.address
        other.w3 ^= 1
        let signed = Receipt.signedBytes(networkID: 1, address: Self.address)
        #expect(signed != Receipt.signedBytes(networkID: 2, address: Self.address))
        #expect(signed != Receipt.signedBytes(networkID: 1, address: other))
    }

    /// The identity key signs hello proofs too: no receipt can be passed off as one, because
    /// the two domain tags differ in their seventh byte.
    @Test func receiptsAndHelloProofsAreSignedUnderDifferentTags() {
        let hello = Hello(networkID: 1, publicKey: [UInt8](repeating: 1, count: 32), overlay: Self.address, epoch: 1,
                          nonce: [UInt8](repeating: 2, count: 32))
        let proof = HelloProof.signedBytes(own: hello, peerNonce: [UInt8](repeating: 3, count: 32))
        let receipt = Receipt.signedBytes(networkID: 1, address: Self.address)
        #expect(Array(proof.prefix(6)) == Array(receipt.prefix(6)))
        #expect(proof[6] != receipt[6])
    }

    @Test func presenceBitsAreLSBFirstAndNothingPastTheBitvectorIsPresent() {
        let presence = Presence(ruid: 1, present: [true, false, false, false, false, false, false, false, false, true])
        #expect(presence.bitvector == [0x01, 0x02])
        #expect(presence.isPresent(0) && presence.isPresent(9))
        #expect(!presence.isPresent(1) && !presence.isPresent(16) && !presence.isPresent(-1))
    }
}
