import ShoalCore
import Testing

struct DownloaderTests {
    // MARK: Limits

    @Test func requestsStayWithinTheTotalAndPerPeerLimits() throws {
        var h = DownloaderHarness()
        let peers = (0..<10).map(peer)
        for p in peers { h.connect(p) }
        let chunks = (0..<300).map(chunk)
        try h.start(download(0), chunks, hints: peers)
        var outstanding = h.takeRequests()
        #expect(outstanding.count == 64)
        var storedCount = 0
        while !outstanding.isEmpty {
            #expect(h.machine.requestsInFlight.count == min(64, chunks.count - storedCount))
            #expect(h.inFlightPerPeer.values.allSatisfy { $0 <= 8 })
            let r = outstanding.removeFirst()
            h.deliver(r.address, from: r.peer)
            h.store(r.address)
            storedCount += 1
            outstanding += h.takeRequests()
        }
        #expect(storedCount == chunks.count)
        #expect(h.machine.downloadIDs.isEmpty && h.machine.fetchSetCount == 0)
    }

    @Test func threePeersGetEightRequestsEachAndNoMore() throws {
        var h = DownloaderHarness()
        h.connect(peer(0), peer(1), peer(2))
        try h.start(download(0), (0..<100).map(chunk), hints: [peer(0), peer(1), peer(2)])
        let requests = h.takeRequests()
        #expect(requests.count == 24)
        #expect(h.inFlightPerPeer == [peer(0): 8, peer(1): 8, peer(2): 8])
        // A slot that frees is taken again at once, by the same peer (the only one with room).
        h.deliver(requests[0].address, from: requests[0].peer)
        h.store(requests[0].address)
        #expect(h.takeRequests().map(\.peer) == [requests[0].peer])
    }

    /// An answer keeps its request's slot until the store commits it: a peer has at most 8
    /// chunks asked or delivered and not yet stored, so a crash loses at most 8 of each peer's.
    @Test func anAnswerKeepsItsPeersSlotUntilTheStoreCommitsIt() throws {
        var h = DownloaderHarness()
        let p = peer(0)
        h.connect(p)
        try h.start(download(0), (0..<20).map(chunk), hints: [p])
        let first = h.takeRequests()
        #expect(first.count == 8)
        for r in first { h.deliver(r.address, from: p) }
        #expect(h.takeRequests().isEmpty, "eight answers being stored: no slot to spare")
        h.store(first[0].address)
        #expect(h.takeRequests().count == 1, "a commit frees one")
        // A store that failed frees its slot too; the chunk is asked for again.
        h.record(h.machine.storeFailed(first[1].address, now: h.now))
        #expect(h.takeRequests().count == 1)
        // So does a download cancelled while its answers are being stored.
        h.cancel(download(0))
        try h.start(download(1), (20..<40).map(chunk), hints: [p])
        #expect(h.takeRequests().count == 8)
    }

    @Test func dialsStayWithinTheirLimitAndAFailedDialBacksOff() throws {
        var limits = DownloadLimits()
        limits.dialsInFlightMax = 3
        var h = DownloaderHarness(limits: limits)
        for i in 0..<10 { try h.start(download(i), [chunk(i)], hints: [peer(i)]) }
        let dials = h.take().compactMap(\.dialled)
        #expect(dials == [peer(0), peer(1), peer(2)])
        // One dial fails: the next hinted peer is dialled, the failed one is not dialled again
        // before its back-off (20 s) ends.
        h.now = 1_000
        h.record(h.machine.dialFailed(peer(0), now: h.now))
        #expect(h.take().compactMap(\.dialled) == [peer(3)])
        #expect(h.machine.backoff(of: peer(0))?.untilMs == 21_000)
        h.record(h.machine.dialFailed(peer(1), now: h.now))
        h.record(h.machine.dialFailed(peer(2), now: h.now))
        h.record(h.machine.dialFailed(peer(3), now: h.now))
        #expect(h.take().compactMap(\.dialled) == [peer(4), peer(5), peer(6)])
        // Dials that nobody reports time out after 10 s and free their slots.
        h.advance(to: 11_000)
        #expect(h.take().compactMap(\.dialled) == [peer(7), peer(8), peer(9)])
        h.advance(to: 20_999)
        #expect(h.take().compactMap(\.dialled).isEmpty)
        // At 21 s those dials time out, and the first peers' back-offs end: they are dialled again.
        h.advance(to: 21_000)
        #expect(h.take().compactMap(\.dialled) == [peer(0), peer(1), peer(2)])
        #expect(h.machine.backoff(of: peer(7))?.untilMs == 41_000)
    }

    // MARK: Retries

    /// One peer that never has the chunk: the gaps between its requests, how many there were,
    /// how the download ended, and when.
    private func retryGaps(seed: UInt64, limits: DownloadLimits = DownloadLimits()) throws
        -> (gaps: [UInt64], requests: Int, outcome: [DownloadOutcome], endedAt: UInt64)
    {
        var h = DownloaderHarness(limits: limits, seed: seed)
        let p = peer(0)
        h.connect(p)
        try h.start(download(0), [chunk(0)], hints: [p])
        var gaps: [UInt64] = []
        var requests = 0
        var answeredAt: UInt64?
        while h.machine.progress(of: download(0)) != nil {
            let sent = h.takeRequests()
            if let r = sent.first {
                #expect(sent.count == 1 && r.peer == p)
                requests += 1
                if let answeredAt { gaps.append(h.now - answeredAt) }
                h.now += 7
                h.notFound(r.address, from: p)
                answeredAt = h.now
            } else {
                try h.tickAtNextDeadline()
            }
        }
        let outcome = h.take().compactMap(\.finished).map(\.1)
        #expect(h.machine.fetchSetCount == 0 && h.machine.nextDeadline == nil)
        return (gaps, requests, outcome, h.now)
    }

    @Test func retriesBackOffExponentiallyWithJitterAndEndWithAnError() throws {
        let (gaps, requests, outcome, endedAt) = try retryGaps(seed: 1)
        #expect(requests == 8)
        #expect(gaps.count == 7)
        for (n, gap) in gaps.enumerated() {
            let base = UInt64(250) << UInt64(n)
            #expect(gap >= base - base / 4 && gap <= base + base / 4, "retry \(n + 1) after \(gap) ms, base \(base)")
        }
        // The jitter is drawn from the seed: another seed waits differently, the same seed the same.
        #expect(try retryGaps(seed: 2).gaps != gaps)
        #expect(try retryGaps(seed: 1).gaps == gaps)
        // With its only peer's budget spent, the chunk waits `providerWaitMaxMs` for another,
        // then the download fails, naming the chunk and why.
        #expect(outcome == [.failed(missing: [MissingChunk(address: chunk(0), reason: .notFound(peers: 1))], missingCount: 1)])
        let waited: UInt64 = gaps.reduce(0, +)
        #expect(endedAt == 8 * 7 + waited + 120_000)
    }

    @Test func retryDelaysStopGrowingAtTheirCap() throws {
        var limits = DownloadLimits()
        limits.retryDelayMinMs = 20_000
        let (gaps, requests, _, _) = try retryGaps(seed: 3, limits: limits)
        #expect(requests == 8)
        #expect(gaps.count == 7)
        #expect(gaps.allSatisfy { $0 <= 60_000 })
        #expect(gaps[0] >= 15_000 && gaps[0] <= 25_000)
        #expect(gaps[2...].allSatisfy { $0 >= 45_000 }, "\(gaps)")
    }

    /// Another chunk than the one asked for: the peer's fault, and the chunk is asked of the
    /// next peer as after any failed request.
    @Test func theWrongChunkIsTheSendersFaultAndAFailedAttempt() throws {
        var h = DownloaderHarness()
        h.connect(peer(0), peer(1))
        try h.start(download(0), [chunk(0)], hints: [peer(0), peer(1)])
        let first = try #require(h.takeRequests().first)
        h.now += 1
        let actions = h.record(h.machine.wrongChunk(first.address, from: first.peer, got: chunk(9), now: h.now))
        guard case .fault(let p, .invalidChunk)? = actions.first else {
            Issue.record("\(actions)")
            return
        }
        #expect(p == first.peer)
        #expect(!actions.contains { $0.storing != nil }, "nothing is stored")
        #expect(h.machine.counters.requestsFailed == 1)
        let next = try #require(actions.compactMap(\.request).first)
        #expect(next.address == first.address && next.peer != first.peer)
    }

    @Test func aChunkFailsAtOnceWhenItsBudgetIsSpentAcrossPeers() throws {
        var h = DownloaderHarness()
        let peers = (0..<5).map(peer)
        for p in peers { h.connect(p) }
        try h.start(download(0), [chunk(0)], hints: peers)
        var requests = 0
        var perPeer: [OverlayAddress: Int] = [:]
        while h.machine.progress(of: download(0)) != nil {
            if let r = h.takeRequests().first {
                requests += 1
                perPeer[r.peer, default: 0] += 1
                h.now += 1
                h.record(h.machine.requestFailed(r.address, peer: r.peer, now: h.now))
            } else {
                try h.tickAtNextDeadline()
            }
        }
        #expect(requests == 32)
        #expect(perPeer.values.allSatisfy { $0 <= 8 })
        let failedAt = h.now
        let outcome = h.take().compactMap(\.finished)
        #expect(outcome.map(\.1) == [.failed(missing: [MissingChunk(address: chunk(0), reason: .attemptsExhausted(attempts: 32))], missingCount: 1)])
        #expect(h.machine.nextDeadline == nil)
        #expect(failedAt < 120_000, "the chunk failed when its budget was spent, not after waiting for a provider")
    }

    // MARK: Intents

    @Test func downloadsShareAFetchAndCancelIndependently() throws {
        var h = DownloaderHarness()
        let p = peer(0)
        h.connect(p)
        let (x, a1, b1) = (chunk(0), chunk(1), chunk(2))
        try h.start(download(0), [x, a1])
        try h.start(download(1), [x, b1])
        let requests = h.takeRequests()
        #expect(requests.map(\.address) == [x, a1, b1], "one request for the shared chunk")
        #expect(h.machine.fetchEntry(x)?.groups == [download(0), download(1)])

        let cancelA = h.cancel(download(0))
        #expect(cancelA.compactMap(\.cancelled).map(\.address) == [a1], "the shared chunk is still asked for")
        #expect(cancelA.compactMap(\.removedFetch) == [a1])
        #expect(cancelA.compactMap(\.savedFetch).map(\.1.groups) == [[download(1)]])
        #expect(cancelA.compactMap(\.finished).map(\.1) == [.cancelled])
        #expect(cancelA.contains(.removeDownload(download(0))))

        h.take()
        #expect(h.deliver(x, from: p).compactMap(\.storing) == [x])
        #expect(h.store(x).compactMap(\.progress).map(\.1) == [DownloadProgress(done: 1, failed: 0, total: 2)])
        h.deliver(b1, from: p)
        let last = h.store(b1)
        #expect(last.compactMap(\.finished).map(\.0) == [download(1)])
        #expect(last.compactMap(\.finished).map(\.1) == [.completed])
        #expect(last.contains(.saveDownload(download(1), DownloadEntry(policy: .eagerPin, state: .done, chunksDone: 2, chunksTotal: 2, createdMs: 0))))

        // With its last download cancelled, a chunk's request is cancelled too.
        let y = chunk(3)
        try h.start(download(2), [y])
        try h.start(download(3), [y])
        let request = try #require(h.takeRequests().first)
        #expect(h.cancel(download(2)).compactMap(\.cancelled).isEmpty)
        let cancelD = h.cancel(download(3))
        #expect(cancelD.compactMap(\.cancelled) == [request])
        #expect(cancelD.compactMap(\.removedFetch) == [y])
        #expect(h.machine.fetchSetCount == 0 && h.machine.requestsInFlight.isEmpty)
        // A late delivery of the cancelled chunk is not stored.
        #expect(h.deliver(y, from: p).compactMap(\.storing).isEmpty)
    }

    @Test func aChunkAnotherDownloadStillWantsIsNotDroppedWhenOneFails() throws {
        var h = DownloaderHarness()
        let p = peer(0)
        h.connect(p)
        let (x, a1) = (chunk(0), chunk(1))
        try h.start(download(0), [x])
        try h.start(download(1), [x, a1])
        #expect(h.takeRequests().map(\.address) == [x, a1])
        h.deliver(a1, from: p)  // being stored: the second download stays live
        // `x` is not to be found anywhere: both downloads count it failed. The first ends
        // with that error; the second goes on with its other chunk.
        while h.machine.progress(of: download(0)) != nil {
            let requests = h.takeRequests()
            for r in requests { h.notFound(r.address, from: p) }
            if requests.isEmpty { try h.tickAtNextDeadline() }
        }
        let failedX = MissingChunk(address: x, reason: .notFound(peers: 1))
        #expect(h.actions.contains(.chunkFailed(download(0), failedX)) && h.actions.contains(.chunkFailed(download(1), failedX)))
        #expect(h.actions.compactMap(\.finished).map(\.1) == [.failed(missing: [failedX], missingCount: 1)])
        #expect(h.machine.status(of: download(1))?.failed == [failedX])
        #expect(h.machine.missing(of: download(1)) == [x, a1])
        // A new download of `x` gives it a fresh budget, for itself and for the one that waits.
        h.take()
        try h.start(download(2), [x])
        #expect(h.takeRequests().map(\.address) == [x])
        #expect(h.machine.progress(of: download(1)) == DownloadProgress(done: 0, failed: 0, total: 2))
        h.deliver(x, from: p)
        h.store(x)
        h.store(a1)
        #expect(h.take().compactMap(\.finished).map(\.0) == [download(2), download(1)])
        #expect(h.machine.downloadIDs.isEmpty && h.machine.fetchSetCount == 0)
    }

    // MARK: Choosing peers

    @Test func aDownloadPrefersThePeerThatServedIt() throws {
        var h = DownloaderHarness()
        let (p, q) = (peer(0), peer(1))
        h.connect(p, q)
        let chunks = (0..<10).map(chunk)
        try h.start(download(0), chunks, hints: [p, q], delayMs: 1_000)
        #expect(h.takeRequests().isEmpty, "nothing is asked for during the initial delay")
        // Before the delay ends, `q` delivers a chunk of the download unasked (a late answer,
        // or pushed): it is preferred for the rest, up to its request limit.
        h.now = 10
        h.deliver(chunks[0], from: q)
        h.store(chunks[0])
        h.take()
        h.advance(to: 1_000)
        let requests = h.takeRequests()
        #expect(requests.map(\.peer) == Array(repeating: q, count: 8) + [p])
        // Another download, which `q` has not served, goes to the least busy peer.
        h.deliver(requests[0].address, from: q)
        h.store(requests[0].address)
        h.take()
        try h.start(download(1), [chunk(100), chunk(101)], hints: [q, p])
        #expect(h.takeRequests().map(\.peer) == [p, p])
    }

    @Test func aNewlyConnectedHintedPeerGetsWorkAtOnce() throws {
        var h = DownloaderHarness()
        let (a, hinted) = (peer(0), peer(1))
        h.connect(a)
        try h.start(download(0), (0..<20).map(chunk), hints: [hinted])
        let first = h.take()
        // The connected peer, closest to everything, takes what it can; the hinted one is dialled.
        #expect(first.compactMap(\.request).map(\.peer) == Array(repeating: a, count: 8))
        #expect(first.compactMap(\.dialled) == [hinted])
        h.now = 500
        let connected = h.record(h.machine.peerConnected(hinted, now: h.now))
        #expect(connected.compactMap(\.request).map(\.peer) == Array(repeating: hinted, count: 8))
    }

    @Test func chunksWithNobodyToAskWaitForAHintedPeer() throws {
        var h = DownloaderHarness()
        let hinted = peer(1)
        try h.start(download(0), (0..<5).map(chunk), hints: [hinted])
        #expect(h.take().compactMap(\.dialled) == [hinted])
        h.now = 2_000
        #expect(h.record(h.machine.peerConnected(hinted, now: h.now)).compactMap(\.request).count == 5)
    }

    @Test func withoutHintsTheClosestConnectedPeerIsAsked() throws {
        var limits = DownloadLimits()
        limits.closestPeersPerChunk = 1
        limits.requestsPerPeerMax = 64
        var h = DownloaderHarness(limits: limits)
        let peers = (0..<50).map(peer)
        for p in peers { h.connect(p) }
        let chunks = (0..<64).map(chunk)
        try h.start(download(0), chunks)
        let requests = h.takeRequests()
        #expect(requests.count == 64)
        for r in requests {
            let closest = peers.min { a, b in
                (a.w0 ^ r.address.w0, a.w1 ^ r.address.w1, a.w2 ^ r.address.w2, a.w3 ^ r.address.w3)
                    < (b.w0 ^ r.address.w0, b.w1 ^ r.address.w1, b.w2 ^ r.address.w2, b.w3 ^ r.address.w3)
            }
            #expect(r.peer == closest)
        }
    }

    @Test func presenceAnswersSteerRequests() throws {
        var limits = DownloadLimits()
        limits.closestPeersPerChunk = 0  // only hints are asked
        var h = DownloaderHarness(limits: limits)
        let (p, q) = (peer(0), peer(1))
        h.connect(p, q)
        let x = chunk(0)
        // Without answers `p` would be asked first (named first, as idle as `q`).
        try h.start(download(0), [x], hints: [p, q], delayMs: 1_000)
        h.record(h.machine.presence(p, addresses: [x], bits: [false], now: h.now))
        h.record(h.machine.presence(q, addresses: [x], bits: [true], now: h.now))
        #expect(h.machine.fetchEntry(x)?.hints == [q, p])
        h.advance(to: 1_000)
        var asked: [(peer: OverlayAddress, at: UInt64)] = []
        while asked.last?.peer != p {
            if let r = h.takeRequests().first {
                asked.append((r.peer, h.now))
                h.notFound(x, from: r.peer)
            } else {
                try h.tickAtNextDeadline()
            }
        }
        // `q` is asked (again after each back-off) until `p`'s answer is `absentRetryMs` old.
        #expect(asked.dropLast().allSatisfy { $0.peer == q } && asked.count > 2)
        #expect(asked.last!.at >= 30_000 && asked[asked.count - 2].at < 30_000)
        // An answer of the wrong length is a fault.
        let fault = h.record(h.machine.presence(p, addresses: [x], bits: [true, false], now: h.now))
        #expect(fault.count == 1)
        if case .fault(let who, _) = fault.first { #expect(who == p) } else { Issue.record("no fault: \(fault)") }
    }

    // MARK: Unresponsive peers

    @Test func anUnresponsivePeerBacksOffInStepsThenIsDropped() throws {
        var h = DownloaderHarness()
        let p = peer(0)
        h.connect(p)
        let chunks = (0..<3).map(chunk)
        try h.start(download(0), chunks, hints: [p])
        try h.start(download(1), [chunk(9)])
        h.record(h.machine.hinted([chunk(9)], by: p, now: h.now))
        #expect(h.machine.fetchEntry(chunks[0])?.hints == [p] && h.machine.fetchEntry(chunk(9))?.hints == [p])
        var sentAt: [UInt64] = []
        var backoffs: [UInt64] = []
        var droppedAt: UInt64?
        var requests = h.takeRequests()
        for _ in 0..<5 {
            #expect(requests.count == 4 && requests.allSatisfy { $0.peer == p })
            sentAt.append(h.now)
            // All four time out together: that is one silence, one step.
            h.advance(to: h.now + 10_000)
            if let (until, dropped) = h.machine.backoff(of: p), !dropped { backoffs.append(until - h.now) }
            let afterTimeouts = h.take()
            if afterTimeouts.contains(.peerDropped(p)) { droppedAt = h.now }
            requests = afterTimeouts.compactMap(\.request)
            while requests.isEmpty && h.machine.backoff(of: p)?.dropped == false {
                try h.tickAtNextDeadline()
                requests = h.takeRequests()
            }
        }
        #expect(requests.isEmpty)
        #expect(sentAt == [0, 30_000, 100_000, 290_000, 900_000])
        #expect(backoffs == [20_000, 60_000, 180_000, 600_000])
        #expect(h.machine.backoff(of: p)?.dropped == true && droppedAt == 910_000)
        #expect(h.machine.counters.peersDropped == 1 && h.machine.counters.peersBackedOff == 4)
        // Dropped: out of every hint, its offers ignored, never asked again.
        #expect(h.machine.fetchEntry(chunks[0])?.hints == [] && h.machine.fetchEntry(chunk(9))?.hints == [])
        h.record(h.machine.hinted([chunk(9)], by: p, now: h.now))
        #expect(h.machine.fetchEntry(chunk(9))?.hints == [])
        while !h.machine.downloadIDs.isEmpty { try h.tickAtNextDeadline() }
        #expect(!h.actions.contains { $0.request != nil })
        let ends = h.take().compactMap(\.finished)
        #expect(ends.map(\.0) == [download(0), download(1)])
        #expect(ends.first?.1 == .failed(missing: chunks.map { MissingChunk(address: $0, reason: .attemptsExhausted(attempts: 5)) }, missingCount: 3))
        // Nobody left to ask since the drop at 910 s: the chunks gave up `providerWaitMaxMs` later.
        #expect(h.now == 910_000 + 120_000)
    }

    @Test func anAnswerEndsAPeersBackOff() throws {
        var h = DownloaderHarness()
        let (p, q) = (peer(0), peer(1))
        h.connect(p)
        try h.start(download(0), [chunk(0), chunk(1)], hints: [p, q])
        h.take()
        h.advance(to: 10_000)
        #expect(h.machine.backoff(of: p)?.untilMs == 30_000)
        h.take()
        // A late answer from `p` shows it is alive: it is asked again at once.
        h.now = 11_000
        h.deliver(chunk(0), from: p)
        #expect(h.machine.backoff(of: p) == nil)
        #expect(h.take().compactMap(\.request).map(\.peer) == [p])
    }

    // MARK: Completion and the store

    @Test func aChunkCompletesOnlyWhenTheStoreCommits() throws {
        var h = DownloaderHarness()
        let p = peer(0)
        h.connect(p)
        let x = chunk(0)
        try h.start(download(0), [x])
        h.take()
        let delivered = h.deliver(x, from: p)
        #expect(delivered == [.storeChunk(x)])
        #expect(h.machine.progress(of: download(0))?.done == 0)
        // The store failed: the chunk is asked for again (one attempt spent).
        h.record(h.machine.storeFailed(x, now: h.now))
        #expect(h.takeRequests().map(\.address) == [x])
        #expect(h.machine.fetchEntry(x)?.attempts == 1)
        h.deliver(x, from: p)
        let stored = h.store(x)
        #expect(stored.compactMap(\.finished).map(\.1) == [.completed])
        // Actions persist first: the record is saved before the handle hears.
        let saveAt = try #require(stored.firstIndex { if case .saveDownload = $0 { true } else { false } })
        let finishedAt = try #require(stored.firstIndex { $0.finished != nil })
        #expect(saveAt < finishedAt)
    }

    @Test func anInitialDelayLetsSyncBringChunksFirst() throws {
        var h = DownloaderHarness()
        let p = peer(0)
        h.connect(p)
        let chunks = (0..<4).map(chunk)
        try h.start(download(0), chunks, delayMs: 5_000)
        #expect(h.machine.nextDeadline == 5_000)
        h.now = 1_000
        // Pull sync stored two of them meanwhile: they are done without a request.
        h.store(chunks[0])
        h.store(chunks[1])
        #expect(h.machine.progress(of: download(0)) == DownloadProgress(done: 2, failed: 0, total: 4))
        h.advance(to: 4_999)
        #expect(h.takeRequests().isEmpty)
        h.advance(to: 5_000)
        #expect(h.takeRequests().map(\.address) == [chunks[2], chunks[3]])
    }

    @Test func chunksAlreadyStoredAreNotFetched() throws {
        var h = DownloaderHarness()
        h.connect(peer(0))
        let chunks = (0..<3).map(chunk)
        let started = try h.start(download(0), chunks, stored: [chunks[1]])
        #expect(started.compactMap(\.request).map(\.address) == [chunks[0], chunks[2]])
        #expect(started.compactMap(\.savedFetch).map(\.0) == [chunks[0], chunks[2]])
        #expect(h.machine.progress(of: download(0)) == DownloadProgress(done: 1, failed: 0, total: 3))
        // Everything stored: the download completes at once.
        let all = try h.start(download(1), [chunks[1]], stored: [chunks[1]])
        #expect(all.compactMap(\.finished).map(\.1) == [.completed])
    }

    @Test func readersGoBeforeEagerDownloads() throws {
        var limits = DownloadLimits()
        limits.requestsInFlightMax = 2
        var h = DownloaderHarness(limits: limits)
        h.connect(peer(0))
        try h.start(download(0), (0..<4).map(chunk), policy: .eagerPin)
        h.take()
        try h.start(download(1), [chunk(10), chunk(11)], policy: .onRead)
        for r in h.machine.requestsInFlight {
            h.deliver(r.address, from: r.peer)
        }
        #expect(h.take().compactMap(\.request).map(\.address) == [chunk(10), chunk(11)])
    }

    // MARK: Budgets

    @Test func budgetsRefuseWhatDoesNotFitAndChangeNothing() throws {
        var limits = DownloadLimits()
        limits.downloadsMax = 2
        limits.chunksPerDownloadMax = 3
        limits.fetchSetMax = 4
        var h = DownloaderHarness(limits: limits)
        #expect(rejection { try h.start(download(0), (0..<4).map(chunk)) } == .tooManyChunks)
        try h.start(download(0), (0..<3).map(chunk))
        #expect(rejection { try h.start(download(0), [chunk(9)]) } == .duplicateDownload)
        #expect(rejection { try h.start(download(1), [chunk(7), chunk(8)]) } == .fetchSetFull)
        // Shared or stored chunks take no room in the fetch set.
        try h.start(download(1), [chunk(0), chunk(1), chunk(8)], stored: [chunk(8)])
        #expect(rejection { try h.start(download(2), [chunk(0)]) } == .tooManyDownloads)
        #expect(rejection { _ = try h.machine.add([chunk(5)], to: download(0), now: h.now) } == .tooManyChunks)
        #expect(h.machine.fetchSetCount == 3)
        #expect(h.machine.progress(of: download(0)) == DownloadProgress(done: 0, failed: 0, total: 3))
    }

    @Test func addingChunksToADownloadExtendsIt() throws {
        var h = DownloaderHarness()
        let p = peer(0)
        h.connect(p)
        try h.start(download(0), [chunk(0)])
        h.take()
        h.record(try h.machine.add([chunk(0), chunk(1), chunk(2)], to: download(0), now: h.now))
        #expect(h.takeRequests().map(\.address) == [chunk(1), chunk(2)])
        #expect(h.machine.progress(of: download(0))?.total == 3)
        #expect(rejection { _ = try h.machine.add([chunk(3)], to: download(5), now: h.now) } == .unknownDownload)
    }

    // MARK: Restart

    /// What the store would hold after the shell carried out the actions: fetch entries,
    /// downloads and chunks, with a chunk's entry removed by the transaction that stores it.
    struct FakeStore {
        var fetch: [ChunkAddress: FetchEntry] = [:]
        var downloads: [DownloadID: DownloadEntry] = [:]
        var chunks: Set<ChunkAddress> = []

        mutating func apply(_ actions: [DownloadAction]) {
            for action in actions {
                switch action {
                case .saveFetch(let a, let e): if !chunks.contains(a) { fetch[a] = e }
                case .removeFetch(let a): fetch[a] = nil
                case .saveDownload(let id, let e): downloads[id] = e
                case .removeDownload(let id): downloads[id] = nil
                default: break
                }
            }
        }

        mutating func commit(_ address: ChunkAddress) {
            chunks.insert(address)
            fetch[address] = nil
        }
    }

    @Test func restoreResumesWithoutAskingForStoredChunks() throws {
        var store = FakeStore()
        var h = DownloaderHarness()
        let p = peer(0)
        h.connect(p)
        let chunks = (0..<6).map(chunk)
        store.apply(try h.start(download(0), chunks, hints: [p]))
        store.apply(try h.start(download(1), [chunks[4], chunk(20)]))
        for a in chunks[0...1] {
            store.apply(h.deliver(a, from: p))
            store.commit(a)
            store.apply(h.store(a))
        }
        store.apply(h.deliver(chunks[2], from: p))  // delivered, not committed before the crash
        store.apply(h.notFound(chunks[3], from: p))  // one attempt spent
        #expect(store.fetch[chunks[3]]?.attempts == 1)
        #expect(store.fetch[chunks[4]]?.groups == [download(0), download(1)])
        // Pull sync stored chunk 5 in a transaction the fetch set did not see (as a store
        // whose record lost the race would): the restart must not fetch it.
        store.chunks.insert(chunks[5])

        var r = DownloaderHarness(seed: 2)
        r.now = 50_000
        let restored = r.record(r.machine.restore(
            downloads: store.downloads.map { ($0.key, $0.value) }, fetches: store.fetch.map { ($0.key, $0.value) },
            now: r.now, isStored: { store.chunks.contains($0) }))
        #expect(restored.compactMap(\.removedFetch) == [chunks[5]])
        #expect(Set(r.machine.downloadIDs) == [download(0), download(1)])
        #expect(r.machine.progress(of: download(0)) == DownloadProgress(done: 3, failed: 0, total: 6))
        #expect(r.machine.progress(of: download(1)) == DownloadProgress(done: 0, failed: 0, total: 2))
        #expect(r.machine.fetchEntry(chunks[3])?.attempts == 1)
        #expect(r.machine.fetchEntry(chunks[2])?.hints == [p])
        r.connect(p)
        let asked = Set(r.takeRequests().map(\.address))
        #expect(asked == [chunks[2], chunks[3], chunks[4], chunk(20)])
        for a in asked.sorted() {
            r.deliver(a, from: p)
            r.store(a)
        }
        #expect(r.take().compactMap(\.finished).map(\.1) == [.completed, .completed])
    }

    @Test func restoreKeepsFailuresAndDropsWhatNobodyWants() throws {
        let a = download(0)
        let done = download(1)
        let entries: [(address: ChunkAddress, entry: FetchEntry)] = [
            (chunk(0), FetchEntry(attempts: 32, groups: [a])),                    // spent: failed
            (chunk(1), FetchEntry(attempts: 2, groups: [a], failure: .noProvider)),
            (chunk(2), FetchEntry(attempts: 0, nextAttemptMs: 90_000, groups: [a])),
            (chunk(3), FetchEntry(groups: [done])),                             // its download ended
            (chunk(4), FetchEntry(groups: [download(7)])),                      // nobody's
        ]
        var r = DownloaderHarness()
        r.now = 60_000
        let restored = r.record(r.machine.restore(
            downloads: [(a, DownloadEntry(policy: .onRead, state: .active, chunksDone: 4, chunksTotal: 7, createdMs: 1)),
                        (done, DownloadEntry(policy: .eagerPin, state: .done, chunksDone: 1, chunksTotal: 1, createdMs: 0))],
            fetches: entries, now: r.now))
        #expect(Set(restored.compactMap(\.removedFetch)) == [chunk(3), chunk(4)])
        #expect(r.machine.progress(of: a) == DownloadProgress(done: 4, failed: 2, total: 7))
        // A restored download knows its chunks in address order.
        let failed = [MissingChunk(address: chunk(0), reason: .attemptsExhausted(attempts: 32)),
                      MissingChunk(address: chunk(1), reason: .noProvider)].sorted { $0.address < $1.address }
        #expect(r.machine.status(of: a)?.failed == failed)
        // The delayed chunk is asked for at its time, not before.
        r.connect(peer(0))
        #expect(r.takeRequests().isEmpty)
        r.advance(to: 90_000)
        let request = try #require(r.takeRequests().first)
        #expect(request.address == chunk(2))
        r.deliver(chunk(2), from: peer(0))
        r.store(chunk(2))
        #expect(r.take().compactMap(\.finished).map(\.1) == [.failed(missing: failed, missingCount: 2)])
        #expect(r.machine.fetchSetCount == 0)
    }
}

/// The code of the rejection `body` throws; nil when it throws nothing (or something else).
func rejection(_ body: () throws -> Void) -> DownloadRejected.Code? {
    do {
        try body()
        return nil
    } catch {
        return (error as? DownloadRejected)?.code
    }
}
