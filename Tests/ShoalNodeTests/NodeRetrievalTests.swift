import Crypto
import Foundation
import NIOCore
import ShoalCore
import ShoalNode
import ShoalStore
import ShoalTestSupport
import Testing

/// Retrieval and presence as a node answers a peer: a chunk it stores is served; one it lacks
/// is refused at once when the request has no hop left, or when no peer closer than the asker
/// is connected; a presence query gets a bit for each address stored; a presence answer nobody
/// asked for is dropped without ending the connection, a push the node is the closest to is
/// stored and receipted, while a retrieval answer (or a receipt) to a request never made is a
/// protocol violation. The asking peer B is played through the
/// transport, so the test sees A's answers.
@Suite(.serialized)
struct NodeRetrievalTests {
    @Test(.timeLimit(.minutes(1)))
    func aPeerRetrievesWhatTheNodeStoresAndIsToldAtOnceWhatItDoesNot() async throws {
        let a = try RunningNode(name: "a")
        let port = try await a.startedPort()
        let held = SeededChunks.chunks(count: 3, size: 1000, seed: 21)
        for chunk in held { _ = try await a.node.upload(chunk) }
        let missing = SeededChunks.chunks(count: 1, seed: 22)[0]

        let (_, b) = try await a.dialAsRogue(seed: 93, port: port)
        let answers = try await b.channel.executeThenClose { inbound, outbound in
            try await outbound.write(contentsOf: [
                .retrieveRequest(RetrieveRequest(ruid: 1, address: held[0].address, hopsLeft: 3)),
                .retrieveRequest(RetrieveRequest(ruid: 2, address: missing.address, hopsLeft: 0)),
                .wantHave(WantHave(ruid: 3, addresses: [held[1].address, missing.address, held[2].address, held[0].address])),
                // Hops left, but A's only peer is B, the asker: nobody to forward to.
                .retrieveRequest(RetrieveRequest(ruid: 4, address: missing.address, hopsLeft: 3)),
            ])
            var iterator = inbound.makeAsyncIterator()
            return try await retrievalAnswers(&iterator, count: 4)
        }

        guard case .retrieveDelivery(let found)? = answers[1], case .chunk(let delivered) = found.outcome else {
            Issue.record("no chunk for request 1: \(String(describing: answers[1]))")
            return
        }
        #expect(try Chunk(span: delivered.span, payload: delivered.payload, claimedAddress: held[0].address) == held[0])
        guard case .retrieveDelivery(let notFound)? = answers[2], case .refused(let refusal) = notFound.outcome else {
            Issue.record("no refusal for request 2: \(String(describing: answers[2]))")
            return
        }
        #expect(refusal.code == .hopLimit)
        guard case .retrieveDelivery(let nobody)? = answers[4], case .refused(let refusal4) = nobody.outcome else {
            Issue.record("no refusal for request 4: \(String(describing: answers[4]))")
            return
        }
        #expect(refusal4.code == .notFound)
        guard case .presence(let presence)? = answers[3] else {
            Issue.record("no presence for request 3: \(String(describing: answers[3]))")
            return
        }
        #expect(presence == Presence(ruid: 3, present: [true, false, true, true]))
        #expect(try a.node.status().chunksServed == 1)
        await a.stop()
    }

    @Test(.timeLimit(.minutes(1)))
    func aPresenceNobodyAskedForIsDroppedAndAPushToTheClosestNodeIsReceipted() async throws {
        let a = try RunningNode(name: "a")
        let port = try await a.startedPort()
        let held = SeededChunks.chunks(count: 1, size: 100, seed: 23)[0]
        _ = try await a.node.upload(held)

        let (bConfiguration, b) = try await a.dialAsRogue(seed: 94, port: port)
        // A chunk closer to A than to B: A, whose only peer is B, is where it belongs.
        var chunks = SeededChunks(seed: 24)
        var pushed = chunks.chunk(size: 100)
        while !a.node.overlay.isCloser(to: pushed.address, than: bConfiguration.identity.overlay) { pushed = chunks.chunk(size: 100) }
        let answers = try await b.channel.executeThenClose { inbound, outbound in
            try await outbound.write(contentsOf: [
                .presence(Presence(ruid: 6, present: [true])),
                .pushChunk(PushChunk(ruid: 7, hopsLeft: 2, chunk: DeliveredChunk(pushed))),
                // Still connected and still answering:
                .retrieveRequest(RetrieveRequest(ruid: 9, address: held.address, hopsLeft: 0)),
            ])
            var iterator = inbound.makeAsyncIterator()
            let answers = try await retrievalAnswers(&iterator, count: 2)
            // Asked while the connection is open (it closes when this closure returns).
            #expect(await a.node.peers().count == 1, "B is still connected")
            return answers
        }
        guard case .retrieveDelivery(let delivery)? = answers[9], case .chunk = delivery.outcome else {
            Issue.record("request 9 was not answered with its chunk: \(String(describing: answers[9]))")
            return
        }
        guard case .receipt(let receipt)? = answers[7], case .stored(let stored) = receipt.outcome else {
            Issue.record("push 7 was not receipted: \(String(describing: answers[7]))")
            return
        }
        #expect(stored.address == pushed.address)
        #expect(stored.publicKey == a.node.identity.publicKey)
        let key = try Curve25519.Signing.PublicKey(rawRepresentation: stored.publicKey)
        #expect(key.isValidSignature(stored.signature, for: Receipt.signedBytes(networkID: a.node.identity.networkID, address: pushed.address)))
        #expect(try a.node.chunk(pushed.address) == pushed, "stored before the receipt went out")
        #expect(try a.node.store.count() == 2)
        await a.stop()
    }

    /// More retrieval requests at once than the per-peer budget's burst: the peer is dropped
    /// for flooding, and the node goes on serving others. (The budget is made small here: at
    /// the default, 65,536 a second, a node answering each request is itself the bottleneck on
    /// this machine, so a flood from one peer is slowed by its own socket before the budget.)
    @Test(.timeLimit(.minutes(1)))
    func aFloodOfRetrievalRequestsDropsThePeer() async throws {
        let a = try RunningNode(name: "a") { configuration in
            configuration.session.sync.retrievalRequestsPerSecondMax = 200
            configuration.session.sync.retrievalRequestsBurstMax = 100
        }
        let port = try await a.startedPort()
        let burst = 100
        let (_, b) = try await a.dialAsRogue(seed: 96, port: port)
        let missing = SeededChunks.chunks(count: 1, size: 100, seed: 27)[0].address
        let goodbye = try await b.channel.executeThenClose { inbound, outbound -> Goodbye? in
            let flood = (0..<(burst + 2_000)).map { Message.retrieveRequest(RetrieveRequest(ruid: UInt32($0 + 1), address: missing, hopsLeft: 0)) }
            // The node may close before all of it is written.
            try? await outbound.write(contentsOf: flood)
            for try await message in inbound { if case .goodbye(let g) = message { return g } }
            return nil
        }
        #expect(goodbye?.reason == .protocolViolation)
        #expect(goodbye?.message.contains("retrieval requests a second") == true, "\(String(describing: goodbye))")
        // Still serving: another peer connects and is answered.
        let (_, c) = try await a.dialAsRogue(seed: 97, port: port)
        let answers = try await c.channel.executeThenClose { inbound, outbound in
            try await outbound.write(.retrieveRequest(RetrieveRequest(ruid: 1, address: missing, hopsLeft: 0)))
            var iterator = inbound.makeAsyncIterator()
            return try await retrievalAnswers(&iterator, count: 1)
        }
        #expect(answers[1] != nil)
        await a.stop()
    }

    @Test(.timeLimit(.minutes(1)))
    func aRetrievalAnswerToARequestNeverMadeDropsThePeer() async throws {
        let a = try RunningNode(name: "a")
        let port = try await a.startedPort()
        let stray = SeededChunks.chunks(count: 1, size: 100, seed: 25)[0]
        let (_, b) = try await a.dialAsRogue(seed: 95, port: port)
        let goodbye = try await b.channel.executeThenClose { inbound, outbound -> Goodbye? in
            try await outbound.write(.retrieveDelivery(RetrieveDelivery(ruid: 7_000, outcome: .chunk(DeliveredChunk(stray)))))
            for try await message in inbound { if case .goodbye(let g) = message { return g } }
            return nil
        }
        #expect(goodbye?.reason == .protocolViolation)
        #expect(try a.node.chunk(stray.address) == nil)
        await a.stop()
    }
}

/// Retrieval across real nodes: A asks B, which does not hold the chunk and forwards the
/// request to C, closer to the chunk's address; the answer comes back along the path, B keeps
/// a copy, and a peer that answers with the wrong chunk is dropped and the caller told.
/// C is played through the transport, so it syncs nothing and answers only what the test says.
@Suite(.serialized)
struct NodeForwardingTests {
    /// B, a scripted peer C dialled in to it, a chunk closer to C than to B, and A connected to
    /// B alone (C listens nowhere, so hive cannot tell A how to reach it).
    static func line(seed: UInt64) async throws -> (a: RunningNode, b: RunningNode, c: EstablishedConnection, chunk: Chunk) {
        let b = try RunningNode(name: "b")
        let bPort = try await b.startedPort()
        let (cConfiguration, c) = try await b.dialAsRogue(seed: seed, port: bPort)
        var chunks = SeededChunks(seed: seed)
        var chunk = chunks.chunk(size: 200)
        while !(Retrieval.distance(cConfiguration.identity.overlay, chunk.address) < Retrieval.distance(b.node.overlay, chunk.address)) {
            chunk = chunks.chunk(size: 200)
        }
        let a = try RunningNode(name: "a", peers: ["127.0.0.1:\(bPort)"])
        _ = try await a.start()
        try await eventually("A connects to B") { await a.node.peers().count == 1 }
        try await eventually("B's retrieval may ask A and C") { await b.node.retrievalStatus().peers == 2 }
        try await eventually("A's retrieval may ask B") { await a.node.retrievalStatus().peers == 1 }
        return (a, b, c, chunk)
    }

    @Test(.timeLimit(.minutes(1)))
    func aRetrievalIsForwardedOneHopCloserAndTheChunkComesBack() async throws {
        let (a, b, c, chunk) = try await Self.line(seed: 96)
        let script = Task {
            try await c.channel.executeThenClose { inbound, outbound -> UInt8? in
                for try await message in inbound {
                    guard case .retrieveRequest(let request) = message, request.address == chunk.address else { continue }
                    try await outbound.write(.retrieveDelivery(RetrieveDelivery(ruid: request.ruid, outcome: .chunk(DeliveredChunk(chunk)))))
                    // Stay until B has the answer (closing at once could cut it off).
                    try await Task.sleep(for: .milliseconds(200))
                    return request.hopsLeft
                }
                return nil
            }
        }
        let result = try await a.node.retrieve(chunk.address)
        #expect(result == .success(chunk))
        #expect(try await script.value == RetrievalLimits().hopsMax - 1, "B forwards with one hop less than A granted")
        try await eventually("B keeps the chunk it forwarded") { try b.node.chunk(chunk.address) != nil }
        #expect(await b.node.retrievalStatus().counters.forwarded == 1)
        await a.stop()
        await b.stop()
    }

    @Test(.timeLimit(.minutes(1)))
    func theWrongChunkFromUpstreamDropsThatPeerAndTheCallerHearsNotFound() async throws {
        let (a, b, c, chunk) = try await Self.line(seed: 97)
        let other = SeededChunks.chunks(count: 1, size: 200, seed: 98)[0]
        let script = Task {
            try await c.channel.executeThenClose { inbound, outbound -> Goodbye? in
                for try await message in inbound {
                    switch message {
                    case .retrieveRequest(let request) where request.address == chunk.address:
                        try await outbound.write(.retrieveDelivery(RetrieveDelivery(ruid: request.ruid, outcome: .chunk(DeliveredChunk(other)))))
                    case .goodbye(let goodbye):
                        return goodbye
                    default:
                        continue
                    }
                }
                return nil
            }
        }
        let result = try await a.node.retrieve(chunk.address)
        guard case .failure(.notFound) = result else {
            Issue.record("expected not found, got \(result)")
            return
        }
        #expect(try await script.value?.reason == .protocolViolation, "B drops C for the wrong chunk")
        #expect(try b.node.chunk(other.address) == nil && b.node.chunk(chunk.address) == nil)
        await a.stop()
        await b.stop()
    }
}

extension RunningNode {
    /// Starts the node and returns the port it listens on.
    func startedPort() async throws -> Int {
        let address = try await start()
        return try #require(Int(address.split(separator: ":").last!))
    }
}

/// Reads what the node sends (its own sync and hive requests are ignored) until `count`
/// retrieval answers are in, by request ID. A goodbye before them is a failure.
func retrievalAnswers(_ iterator: inout NIOAsyncChannelInboundStream<Message>.AsyncIterator, count: Int) async throws -> [RequestID: Message] {
    var answers: [RequestID: Message] = [:]
    while answers.count < count, let message = try await iterator.next() {
        switch message {
        case .retrieveDelivery(let d): answers[d.ruid] = message
        case .presence(let p): answers[p.ruid] = message
        case .receipt(let r): answers[r.ruid] = message
        case .goodbye(let g):
            Issue.record("the node said goodbye: \(g.reason) \(g.message)")
            return answers
        default: continue
        }
    }
    return answers
}
