import Foundation
import NIOCore
import ShoalCore
import ShoalNode
import ShoalStore
import ShoalTestSupport
import Testing

/// Retrieval and presence as a node answers them today, from its own store: a peer that asks
/// for a chunk gets it, or `notFound` at once; a presence query gets a bit for each address
/// stored; answers and pushes nobody asked for are dropped without ending the connection.
/// The asking peer B is played through the transport, so the test sees A's answers.
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
            ])
            var iterator = inbound.makeAsyncIterator()
            return try await retrievalAnswers(&iterator, count: 3)
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
        #expect(refusal.code == .notFound)
        guard case .presence(let presence)? = answers[3] else {
            Issue.record("no presence for request 3: \(String(describing: answers[3]))")
            return
        }
        #expect(presence == Presence(ruid: 3, present: [true, false, true, true]))
        #expect(try a.node.status().chunksServed == 1)
        await a.stop()
    }

    @Test(.timeLimit(.minutes(1)))
    func answersAndPushesNobodyAskedForAreDroppedAndTheConnectionStays() async throws {
        let a = try RunningNode(name: "a")
        let port = try await a.startedPort()
        let held = SeededChunks.chunks(count: 1, size: 100, seed: 23)[0]
        _ = try await a.node.upload(held)
        let pushed = SeededChunks.chunks(count: 1, size: 100, seed: 24)[0]

        let (_, b) = try await a.dialAsRogue(seed: 94, port: port)
        let answers = try await b.channel.executeThenClose { inbound, outbound in
            try await outbound.write(contentsOf: [
                .retrieveDelivery(RetrieveDelivery(ruid: 5, outcome: .chunk(DeliveredChunk(pushed)))),
                .presence(Presence(ruid: 6, present: [true])),
                .pushChunk(PushChunk(ruid: 7, hopsLeft: 2, chunk: DeliveredChunk(pushed))),
                .receipt(Receipt(ruid: 8, outcome: .refused(Refusal(code: .notStored, message: "full")))),
                // Still connected and still answering:
                .retrieveRequest(RetrieveRequest(ruid: 9, address: held.address, hopsLeft: 0)),
            ])
            var iterator = inbound.makeAsyncIterator()
            return try await retrievalAnswers(&iterator, count: 1)
        }
        guard case .retrieveDelivery(let delivery)? = answers[9], case .chunk = delivery.outcome else {
            Issue.record("request 9 was not answered with its chunk: \(String(describing: answers[9]))")
            return
        }
        #expect(try a.node.chunk(pushed.address) == nil, "an unasked push is not stored (no push machine yet)")
        #expect(try a.node.store.count() == 1)
        #expect(await a.node.peers().count == 1, "B is still connected")
        await a.stop()
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
