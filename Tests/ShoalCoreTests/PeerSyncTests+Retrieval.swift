import ShoalCore
import Testing

extension PeerSyncTests {
    static let retrievalMessages: [Message] = {
        var f = Fixtures(seed: 11)
        let chunk = f.chunk()
        return [
            .retrieveRequest(RetrieveRequest(ruid: 1, address: chunk.address, hopsLeft: 3)),
            .retrieveDelivery(RetrieveDelivery(ruid: 1, outcome: .chunk(DeliveredChunk(chunk)))),
            .retrieveDelivery(RetrieveDelivery(ruid: 2, outcome: .refused(Refusal(code: .notFound, message: "")))),
            .wantHave(WantHave(ruid: 3, addresses: [chunk.address])),
            .presence(Presence(ruid: 3, present: [true])),
            .pushChunk(PushChunk(ruid: 4, hopsLeft: 0, chunk: DeliveredChunk(chunk))),
            .receipt(Receipt(ruid: 4, outcome: .refused(Refusal(code: .notStored, message: "full")))),
        ]
    }()

    /// Request IDs of retrieval share nothing with the sync streams' slots: an ID a stream
    /// uses, or one no stream ever issued, is neither late nor an unknown request here.
    @Test("retrieval, presence and push go out to the shell untouched, never into a sync stream", arguments: retrievalMessages)
    func retrievalMessagesAreRoutedOut(_ message: Message) throws {
        var d = PeerSyncDriver()
        d.subscribe([3: 1000])
        let request = try #require(d.takeHistoryRequests().first)
        _ = d.take()
        d.record(d.machine.received(message, now: 1))
        #expect(d.take() == [.retrieval(message)])
        // The same message again, carrying the request ID of a running sync stream.
        let reused = Self.withRequestID(request.ruid, message)
        d.record(d.machine.received(reused, now: 2))
        #expect(d.take() == [.retrieval(reused)])
        #expect(d.machine.faults == 0 && d.machine.droppedFor == nil)
        #expect(d.machine.counters.lateReplies == 0)
    }

    static func withRequestID(_ ruid: RequestID, _ message: Message) -> Message {
        switch message {
        case .retrieveRequest(var m): m.ruid = ruid; return .retrieveRequest(m)
        case .retrieveDelivery(var m): m.ruid = ruid; return .retrieveDelivery(m)
        case .wantHave(var m): m.ruid = ruid; return .wantHave(m)
        case .presence(var m): m.ruid = ruid; return .presence(m)
        case .pushChunk(var m): m.ruid = ruid; return .pushChunk(m)
        case .receipt(var m): m.ruid = ruid; return .receipt(m)
        default: return message
        }
    }
}
