import ShoalCore
import Testing

extension DownloadAction {
    var presenceQuery: PresenceQuery? { if case .askPresence(let q) = self { return q }; return nil }
    var cancelledPresence: PresenceQuery? { if case .cancelPresence(let q) = self { return q }; return nil }
    var fault: (OverlayAddress, PeerFault)? { if case .fault(let p, let f) = self { return (p, f) }; return nil }
}

extension DownloaderHarness {
    /// The peer answers the query: it has the addresses `has` says it has.
    @discardableResult
    mutating func answer(_ query: PresenceQuery, has: (ChunkAddress) -> Bool) -> [DownloadAction] {
        let bits = Presence(ruid: 0, present: query.addresses.map(has)).bitvector
        return record(machine.presence(id: query.id, from: query.peer, bitvector: bits, now: now))
    }

    mutating func takeQueries() -> [PresenceQuery] { take().compactMap(\.presenceQuery) }
}

/// Presence queries: a chunk nobody can be asked for is asked about, closest connected peer
/// first; a yes makes the peer a hint and it gets the request; queries are bounded; silence,
/// malformed answers and false claims cost the peer.
struct DownloaderPresenceTests {
    /// Only hints are asked: presence must find the holders.
    static var hintsOnly: DownloadLimits {
        var limits = DownloadLimits()
        limits.closestPeersPerChunk = 0
        return limits
    }

    @Test func aPeerThatSaysItHasAChunkIsAskedForIt() throws {
        var h = DownloaderHarness(limits: Self.hintsOnly)
        let holder = peer(0)
        h.connect(holder)
        let chunks = (0..<5).map(chunk)
        try h.start(download(0), chunks)
        let queries = h.takeQueries()
        #expect(queries.map(\.peer) == [holder] && Set(queries[0].addresses) == Set(chunks))
        #expect(h.machine.requestsInFlight.isEmpty, "nobody to ask before the answer")

        // It has all but the last.
        let requests = h.answer(queries[0]) { $0 != chunks[4] }.compactMap(\.request)
        #expect(Set(requests.map(\.address)) == Set(chunks.prefix(4)) && requests.allSatisfy { $0.peer == holder })
        #expect(h.machine.fetchEntry(chunks[0])?.hints == [holder])
        for r in requests {
            h.deliver(r.address, from: holder)
            h.store(r.address)
        }
        // The last waits; a peer that connects is asked about it, and has it.
        let other = peer(1)
        h.take()
        h.connect(other)
        let next = h.takeQueries()
        #expect(next.map(\.peer) == [other] && next.first?.addresses == [chunks[4]])
        let last = h.answer(next[0]) { _ in true }.compactMap(\.request)
        #expect(last.map(\.peer) == [other])
        h.deliver(chunks[4], from: other)
        h.store(chunks[4])
        #expect(h.take().compactMap(\.finished).first?.1 == .completed)
        #expect(h.machine.counters.presenceQueries == 2 && h.machine.counters.presenceAnswers == 2)
    }

    @Test func theClosestConnectedPeerIsAskedFirstThenTheNext() throws {
        var h = DownloaderHarness(limits: Self.hintsOnly)
        let peers = (0..<10).map(peer)
        for p in peers { h.connect(p) }
        let x = chunk(7)
        try h.start(download(0), [x])
        let byDistance = peers.sorted { a, b in
            (a.w0 ^ x.w0, a.w1 ^ x.w1, a.w2 ^ x.w2, a.w3 ^ x.w3) < (b.w0 ^ x.w0, b.w1 ^ x.w1, b.w2 ^ x.w2, b.w3 ^ x.w3)
        }
        var asked: [OverlayAddress] = []
        for _ in 0..<3 {
            let queries = h.takeQueries()
            #expect(queries.count == 1 && queries.first?.addresses == [x])
            guard let q = queries.first else { return }
            asked.append(q.peer)
            h.answer(q) { _ in false }
        }
        #expect(asked == Array(byDistance.prefix(3)))
    }

    @Test func queriesStayWithinTheirLimitsOnePerPeer() throws {
        var limits = Self.hintsOnly
        limits.presenceQueriesInFlightMax = 3
        limits.presenceBatchMax = 4
        var h = DownloaderHarness(limits: limits)
        for p in (0..<6).map(peer) { h.connect(p) }
        try h.start(download(0), (0..<40).map(chunk))
        let queries = h.takeQueries()
        #expect(queries.count == 3 && Set(queries.map(\.peer)).count == 3)
        #expect(queries.allSatisfy { (1...4).contains($0.addresses.count) })
        #expect(h.machine.presenceInFlight.count == 3)
        // An answer frees its slot, and the slot is used again at once.
        h.answer(queries[0]) { _ in false }
        #expect(h.takeQueries().count == 1 && h.machine.presenceInFlight.count == 3)

        // Two peers, eight slots: one query each.
        var two = DownloaderHarness(limits: Self.hintsOnly)
        two.connect(peer(0), peer(1))
        try two.start(download(0), (0..<600).map(chunk))
        let each = two.takeQueries()
        #expect(each.count == 2 && Set(each.map(\.peer)).count == 2)
        #expect(each.allSatisfy { $0.addresses.count <= ProtocolLimits.presenceBatchMax })
    }

    /// Each row: the answer to a query of 5 addresses, which no honest peer sends.
    @Test(arguments: [
        ([], "too short"),
        ([0x1F, 0x00], "too long"),
        ([0x3F], "a bit set past the count"),
        ([0xE0], "only bits past the count"),
    ] as [([UInt8], String)])
    func aMalformedPresenceAnswerIsTheSendersFault(bitvector: [UInt8], _ why: String) throws {
        var h = DownloaderHarness(limits: Self.hintsOnly)
        let p = peer(0)
        h.connect(p)
        let chunks = (0..<5).map(chunk)
        try h.start(download(0), chunks)
        let query = try #require(h.takeQueries().first)
        let after = h.record(h.machine.presence(id: query.id, from: p, bitvector: bitvector, now: h.now))
        guard case .malformedOffer? = after.compactMap(\.fault).first(where: { $0.0 == p })?.1 else {
            Issue.record("\(why): no fault in \(after)")
            return
        }
        #expect(after.compactMap(\.request).isEmpty, "\(why): nothing it said is believed")
        #expect(after.compactMap(\.presenceQuery).isEmpty, "\(why): it is not asked again")
        #expect(h.machine.presenceInFlight.isEmpty && h.machine.counters.presenceMalformed == 1)
        // Its offers are not believed either, for a while.
        h.record(h.machine.hinted(chunks, by: p, now: h.now))
        #expect(h.machine.fetchEntry(chunks[0])?.hints == [])
    }

    @Test func anUnansweredQueryTimesOutAndThePeerBacksOffAsForARequest() throws {
        var h = DownloaderHarness(limits: Self.hintsOnly)
        let p = peer(0)
        h.connect(p)
        try h.start(download(0), [chunk(0)])
        let query = try #require(h.takeQueries().first)
        #expect(query.deadlineMs == 10_000 && h.machine.nextDeadline == 10_000)
        h.advance(to: 10_000)
        #expect(h.take().compactMap(\.cancelledPresence) == [query])
        #expect(h.machine.backoff(of: p)?.untilMs == 30_000 && h.machine.counters.presenceTimeouts == 1)
        // A late answer is ignored.
        h.answer(query) { _ in true }
        #expect(h.machine.requestsInFlight.isEmpty && h.machine.fetchEntry(chunk(0))?.hints == [])
        // After its back-off it is asked again.
        h.take()
        h.advance(to: 30_000)
        #expect(h.takeQueries().map(\.peer) == [p])
    }

    @Test func aDisconnectVoidsAQueryWithoutBackingThePeerOff() throws {
        var h = DownloaderHarness(limits: Self.hintsOnly)
        let (p, q) = (peer(0), peer(1))
        h.connect(p)
        try h.start(download(0), [chunk(0)])
        let first = try #require(h.takeQueries().first)
        h.record(h.machine.peerDisconnected(p, now: h.now))
        #expect(h.machine.presenceInFlight.isEmpty && h.machine.backoff(of: p) == nil)
        h.connect(q)
        #expect(h.takeQueries().map(\.peer) == [q])
        h.answer(first) { _ in true }
        #expect(h.machine.counters.lateAnswers == 1)
    }

    /// A peer that said it has chunks and then answers not-found loses each hint; after
    /// `falseClaimsMax` such answers in a row its claims (presence and offers) are ignored and
    /// it is asked no presence for `distrustHoldMs`. A delivery in between starts the count again.
    @Test func falseClaimsLoseTheHintThenThePeersCredit() throws {
        var limits = Self.hintsOnly
        limits.falseClaimsMax = 2
        var h = DownloaderHarness(limits: limits)
        let liar = peer(0)
        let chunks = (0..<4).map(chunk)
        let other = chunk(10)  // of another download: delivering it does not make the liar serve `chunks`' download
        try h.start(download(0), chunks)
        try h.start(download(1), [other])
        h.connect(liar)
        let query = try #require(h.takeQueries().first)
        let requests = h.answer(query) { _ in true }.compactMap(\.request)
        #expect(requests.count == 5)

        h.notFound(chunks[0], from: liar)
        #expect(h.machine.fetchEntry(chunks[0])?.hints == [], "a false claim loses its hint")
        h.deliver(other, from: liar)
        h.notFound(chunks[1], from: liar)
        #expect(h.machine.counters.falseClaims == 2 && h.machine.counters.peersDistrusted == 0, "a delivery in between")
        #expect(h.machine.fetchEntry(chunks[3])?.hints == [liar])
        h.notFound(chunks[2], from: liar)
        #expect(h.machine.counters.peersDistrusted == 1)
        #expect(h.machine.fetchEntry(chunks[3])?.hints == [], "its other claims go too")

        // Distrusted: its offers and presence bits are not hints, and it is asked nothing.
        h.take()
        h.record(h.machine.hinted(chunks, by: liar, now: h.now))
        #expect(chunks.allSatisfy { h.machine.fetchEntry($0).map { $0.hints.isEmpty } ?? true })
        #expect(h.take().compactMap(\.presenceQuery).isEmpty)
        // Another peer is asked about the chunks still wanted, and the liar is not.
        h.connect(peer(1))
        let asked = h.takeQueries()
        #expect(!asked.isEmpty && asked.allSatisfy { $0.peer == peer(1) })
    }

    @Test func offersAreHintsForChunksOfTheFetchSetOnly() throws {
        var h = DownloaderHarness(limits: Self.hintsOnly)
        let p = peer(0)
        try h.start(download(0), [chunk(0), chunk(1)])
        h.record(h.machine.hinted([chunk(1), chunk(5)], by: p, now: h.now))
        #expect(h.machine.fetchEntry(chunk(1))?.hints == [p] && h.machine.fetchEntry(chunk(0))?.hints == [])
        #expect(h.machine.fetchEntry(chunk(5)) == nil)
        // Connected, the peer that offered it is asked for it.
        h.take()
        h.connect(p)
        #expect(h.take().compactMap(\.request).map(\.address) == [chunk(1)])
    }
}
