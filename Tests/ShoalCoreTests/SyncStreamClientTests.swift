import ShoalCore
import Testing

/// Addresses with known contents for machine tests.
struct Fixtures {
    var rng: SplitMix64
    init(seed: UInt64 = 7) { rng = SplitMix64(seed: seed) }
    mutating func chunk() -> Chunk { try! Chunk(payload: rng.bytes(32)) }
    mutating func chunks(_ n: Int) -> [Chunk] { (0..<n).map { _ in chunk() } }
}

extension SyncStreamClient.Action {
    var sentMessage: Message? { if case .send(let m) = self { return m }; return nil }
    var persisted: SyncStreamClient.Persist? { if case .persist(let p) = self { return p }; return nil }
    var fault: PeerFault? { if case .fault(let f) = self { return f }; return nil }
}

struct SyncStreamClientTests {
    /// A history client for bin 3 up to `end`, started, with its GetRange returned.
    static func started(end: UInt64, intervals: IntervalSet = IntervalSet()) -> (SyncStreamClient, GetRange) {
        var client = SyncStreamClient(bin: 3, mode: .history(end: end), intervals: intervals, slot: 1)
        let actions = client.start(now: 0)
        guard case .getRange(let request)? = actions.first?.sentMessage else { fatalError("no request: \(actions)") }
        return (client, request)
    }

    @Test func historyAsksForTheFirstGapAndSealsWithTheLastChunk() throws {
        var f = Fixtures()
        let (client0, request) = Self.started(end: 10, intervals: IntervalSet([1...2, 6...7]))
        var client = client0
        #expect(request.from == 3)
        #expect(request.to == 5, "up to the end of the first gap")
        #expect(SyncStreamClient.slot(of: request.ruid) == 1)
        let chunks = f.chunks(3)
        var actions = client.offerReceived(OfferedHashes(ruid: request.ruid, from: 3, lastIndex: 5, addresses: chunks.map(\.address)),
                                           now: 1) { _ in .claimed }
        #expect(actions == [.send(.wantedHashes(WantedHashes(ruid: request.ruid, wanted: [true, true, true])))])
        actions = client.chunksDelivered(ChunkDelivery(ruid: request.ruid, chunks: chunks.prefix(2).map(DeliveredChunk.init)), now: 2)
        let first = try #require(actions.first?.persisted)
        #expect(first.seal == nil, "not the last chunk yet")
        #expect(first.chunks == Array(chunks.prefix(2)))
        actions = client.chunksDelivered(ChunkDelivery(ruid: request.ruid, chunks: [DeliveredChunk(chunks[2])]), now: 3)
        #expect(actions == [], "the last chunk waits for the earlier batch to commit")
        actions = client.batchCommitted(id: first.id, sealed: true, now: 4)
        let last = try #require(actions.first?.persisted)
        #expect(last.chunks == [chunks[2]])
        #expect(last.seal == 3...5, "the seal goes in the same batch as the last chunk")
        client.checkInvariants()
        actions = client.batchCommitted(id: last.id, sealed: true, now: 5)
        #expect(actions.first == .release(chunks.map(\.address)))
        #expect(client.intervals == IntervalSet([1...7]))
        // The next gap follows.
        guard case .getRange(let next)? = actions.dropFirst().first?.sentMessage else {
            Issue.record("no next request in \(actions)")
            return
        }
        #expect(next.from == 8)
        #expect(next.to == 10)
    }

    @Test func anOfferOfNothingWantedSealsAtOnce() throws {
        var f = Fixtures()
        var (client, request) = Self.started(end: 4)
        let stored = f.chunk(), elsewhere = f.chunk()
        let actions = client.offerReceived(OfferedHashes(ruid: request.ruid, from: 1, lastIndex: 4, addresses: [stored.address, elsewhere.address]),
                                           now: 1) { $0 == stored.address ? .stored : .inFlightElsewhere }
        #expect(actions.first == .send(.wantedHashes(WantedHashes(ruid: request.ruid, wanted: [false, false]))))
        let persist = try #require(actions.dropFirst().first?.persisted)
        #expect(persist.chunks.isEmpty)
        #expect(persist.seal == 1...4)
        #expect(persist.requires == [elsewhere.address], "sealed only once the other stream has stored it")
        // The store skipped the seal: the seal alone is tried again, without asking the peer,
        // 100, 200, 400 and 800 ms later; then the range is asked again.
        var now: UInt64 = 2
        var id = persist.id
        for wait in [100, 200, 400, 800] as [UInt64] {
            #expect(client.batchCommitted(id: id, sealed: false, now: now) == [])
            #expect(client.intervals.isEmpty)
            #expect(client.nextDeadline == now + wait)
            #expect(client.tick(now: now + wait - 1) == [])
            now += wait
            let again = client.tick(now: now)
            let reseal = try #require(again.first?.persisted, "a re-seal: \(again)")
            #expect(again.count == 1 && reseal.chunks.isEmpty && reseal.seal == 1...4 && reseal.requires == [elsewhere.address])
            id = reseal.id
        }
        #expect(client.batchCommitted(id: id, sealed: false, now: now) == [])
        let retry = client.tick(now: now + 10_000)
        guard case .getRange(let again)? = retry.first?.sentMessage else { Issue.record("no retry: \(retry)"); return }
        #expect(again.from == 1)
    }

    @Test func aSealTriedAgainAloneSealsOnceTheRequiredChunkIsStored() throws {
        var f = Fixtures()
        var (client, request) = Self.started(end: 4)
        let elsewhere = f.chunk()
        let actions = client.offerReceived(OfferedHashes(ruid: request.ruid, from: 1, lastIndex: 4, addresses: [elsewhere.address]),
                                           now: 1) { _ in .inFlightElsewhere }
        let persist = try #require(actions.dropFirst().first?.persisted)
        #expect(client.batchCommitted(id: persist.id, sealed: false, now: 2) == [])
        let reseal = try #require(client.tick(now: 102).first?.persisted)
        #expect(client.batchCommitted(id: reseal.id, sealed: true, now: 103) == [.completed], "nothing left of the history")
        #expect(client.intervals == IntervalSet([1...4]))
    }

    @Test func aCompletedHistorySaysSo() {
        var client = SyncStreamClient(bin: 0, mode: .history(end: 5), intervals: IntervalSet([1...5]), slot: 0)
        #expect(client.start(now: 0) == [.completed])
        var empty = SyncStreamClient(bin: 0, mode: .history(end: 0), intervals: IntervalSet(), slot: 0)
        #expect(empty.start(now: 0) == [.completed])
    }

    enum Bad: String, CaseIterable {
        case wrongRUID, wrongStart, pastEnd, tooMany, moreAddressesThanIDs, historyEndsBeforeStart
    }

    @Test(arguments: Bad.allCases)
    func malformedOffersAreFaultsThatDropThePeer(_ bad: Bad) {
        var f = Fixtures()
        var (client, request) = Self.started(end: 100)
        let a = f.chunks(3).map(\.address)
        let offer: OfferedHashes
        switch bad {
        case .wrongRUID: offer = OfferedHashes(ruid: request.ruid + 1, from: 1, lastIndex: 3, addresses: a)
        case .wrongStart: offer = OfferedHashes(ruid: request.ruid, from: 2, lastIndex: 3, addresses: a)
        case .pastEnd: offer = OfferedHashes(ruid: request.ruid, from: 1, lastIndex: 101, addresses: a)
        case .tooMany: offer = OfferedHashes(ruid: request.ruid, from: 1, lastIndex: 100, addresses: (0..<129).map { _ in f.chunk().address })
        case .moreAddressesThanIDs: offer = OfferedHashes(ruid: request.ruid, from: 1, lastIndex: 2, addresses: a)
        case .historyEndsBeforeStart: offer = OfferedHashes(ruid: request.ruid, from: 1, lastIndex: 0, addresses: [])
        }
        let actions = client.offerReceived(offer, now: 1) { _ in .claimed }
        let fault = actions.compactMap(\.fault).first
        #expect(fault != nil, "\(bad)")
        #expect(fault?.dropsPeer == true)
        #expect(!actions.contains { $0.persisted != nil }, "nothing is sealed on a bad offer")
    }

    @Test func anUnsolicitedChunkIsAFaultAndNothingIsSealed() throws {
        var f = Fixtures()
        var (client, request) = Self.started(end: 10)
        let wanted = f.chunk(), stranger = f.chunk()
        _ = client.offerReceived(OfferedHashes(ruid: request.ruid, from: 1, lastIndex: 10, addresses: [wanted.address]), now: 1) { _ in .claimed }
        let actions = client.chunksDelivered(ChunkDelivery(ruid: request.ruid, chunks: [DeliveredChunk(stranger)]), now: 2)
        #expect(actions.first == .fault(.unsolicitedChunk(stranger.address)))
        #expect(actions.contains(.release([wanted.address])), "the claim is given up so another peer can deliver it")
        #expect(!actions.contains { $0.persisted != nil })
        #expect(client.intervals.isEmpty)
    }

    /// A frame whose first chunk was wanted and whose second was not: the fault gives up every
    /// claim of the batch, the first chunk's too (it is not stored: nothing of the frame is kept).
    @Test func aFaultMidFrameReleasesTheFramesEarlierChunks() {
        var f = Fixtures()
        for bad in [0, 1] {
            var (client, request) = Self.started(end: 10)
            let a = f.chunk(), b = f.chunk(), stranger = f.chunk()
            _ = client.offerReceived(OfferedHashes(ruid: request.ruid, from: 1, lastIndex: 10, addresses: [a.address, b.address]), now: 1) { _ in .claimed }
            let second = bad == 0 ? DeliveredChunk(stranger) : DeliveredChunk(span: 1, payload: [])
            let actions = client.chunksDelivered(ChunkDelivery(ruid: request.ruid, chunks: [DeliveredChunk(a), second]), now: 2)
            #expect(actions.first?.fault != nil)
            let released = actions.flatMap { action -> [ChunkAddress] in
                if case .release(let addresses) = action { return addresses }
                return []
            }
            #expect(Set(released) == [a.address, b.address], "fault \(bad): \(actions)")
            #expect(!actions.contains { $0.persisted != nil })
            #expect(client.nextDeadline != nil, "the stream backs off and asks again")
        }
    }

    @Test func aChunkDeliveredTwiceIsUnsolicitedTheSecondTime() {
        var f = Fixtures()
        var (client, request) = Self.started(end: 10)
        let a = f.chunk(), b = f.chunk()
        _ = client.offerReceived(OfferedHashes(ruid: request.ruid, from: 1, lastIndex: 10, addresses: [a.address, b.address]), now: 1) { _ in .claimed }
        _ = client.chunksDelivered(ChunkDelivery(ruid: request.ruid, chunks: [DeliveredChunk(a)]), now: 2)
        let again = client.chunksDelivered(ChunkDelivery(ruid: request.ruid, chunks: [DeliveredChunk(a)]), now: 3)
        #expect(again.first == .fault(.unsolicitedChunk(a.address)))
    }

    @Test func anInvalidChunkIsAFault() {
        var f = Fixtures()
        var (client, request) = Self.started(end: 10)
        _ = client.offerReceived(OfferedHashes(ruid: request.ruid, from: 1, lastIndex: 10, addresses: [f.chunk().address]), now: 1) { _ in .claimed }
        let actions = client.chunksDelivered(ChunkDelivery(ruid: request.ruid, chunks: [DeliveredChunk(span: 1, payload: [])]), now: 2)
        guard case .fault(.invalidChunk)? = actions.first else { Issue.record("\(actions)"); return }
    }

    @Test func messagesOutOfOrderAreFaults() {
        var f = Fixtures()
        var (client, request) = Self.started(end: 10)
        // Chunks before any offer.
        #expect(client.chunksDelivered(ChunkDelivery(ruid: request.ruid, chunks: [DeliveredChunk(f.chunk())]), now: 1)
                == [.fault(.unknownRequest(request.ruid))])
        // An error for a request never made.
        #expect(client.streamErrorReceived(StreamError(ruid: 999, code: .overloaded, message: ""), now: 1)
                == [.fault(.unknownRequest(999))])
        // A second offer for the same request after the first was answered.
        let offer = OfferedHashes(ruid: request.ruid, from: 1, lastIndex: 10, addresses: [f.chunk().address])
        _ = client.offerReceived(offer, now: 2) { _ in .claimed }
        #expect(client.offerReceived(offer, now: 3) { _ in .claimed } == [.fault(.unknownRequest(request.ruid))])
    }

    @Test func aBatchThatTimesOutPenalisesAndAsksAgain() throws {
        var f = Fixtures()
        var (client, request) = Self.started(end: 10)
        let a = f.chunk()
        _ = client.offerReceived(OfferedHashes(ruid: request.ruid, from: 1, lastIndex: 10, addresses: [a.address]), now: 0) { _ in .claimed }
        #expect(client.tick(now: 9_999) == [])
        let actions = client.tick(now: 10_000)
        #expect(actions.first == .fault(.batchTimeout(request.ruid)))
        #expect(actions.first?.fault?.dropsPeer == false, "a slow peer is penalised, not dropped")
        #expect(actions.contains(.release([a.address])))
        let retry = client.tick(now: 20_000)
        guard case .getRange(let again)? = retry.first?.sentMessage else { Issue.record("\(retry)"); return }
        #expect(again.from == 1)
        #expect(again.ruid != request.ruid)
    }

    @Test func liveFollowsTheCursorAndAnEmptyOfferAsksAgain() throws {
        var f = Fixtures()
        var client = SyncStreamClient(bin: 2, mode: .live(from: 11), intervals: IntervalSet(), slot: 2)
        guard case .getRange(let r1)? = client.start(now: 0).first?.sentMessage else { Issue.record("no request"); return }
        #expect(r1.from == 11 && r1.to == nil)
        // Idle: the server answers with nothing after its timeout.
        let again = client.offerReceived(OfferedHashes(ruid: r1.ruid, from: 11, lastIndex: 10, addresses: []), now: 2000) { _ in .claimed }
        guard case .getRange(let r2)? = again.first?.sentMessage else { Issue.record("\(again)"); return }
        #expect(r2.from == 11)
        let c = f.chunk()
        _ = client.offerReceived(OfferedHashes(ruid: r2.ruid, from: 11, lastIndex: 12, addresses: [c.address]), now: 2001) { _ in .claimed }
        let persist = try #require(client.chunksDelivered(ChunkDelivery(ruid: r2.ruid, chunks: [DeliveredChunk(c)]), now: 2002).first?.persisted)
        #expect(persist.seal == 11...12)
        let next = client.batchCommitted(id: persist.id, sealed: true, now: 2003)
        #expect(client.liveFrom == 13)
        guard case .getRange(let r3)? = next.last?.sentMessage else { Issue.record("\(next)"); return }
        #expect(r3.from == 13)
    }

    @Test func cancellingReleasesEveryClaim() {
        var f = Fixtures()
        var (client, request) = Self.started(end: 10)
        let a = f.chunk(), b = f.chunk()
        _ = client.offerReceived(OfferedHashes(ruid: request.ruid, from: 1, lastIndex: 10, addresses: [a.address, b.address]), now: 0) { _ in .claimed }
        _ = client.chunksDelivered(ChunkDelivery(ruid: request.ruid, chunks: [DeliveredChunk(a)]), now: 1)
        let actions = client.cancel()
        #expect(actions == [.release([b.address, a.address])])
        #expect(client.state == .done)
    }
}
