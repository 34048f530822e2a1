import ShoalCore
import Testing

extension PeerSync.Action {
    var messages: [Message] { if case .send(let m) = self { return m }; return [] }
    var persist: PeerSync.Persist? { if case .persist(let p) = self { return p }; return nil }
}

/// One `PeerSync` and the peer's side of the conversation, played by the test.
struct PeerSyncDriver {
    var machine: PeerSync
    var now: UInt64 = 0
    var actions: [PeerSync.Action] = []
    static let peer = OverlayAddress(bytes: [UInt8](repeating: 0x40, count: 32))!
    static let base = OverlayAddress(bytes: [UInt8](repeating: 0x41, count: 32))!

    init(limits: PeerSync.Limits = PeerSync.Limits(), epoch: UInt64 = 9) {
        machine = PeerSync(peer: Self.peer, base: Self.base, epoch: epoch, limits: limits, now: 0)
    }

    mutating func record(_ new: [PeerSync.Action]) {
        machine.checkInvariants()
        actions += new
    }

    /// Subscribes `bins` and answers the stream-info request with `cursors`.
    mutating func subscribe(_ cursors: [UInt8: UInt64], known: [UInt8: (epoch: UInt64, set: IntervalSet)] = [:], epoch: UInt64 = 9) {
        record(machine.subscribe(cursors.keys.sorted(), now: now))
        let response = StreamInfoResponse(epoch: epoch, cursors: cursors.sorted { $0.key < $1.key }.map { .init(bin: $0.key, cursor: $0.value) })
        record(machine.received(.streamInfoResponse(response), now: now))
        record(machine.streamInfoReceived(response, known: known, now: now))
    }

    /// The history requests sent so far (live requests have no end), taken out of `actions`.
    mutating func takeHistoryRequests() -> [GetRange] {
        var out: [GetRange] = []
        var rest: [PeerSync.Action] = []
        for action in actions {
            var kept: [Message] = []
            for message in action.messages {
                if case .getRange(let r) = message, r.to != nil { out.append(r) } else { kept.append(message) }
            }
            if case .send = action { if !kept.isEmpty { rest.append(.send(kept)) } } else { rest.append(action) }
        }
        actions = rest
        return out
    }

    mutating func take() -> [PeerSync.Action] {
        defer { actions = [] }
        return actions
    }

    mutating func advance(to time: UInt64) {
        now = time
        record(machine.tick(now: now))
    }

    /// Answers a history request with an offer of nothing (its bin IDs hold no chunks for us)
    /// and commits the seal that follows.
    mutating func answerEmpty(_ request: GetRange) {
        record(machine.received(.offeredHashes(OfferedHashes(ruid: request.ruid, from: request.from, lastIndex: request.to!, addresses: [])), now: now))
        let persists = actions.compactMap(\.persist)
        actions.removeAll { $0.persist != nil }
        for persist in persists { record(machine.batchCommitted(persist, sealed: true, duplicates: 0, now: now)) }
    }

    var faults: [PeerFault] {
        actions.compactMap { action in
            switch action {
            case .penalise(let f), .drop(let f): return f
            default: return nil
            }
        }
    }
}

struct PeerSyncTests {
    @Test func anOfferForARequestThatTimedOutIsLateNotAFault() throws {
        var d = PeerSyncDriver()
        d.subscribe([3: 1000])
        let request = try #require(d.takeHistoryRequests().first)
        d.advance(to: 20_000)  // nothing heard: the request times out (a penalty, not a drop)
        #expect(d.faults == [.batchTimeout(request.ruid)])
        _ = d.take()
        var f = Fixtures()
        let addresses = f.chunks(3).map(\.address)
        let offer = OfferedHashes(ruid: request.ruid, from: request.from, lastIndex: request.from + 2, addresses: addresses)
        d.record(d.machine.received(.offeredHashes(offer), now: d.now))
        #expect(d.faults.isEmpty)
        #expect(d.machine.droppedFor == nil)
        #expect(d.machine.counters.lateReplies == 1)
        // Answered with nothing wanted, so the peer unpins the offer at once.
        #expect(d.take().flatMap(\.messages) == [.wantedHashes(WantedHashes(ruid: request.ruid, wanted: [false, false, false]))])
        // An empty offer ended the request on the peer's side: no answer, which the peer
        // would take for a reply to a request it does not know.
        let live = OfferedHashes(ruid: 3 << SyncStreamClient.ruidSequenceBits | 1, from: 1001, lastIndex: 1000, addresses: [])
        d.record(d.machine.cancel([3], now: d.now))
        _ = d.take()
        d.record(d.machine.received(.offeredHashes(live), now: d.now))
        #expect(d.faults.isEmpty && d.take().flatMap(\.messages).isEmpty)
    }

    @Test func chunksArrivingAfterTheirBatchWasGivenUpAreIgnored() throws {
        var f = Fixtures()
        var d = PeerSyncDriver()
        d.subscribe([2: 10])
        let request = try #require(d.takeHistoryRequests().first)
        let chunks = f.chunks(2)
        d.record(d.machine.received(.offeredHashes(OfferedHashes(ruid: request.ruid, from: 1, lastIndex: 10, addresses: chunks.map(\.address))),
                                    now: d.now))
        d.advance(to: 25_000)
        #expect(d.faults.contains(.batchTimeout(request.ruid)))
        #expect(d.take().contains(.release(chunks.map(\.address).sorted())), "the claims of the batch are released")
        d.record(d.machine.received(.chunkDelivery(ChunkDelivery(ruid: request.ruid, chunks: chunks.map(DeliveredChunk.init))), now: d.now))
        #expect(d.faults.isEmpty && d.machine.droppedFor == nil)
        #expect(d.take().allSatisfy { $0.persist == nil }, "nothing of a given-up batch is stored")
    }

    @Test func repliesForACancelledBinAreLate() throws {
        var d = PeerSyncDriver()
        d.subscribe([4: 500])
        let request = try #require(d.takeHistoryRequests().first)
        d.record(d.machine.cancel([4], now: d.now))
        #expect(d.machine.subscribedBins.isEmpty)
        d.record(d.machine.received(.streamError(StreamError(ruid: request.ruid, code: .overloaded, message: "")), now: d.now))
        #expect(d.faults.isEmpty && d.machine.counters.lateReplies == 1)
    }

    @Test func aRequestIDNeverUsedDropsThePeer() {
        var d = PeerSyncDriver()
        d.subscribe([4: 500])
        let ruid: RequestID = 77 << SyncStreamClient.ruidSequenceBits | 5
        d.record(d.machine.received(.streamError(StreamError(ruid: ruid, code: .overloaded, message: "")), now: d.now))
        #expect(d.faults == [.unknownRequest(ruid)])
        #expect(d.machine.droppedFor == .unknownRequest(ruid))
    }

    @Test func aHistoryNeedingMoreWindowsThanSlotsIsSyncedToTheEnd() {
        var limits = PeerSync.Limits()
        limits.historyWindowIDs = 1  // windows of 3 bin IDs: 2,000 per bin, 6,000 in all, more than the 4,064 history slots
        var d = PeerSyncDriver(limits: limits)
        let cursor: UInt64 = 6_000
        d.subscribe([0: cursor, 1: cursor, 2: cursor])
        var sealed: [UInt8: IntervalSet] = [:]
        var rounds = 0
        while !d.machine.historySynced && rounds < 20_000 {
            rounds += 1
            let requests = d.takeHistoryRequests()
            d.actions.removeAll { $0.persist == nil }  // releases and live requests: not needed here
            if requests.isEmpty { break }
            for request in requests {
                sealed[request.bin, default: IntervalSet()].insert(request.from...request.to!)
                d.answerEmpty(request)
            }
        }
        #expect(d.machine.historySynced)
        #expect(sealed == [0: IntervalSet([1...cursor]), 1: IntervalSet([1...cursor]), 2: IntervalSet([1...cursor])],
                "every bin ID of every history was asked for")
        #expect(d.machine.counters.windowsStarted == 6_000)
    }

    @Test func aCursorBelowOurIntervalsStartsThatBinOver() throws {
        var d = PeerSyncDriver()
        d.subscribe([3: 200, 5: 900], known: [3: (9, IntervalSet([1...500])), 5: (9, IntervalSet([1...100]))])
        let actions = d.take()
        let reset = try #require(actions.firstIndex(of: .resetIntervals(bins: [3])))
        #expect(!actions[..<reset].contains { !$0.messages.isEmpty && $0.messages.contains { if case .getRange = $0 { true } else { false } } },
                "the reset is asked for before any request of the bin")
        #expect(!actions.contains(.resetIntervals(bins: nil)))
        #expect(d.machine.counters.cursorRegressions == 1)
        d.actions = actions
        let requests = d.takeHistoryRequests()
        #expect(requests.contains { $0.bin == 3 && $0.from == 1 }, "bin 3 is synced again from its first ID")
        #expect(requests.contains { $0.bin == 5 && $0.from == 101 }, "bin 5 resumes after what it covered")
    }

    @Test func offeredChunksBelowTheStorageRadiusAreNotWanted() throws {
        var f = Fixtures(seed: 11)
        var d = PeerSyncDriver()
        d.machine.radiusChanged(2)
        d.subscribe([0: 100])
        let request = try #require(d.takeHistoryRequests().first)
        let chunks = f.chunks(40)
        d.record(d.machine.received(.offeredHashes(OfferedHashes(ruid: request.ruid, from: 1, lastIndex: 40, addresses: chunks.map(\.address))),
                                    now: d.now))
        let wants = d.take().flatMap(\.messages).compactMap { message -> WantedHashes? in
            if case .wantedHashes(let w) = message { w } else { nil }
        }
        guard let want = wants.first else {
            Issue.record("no want")
            return
        }
        for (i, chunk) in chunks.enumerated() {
            #expect(want.isWanted(i) == (chunk.address.proximity(to: PeerSyncDriver.base) >= 2), "chunk \(i)")
        }
        #expect(chunks.contains { $0.address.proximity(to: PeerSyncDriver.base) < 2 }, "the offer has chunks below the radius")
    }

    @Test func aNewEpochResetsEveryBin() {
        var d = PeerSyncDriver()
        d.subscribe([1: 50], known: [1: (8, IntervalSet([1...50]))], epoch: 9)
        #expect(d.take().contains(.resetIntervals(bins: nil)))
        #expect(d.machine.epoch == 9)
    }

    @Test func aCancelledBinResumesFromItsGapWhenSubscribedAgain() throws {
        var d = PeerSyncDriver()
        d.subscribe([6: 300])
        let first = try #require(d.takeHistoryRequests().first)
        #expect(first.from == 1)
        d.record(d.machine.cancel([6], now: d.now))
        _ = d.take()
        // What was sealed before the cancel is in the store; the shell passes it back.
        d.subscribe([6: 300], known: [6: (9, IntervalSet([1...120]))])
        let again = try #require(d.takeHistoryRequests().first)
        #expect(again.from == 121)
        #expect(SyncStreamClient.sequence(of: again.ruid) != SyncStreamClient.sequence(of: first.ruid) || again.ruid != first.ruid)
    }

    @Test func aSlowPeerThatKeepsDeliveringIsNeverPenalised() throws {
        var f = Fixtures()
        var d = PeerSyncDriver()
        d.subscribe([0: 100_000])
        let requests = d.takeHistoryRequests()
        #expect(requests.count == PeerSync.Limits().historyStreamsInitial)
        // Every request is offered 256 chunks, but the peer delivers only 8 chunks a second,
        // one stream after another: most batches wait far longer than the 10 s batch timeout.
        var outstanding: [(ruid: RequestID, chunks: [Chunk])] = []
        for request in requests {
            let chunks = f.chunks(256)
            outstanding.append((request.ruid, chunks))
            d.record(d.machine.received(.offeredHashes(OfferedHashes(ruid: request.ruid, from: request.from, lastIndex: request.from + 255,
                                                                     addresses: chunks.map(\.address))), now: d.now))
        }
        for second in 1...60 {
            d.advance(to: UInt64(second) * 1000)
            let index = outstanding.firstIndex { !$0.chunks.isEmpty }!
            let piece = Array(outstanding[index].chunks.prefix(8))
            outstanding[index].chunks.removeFirst(piece.count)
            d.record(d.machine.received(.chunkDelivery(ChunkDelivery(ruid: outstanding[index].ruid, chunks: piece.map(DeliveredChunk.init))), now: d.now))
            for persist in d.actions.compactMap(\.persist) {
                d.record(d.machine.batchCommitted(persist, sealed: true, duplicates: 0, now: d.now))
            }
            d.actions.removeAll { $0.persist != nil }
        }
        #expect(d.faults.isEmpty, "slow is not unresponsive")
        #expect(d.machine.historyAllowed == 1, "8 chunks a second: one request of 256 is 32 s of the peer's rate")
        #expect(d.machine.counters.windowsStarted == PeerSync.Limits().historyStreamsInitial,
                "no new window while four are queued at that rate")
        // Silence for the stall timeout is unresponsive: the batches time out.
        d.advance(to: 71_000)
        #expect(!d.faults.isEmpty)
        #expect(d.faults.allSatisfy { if case .batchTimeout = $0 { true } else { false } })
    }

    @Test func aFastPeerGetsMoreHistoryRequestsAtOnce() {
        var d = PeerSyncDriver()
        d.subscribe([0: 1_000_000])
        var rounds = 0
        var most = 0
        var f = Fixtures(seed: 3)
        // The peer answers every request within the tick with 256 chunks: 1,024 chunks per
        // 100 ms at the start, growing as the allowance grows.
        while rounds < 50 {
            rounds += 1
            for request in d.takeHistoryRequests() {
                let chunks = f.chunks(256)
                d.record(d.machine.received(.offeredHashes(OfferedHashes(ruid: request.ruid, from: request.from, lastIndex: request.from + 255,
                                                                         addresses: chunks.map(\.address))), now: d.now))
                d.record(d.machine.received(.chunkDelivery(ChunkDelivery(ruid: request.ruid, chunks: chunks.map(DeliveredChunk.init))), now: d.now))
                for persist in d.actions.compactMap(\.persist) {
                    d.actions.removeAll { $0.persist != nil }
                    d.record(d.machine.batchCommitted(persist, sealed: true, duplicates: 0, now: d.now))
                    for next in d.actions.compactMap(\.persist) {
                        d.actions.removeAll { $0.persist != nil }
                        d.record(d.machine.batchCommitted(next, sealed: true, duplicates: 0, now: d.now))
                    }
                }
            }
            most = max(most, d.machine.historyActiveCount)
            d.advance(to: d.now + 100)
        }
        #expect(d.machine.historyAllowed == PeerSync.Limits().historyStreamsMax, "allowance \(d.machine.historyAllowed)")
        #expect(most > PeerSync.Limits().historyStreamsInitial)
        #expect(d.faults.isEmpty)
    }
}
