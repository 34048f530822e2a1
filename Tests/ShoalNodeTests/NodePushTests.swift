import Crypto
import NIOCore
import ShoalCore
import ShoalNode
import ShoalStore
import ShoalTestSupport
import Testing

/// Push across real nodes: A uploads a chunk whose neighbourhood lies past B, at C. A's only
/// peer is B; B hands the push on to C, closer to the chunk; C's signed receipt comes back to A
/// along the path. C is played through the transport, so it syncs nothing and answers only what
/// the test says: a good receipt, or one whose signature does not hold.
@Suite(.serialized)
struct NodePushTests {
    /// B, a scripted peer C dialled in to it, A connected to B alone, and a chunk closer to C
    /// than to B and closer to B than to A (so A is not where it belongs, and B not either).
    static func line(seed: UInt64) async throws -> (a: RunningNode, b: RunningNode, c: EstablishedConnection,
                                                    cIdentity: NodeIdentity, chunk: Chunk) {
        let b = try RunningNode(name: "b")
        let bPort = try await b.startedPort()
        let (cConfiguration, c) = try await b.dialAsRogue(seed: seed, port: bPort)
        let cOverlay = cConfiguration.identity.overlay
        // An address closer to C than to B and to B than to A exists unless A and C first differ
        // from B at the same bit (then whatever is closer to C is closer to A too): A's identity
        // is random, so make one until they differ elsewhere (half of them do).
        var a = try RunningNode(name: "a", peers: ["127.0.0.1:\(bPort)"])
        for _ in 0..<64 where a.node.overlay.proximity(to: b.node.overlay) == cOverlay.proximity(to: b.node.overlay) {
            a = try RunningNode(name: "a", peers: ["127.0.0.1:\(bPort)"])
        }
        try #require(a.node.overlay.proximity(to: b.node.overlay) != cOverlay.proximity(to: b.node.overlay))
        _ = try await a.start()
        var chunks = SeededChunks(seed: seed)
        var chunk = chunks.chunk(size: 300)
        for _ in 0..<100_000 where !(cOverlay.isCloser(to: chunk.address, than: b.node.overlay)
                                     && b.node.overlay.isCloser(to: chunk.address, than: a.node.overlay)) {
            chunk = chunks.chunk(size: 300)
        }
        try #require(cOverlay.isCloser(to: chunk.address, than: b.node.overlay) && b.node.overlay.isCloser(to: chunk.address, than: a.node.overlay))
        try await eventually("A connects to B") { await a.node.peers().count == 1 }
        try await eventually("B knows A and C") { await b.node.peers().count == 2 }
        try await eventually("A's push may use B") { a.node.pushStatus().peers == 1 }
        try await eventually("B's push may use A and C") { b.node.pushStatus().peers == 2 }
        return (a, b, c, cConfiguration.identity, chunk)
    }

    @Test(.timeLimit(.minutes(1)))
    func anUploadIsPushedAlongThePathAndTheStorersReceiptComesBack() async throws {
        let (a, b, c, cIdentity, chunk) = try await Self.line(seed: 301)
        let script = Task {
            try await c.channel.executeThenClose { inbound, outbound -> UInt8? in
                for try await message in inbound {
                    guard case .pushChunk(let pushed) = message else { continue }
                    let got = try Chunk(span: pushed.chunk.span, payload: pushed.chunk.payload)
                    guard got == chunk else { continue }
                    let signature = Array(try cIdentity.privateKey.signature(for: Receipt.signedBytes(networkID: cIdentity.networkID, address: chunk.address)))
                    let stored = Receipt.Stored(address: chunk.address, publicKey: cIdentity.publicKey, signature: signature)
                    try await outbound.write(.receipt(Receipt(ruid: pushed.ruid, outcome: .stored(stored))))
                    // Stay until B has passed it on (closing at once could cut it off).
                    try await Task.sleep(for: .milliseconds(200))
                    return pushed.hopsLeft
                }
                return nil
            }
        }
        _ = try await a.node.upload(chunk)
        let result = await a.node.push(chunk)
        guard case .success(let receipt) = result else {
            Issue.record("no receipt: \(result)")
            return
        }
        #expect(receipt.storer == cIdentity.overlay)
        #expect(receipt.receipt.check(networkID: cIdentity.networkID) == (cIdentity.overlay, true))
        #expect(try await script.value == PushLimits().hopsMax - 1, "B hands it on with one hop less than A granted")
        #expect(b.node.pushStatus().counters.passed == 1)
        #expect(a.node.pushStatus().counters.receipted == 1)
        await a.stop()
        await b.stop()
    }

    @Test(.timeLimit(.minutes(1)))
    func aForgedReceiptDropsThatPeerAndTheUploadHearsThatNoReceiptCame() async throws {
        let (a, b, c, cIdentity, chunk) = try await Self.line(seed: 302)
        let script = Task {
            try await c.channel.executeThenClose { inbound, outbound -> Goodbye? in
                for try await message in inbound {
                    switch message {
                    case .pushChunk(let pushed):
                        // C's key, but a signature by another key: it does not hold.
                        let forger = Curve25519.Signing.PrivateKey()
                        let signature = Array(try forger.signature(for: Receipt.signedBytes(networkID: cIdentity.networkID, address: chunk.address)))
                        let stored = Receipt.Stored(address: chunk.address, publicKey: cIdentity.publicKey, signature: signature)
                        try await outbound.write(.receipt(Receipt(ruid: pushed.ruid, outcome: .stored(stored))))
                    case .goodbye(let goodbye):
                        return goodbye
                    default:
                        continue
                    }
                }
                return nil
            }
        }
        _ = try await a.node.upload(chunk)
        let result = await a.node.push(chunk)
        #expect(result == .failure(.notReceipted(tried: 1)), "B found no other peer closer to the chunk and refused A")
        let goodbye = try await script.value
        #expect(goodbye?.reason == .protocolViolation)
        #expect(goodbye?.message.contains("invalid receipt") == true, "\(String(describing: goodbye))")
        #expect(b.node.pushStatus().counters.badReceipts == 1)
        #expect(try a.node.chunk(chunk.address) == chunk, "a failed push loses nothing: the upload stays stored")
        await a.stop()
        await b.stop()
    }
}
