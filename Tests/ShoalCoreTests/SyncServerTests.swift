import ShoalCore
import Testing

struct SyncServerTests {
    @Test func aHistoryRequestIsQueriedThenOfferedAndPinnedUntilWanted() {
        var f = Fixtures()
        var server = SyncServer()
        let request = GetRange(ruid: 5, bin: 1, from: 1, to: 50, limit: 128)
        #expect(server.getRangeReceived(request, now: 0) == [.queryRange(ruid: 5, bin: 1, from: 1, to: 50, limit: 128)])
        let a = f.chunk().address, b = f.chunk().address
        let actions = server.rangeRead(ruid: 5, entries: [(3, a), (7, b)], cursor: 60, now: 1)
        #expect(actions == [.send(.offeredHashes(OfferedHashes(ruid: 5, from: 1, lastIndex: 50, addresses: [a, b])))])
        #expect(server.wantedReceived(WantedHashes(ruid: 5, wanted: [false, true]), now: 2) == [.deliver(ruid: 5, addresses: [b])])
        #expect(server.requests.isEmpty)
        server.checkInvariants()
    }

    @Test func aFullBatchEndsAtItsLastEntryAndHistoryNeverPassesTheCursor() {
        var f = Fixtures()
        var server = SyncServer()
        _ = server.getRangeReceived(GetRange(ruid: 1, bin: 0, from: 1, to: 1000, limit: 2), now: 0)
        let full = server.rangeRead(ruid: 1, entries: [(1, f.chunk().address), (4, f.chunk().address)], cursor: 900, now: 0)
        guard case .send(.offeredHashes(let offer))? = full.first else { Issue.record("\(full)"); return }
        #expect(offer.lastIndex == 4)
        _ = server.getRangeReceived(GetRange(ruid: 2, bin: 0, from: 5, to: 1000, limit: 2), now: 0)
        let short = server.rangeRead(ruid: 2, entries: [], cursor: 900, now: 0)
        #expect(short == [.send(.offeredHashes(OfferedHashes(ruid: 2, from: 5, lastIndex: 900, addresses: [])))])
        #expect(server.requests[2] == nil, "an empty offer ends its request")
    }

    @Test func aLiveRequestWaitsForTheBinToGrowOrTimesOutEmpty() {
        var f = Fixtures()
        var server = SyncServer()
        _ = server.getRangeReceived(GetRange(ruid: 9, bin: 2, from: 11, to: nil, limit: 128), now: 0)
        #expect(server.rangeRead(ruid: 9, entries: [], cursor: 10, now: 0) == [])
        #expect(server.binAdvanced(bin: 3, cursor: 20, now: 1) == [], "another bin")
        // The bin grew: the store is read after the gathering time, for what else arrives meanwhile.
        let gather = server.limits.liveGatherMs
        #expect(server.binAdvanced(bin: 2, cursor: 12, now: 1) == [])
        #expect(server.nextDeadline == 1 + gather)
        #expect(server.binAdvanced(bin: 2, cursor: 13, now: 2) == [], "gathering already")
        #expect(server.tick(now: gather) == [])
        #expect(server.tick(now: 1 + gather) == [.queryRange(ruid: 9, bin: 2, from: 11, to: .max, limit: 128)])
        let a = f.chunk().address
        #expect(server.rangeRead(ruid: 9, entries: [(12, a)], cursor: 12, now: 1)
                == [.send(.offeredHashes(OfferedHashes(ruid: 9, from: 11, lastIndex: 12, addresses: [a])))])
        _ = server.getRangeReceived(GetRange(ruid: 10, bin: 2, from: 13, to: nil, limit: 128), now: 2)
        _ = server.rangeRead(ruid: 10, entries: [], cursor: 12, now: 2)
        let idle = server.limits.liveIdleTimeoutMs
        #expect(server.tick(now: 2 + idle - 1) == [])
        #expect(server.tick(now: 2 + idle) == [.send(.offeredHashes(OfferedHashes(ruid: 10, from: 13, lastIndex: 12, addresses: [])))])
    }

    @Test(arguments: [
        (GetRange(ruid: 1, bin: 32, from: 1, to: 2, limit: 1), "bin"),
        (GetRange(ruid: 1, bin: 0, from: 1, to: 2, limit: 0), "limit"),
        (GetRange(ruid: 1, bin: 0, from: 5, to: 2, limit: 1), "inverted"),
        (GetRange(ruid: 1, bin: 0, from: 0, to: 2, limit: 1), "start at 1"),
    ])
    func malformedRequestsAreFaults(request: GetRange, reason: String) {
        var server = SyncServer()
        let actions = server.getRangeReceived(request, now: 0)
        guard case .fault(.malformedRequest(let message))? = actions.first else { Issue.record("\(actions)"); return }
        #expect(message.contains(reason))
        #expect(server.requests.isEmpty)
    }

    @Test func aReusedRequestIDIsAFault() {
        var server = SyncServer()
        _ = server.getRangeReceived(GetRange(ruid: 1, bin: 0, from: 1, to: 2, limit: 1), now: 0)
        guard case .fault? = server.getRangeReceived(GetRange(ruid: 1, bin: 0, from: 1, to: 2, limit: 1), now: 0).first else {
            Issue.record("no fault"); return
        }
    }

    @Test func tooManyRequestsAreRefusedNotQueued() {
        var server = SyncServer()
        for ruid in 0..<8 { _ = server.getRangeReceived(GetRange(ruid: RequestID(ruid), bin: 0, from: 1, to: 2, limit: 1), now: 0) }
        let refused = server.getRangeReceived(GetRange(ruid: 8, bin: 0, from: 1, to: 2, limit: 1), now: 0)
        guard case .send(.streamError(let error))? = refused.first else { Issue.record("\(refused)"); return }
        #expect(error.code == .overloaded)
        server.checkInvariants()
    }

    @Test func binsNotServedAreRefused() {
        var server = SyncServer(servedBins: [4])
        let refused = server.getRangeReceived(GetRange(ruid: 1, bin: 3, from: 1, to: 2, limit: 1), now: 0)
        guard case .send(.streamError(let error))? = refused.first else { Issue.record("\(refused)"); return }
        #expect(error.code == .binNotServed)
    }

    @Test func wantsThatDoNotMatchTheOfferAreFaults() {
        var f = Fixtures()
        var server = SyncServer()
        _ = server.getRangeReceived(GetRange(ruid: 1, bin: 0, from: 1, to: 9, limit: 9), now: 0)
        _ = server.rangeRead(ruid: 1, entries: (1...3).map { (UInt64($0), f.chunk().address) }, cursor: 9, now: 0)
        #expect(server.wantedReceived(WantedHashes(ruid: 2, bitvector: [1]), now: 0) == [.fault(.unknownRequest(2))])
        guard case .fault(.malformedRequest)? = server.wantedReceived(WantedHashes(ruid: 1, bitvector: [1, 0]), now: 0).first else {
            Issue.record("long bitvector accepted"); return
        }
        guard case .fault(.malformedRequest)? = server.wantedReceived(WantedHashes(ruid: 1, bitvector: [0b1000]), now: 0).first else {
            Issue.record("bit past the offer accepted"); return
        }
    }

    @Test func unansweredOffersExpireAndReleaseTheirPins() {
        var f = Fixtures()
        var server = SyncServer()
        _ = server.getRangeReceived(GetRange(ruid: 1, bin: 0, from: 1, to: 9, limit: 9), now: 0)
        _ = server.rangeRead(ruid: 1, entries: [(1, f.chunk().address)], cursor: 9, now: 0)
        #expect(server.nextDeadline == 60_000)
        _ = server.tick(now: 60_000)
        #expect(server.requests.isEmpty)
    }
}
