import ShoalCore
import Testing

@testable import ShoalSimulation

/// Retrieval and downloads over a small network with every kind of faulty peer, from a seed:
/// every check holds, a seed replays its run, and each check fails when it should (a broken
/// network, or a crafted trace fed to the ledger), so none of them passes for want of cases.
@Suite struct FetchSimulationTests {
    /// 60 nodes, a tenth of them of each faulty kind, 600 chunks, 400 retrievals, 3 downloads.
    static func small(seed: UInt64, _ adjust: (inout FetchSimulationConfig) -> Void = { _ in }) -> FetchSimulationConfig {
        var config = FetchSimulationConfig(nodes: 60, chunks: 600, retrievals: 400, seed: seed)
        config.slowFraction = 0.1
        config.lossyFraction = 0.1
        config.lyingFraction = 0.1
        config.vanishingFraction = 0.1
        config.downloaders = 3
        config.chunksPerDownload = 60
        adjust(&config)
        return config
    }

    static func expectNoViolations(_ report: FetchSimulationReport, sourceLocation: SourceLocation = #_sourceLocation) {
        for (name, list) in report.violations.all {
            #expect(list.isEmpty, "seed \(report.config.seed): \(list.count) \(name), e.g. \(list.examples)", sourceLocation: sourceLocation)
        }
    }

    /// CI's size and the seed on which a downloader put one chunk into two presence queries of
    /// the same pass (the queue held it twice): the machine's invariant check stopped the run.
    @Test func theSeedThatPutAChunkInTwoPresenceQueriesRunsClean() {
        let report = FetchSimulator(FetchSimulationConfig(nodes: 200, chunks: 2000, retrievals: 1500, seed: 18606)).run()
        Self.expectNoViolations(report)
        #expect(report.counters.presenceQueries > 0)
    }

    @Test(arguments: [21, 22] as [UInt64])
    func aNetworkWithEveryKindOfPeerPassesEveryCheck(seed: UInt64) {
        let report = FetchSimulator(Self.small(seed: seed)).run()
        Self.expectNoViolations(report)
        // Every kind is there and did its harm.
        #expect(report.kinds.allSatisfy { $0.nodes > 0 }, "\(report.kinds)")
        let c = report.counters
        #expect(c.lies > 0 && c.messagesLost > 0 && c.vanished > 0 && c.retrievalFaults + c.downloadFaults > 0, "\(c)")
        // Retrievals crossed the network, some together, and every retrievable one came back.
        #expect(report.retrievable > report.retrievals / 4 && report.retrievableRetrieved == report.retrievable)
        #expect(report.concurrent > 0 && report.hopsMax >= 2)
        #expect(report.local + report.retrieved + report.failed == report.retrievals && report.pending == 0)
        // Every download ended, and requests kept within the limits but used them.
        #expect(report.downloadsCompleted + report.downloadsFailed == report.downloads)
        #expect(report.downloadPerPeerPeak == report.config.download.requestsPerPeerMax)
    }

    @Test func theSameSeedGivesTheSameRun() {
        let config = Self.small(seed: 23)
        let first = FetchSimulator(config).run()
        let second = FetchSimulator(config).run()
        #expect(first.digest == second.digest)
        #expect(first.simMs == second.simMs && first.counters == second.counters && first.violations == second.violations)
        #expect(FetchSimulator(Self.small(seed: 24)).run().digest != first.digest)
    }

    // MARK: Each check can fail

    /// (a) Holders that refuse (while the check counts them as holders) leave retrievable
    /// chunks unretrieved; and a retrieval ending with another chunk is caught.
    @Test func unretrievedChunksAreCaught() throws {
        let report = FetchSimulator(Self.small(seed: 25) { $0.breakage = .holdersRefuseRetrieval; $0.downloaders = 0 }).run()
        #expect(report.violations.unretrieved.count > 0)
        #expect(report.violations.unretrieved.examples.first?.contains("honest route") == true, "\(report.violations.unretrieved.examples)")

        var ledger = FetchLedger()
        let asked = try Chunk(payload: [1]), got = try Chunk(payload: [2])
        ledger.retrievalEnded(origin: 0, address: asked.address, result: .success(got), retrievable: false, route: [], now: 5)
        ledger.retrievalEnded(origin: 0, address: asked.address, result: .failure(.notFound(asked: 4)), retrievable: false, route: [0, 1], now: 6)
        #expect(ledger.violations.unretrieved.count == 1)
    }

    /// (b) A second request for the same chunk and intent while the first is open.
    @Test func aChunkAskedOfTwoPeersAtOnceIsCaught() throws {
        var ledger = FetchLedger()
        let limits = DownloadLimits()
        let a = try Chunk(payload: [1]).address, b = try Chunk(payload: [2]).address
        ledger.downloadRequestSent(node: 0, id: 1, address: a, peer: 1, limits: limits, now: 0)
        ledger.downloadRequestSent(node: 0, id: 2, address: b, peer: 2, limits: limits, now: 0)  // another chunk
        ledger.downloadRequestSent(node: 3, id: 1, address: a, peer: 2, limits: limits, now: 0)  // another downloader
        #expect(ledger.violations.doubleRequests.isEmpty)
        ledger.downloadRequestSent(node: 0, id: 3, address: a, peer: 2, limits: limits, now: 1)
        #expect(ledger.violations.doubleRequests.count == 1)
        // Once the first is over (cancelled, answered, its peer gone), asking again is fine.
        ledger.downloadRequestEnded(node: 0, id: 3)
        ledger.downloadPeerGone(node: 0, peer: 1)
        ledger.downloadRequestSent(node: 0, id: 4, address: a, peer: 5, limits: limits, now: 2)
        #expect(ledger.violations.doubleRequests.count == 1)

        // Retrieval: an attempt is open until its answer, its peer's disconnect or its deadline.
        let r = RetrievalLimits()
        ledger.retrievalFetchStarted(node: 7, address: a)
        ledger.retrievalAsked(node: 7, peer: 1, ruid: 1, address: a, deadline: 1_000, local: true, limits: r, now: 0)
        ledger.retrievalAsked(node: 7, peer: 2, ruid: 2, address: a, deadline: 1_500, local: true, limits: r, now: 500)
        #expect(ledger.violations.doubleRequests.count == 2)
        ledger.retrievalAsked(node: 7, peer: 3, ruid: 3, address: a, deadline: 2_500, local: true, limits: r, now: 1_500)
        ledger.retrievalReplied(node: 7, ruid: 3, peer: 3)
        ledger.retrievalAsked(node: 7, peer: 4, ruid: 4, address: a, deadline: 2_600, local: true, limits: r, now: 1_600)
        #expect(ledger.violations.doubleRequests.count == 2)
    }

    /// (c) Requests above the limits the machines were given.
    @Test func requestsBeyondTheLimitsAreCaught() throws {
        var ledger = FetchLedger()
        var limits = DownloadLimits()
        limits.requestsPerPeerMax = 2
        limits.requestsInFlightMax = 3
        limits.dialsInFlightMax = 1
        let addresses = try (0..<5).map { try Chunk(payload: [UInt8($0)]).address }
        ledger.downloadRequestSent(node: 0, id: 1, address: addresses[0], peer: 1, limits: limits, now: 0)
        ledger.downloadRequestSent(node: 0, id: 2, address: addresses[1], peer: 1, limits: limits, now: 0)
        ledger.downloadRequestSent(node: 0, id: 3, address: addresses[2], peer: 2, limits: limits, now: 0)
        #expect(ledger.violations.budgets.isEmpty)
        ledger.downloadRequestSent(node: 0, id: 4, address: addresses[3], peer: 1, limits: limits, now: 0)  // 3 to peer 1, 4 in all
        #expect(ledger.violations.budgets.count == 2)
        ledger.dialStarted(node: 0, peer: 9, limits: limits, now: 0)
        ledger.dialEnded(node: 0, peer: 9)
        ledger.dialStarted(node: 0, peer: 8, limits: limits, now: 0)
        ledger.dialStarted(node: 0, peer: 7, limits: limits, now: 0)
        #expect(ledger.violations.budgets.count == 3)

        // Retrieval: a forwarded fetch asks at most `forwardAttemptsMax` peers; a peer holds
        // at most `openPerPeerMax` requests open with a node.
        var r = RetrievalLimits()
        r.forwardAttemptsMax = 2
        r.openPerPeerMax = 1
        ledger.retrievalFetchStarted(node: 4, address: addresses[4])
        for (ruid, now) in [(1, 0), (2, 2_000), (3, 4_000)] as [(UInt32, UInt64)] {
            ledger.retrievalAsked(node: 4, peer: Int(ruid), ruid: ruid, address: addresses[4], deadline: now + 1_000, local: false, limits: r, now: now)
        }
        #expect(ledger.violations.budgets.count == 4)
        ledger.retrievalPeerRequestOpened(node: 4, peer: 6, limits: r, now: 0)
        ledger.retrievalPeerRequestClosed(node: 4, peer: 6)
        ledger.retrievalPeerRequestOpened(node: 4, peer: 6, limits: r, now: 0)
        ledger.retrievalPeerRequestOpened(node: 4, peer: 6, limits: r, now: 0)
        #expect(ledger.violations.budgets.count == 5)
    }

    /// (d) A request that comes back to a node on its path, or goes past the hop limit.
    @Test func aLoopingOrOverlongRequestIsCaught() throws {
        var ledger = FetchLedger()
        let a = try Chunk(payload: [1]).address
        ledger.retrievalForwarded(from: 3, to: 4, address: a, visited: [1, 2, 3], hopsFromOrigin: 3, wireHops: 6, hopsMax: 8, now: 0)
        #expect(ledger.violations.loops.isEmpty)
        ledger.retrievalForwarded(from: 3, to: 1, address: a, visited: [1, 2, 3], hopsFromOrigin: 3, wireHops: 6, hopsMax: 8, now: 0)
        #expect(ledger.violations.loops.count == 1)
        ledger.retrievalForwarded(from: 3, to: 4, address: a, visited: [3], hopsFromOrigin: 10, wireHops: 0, hopsMax: 8, now: 0)
        ledger.retrievalForwarded(from: 3, to: 4, address: a, visited: [3], hopsFromOrigin: 1, wireHops: 9, hopsMax: 8, now: 0)
        #expect(ledger.violations.loops.count == 3)
        // A loop on a path a widened fetch sent farther off is the known issue below: counted apart.
        ledger.retrievalForwarded(from: 3, to: 1, address: a, visited: [1, 2, 3], hopsFromOrigin: 3, wireHops: 6, hopsMax: 8, climbed: true, now: 0)
        #expect(ledger.violations.loops.count == 3 && ledger.widenedLoops.count == 1)
    }

    /// (e) A download that does not end by the time the run stops, or ends past its bound.
    @Test func aDownloadThatDoesNotEndInItsBoundIsCaught() {
        let stopped = FetchSimulator(Self.small(seed: 26) { $0.retrievals = 0; $0.retrievalWindowMs = 0...0; $0.maxSimMs = 50 }).run()
        #expect(stopped.violations.unendedDownloads.count == 3, "\(stopped.violations.unendedDownloads.examples)")
        #expect(stopped.violations.unendedDownloads.examples.first?.contains("had not ended") == true)
        let slow = FetchSimulator(Self.small(seed: 26) { $0.retrievals = 0; $0.downloadEndBoundMs = 1 }).run()
        #expect(slow.violations.unendedDownloads.count == 3)
        #expect(slow.violations.unendedDownloads.examples.first?.contains("more than its bound") == true)
    }

    /// The route that defines "retrievable" follows the machines' first choices: the origin's
    /// closest peer, then each forwarder's closest peer closer than itself.
    @Test func theRouteOfAHonestNetworkEndsAtAHolderInFewHops() {
        let simulator = FetchSimulator(Self.small(seed: 27) {
            $0.slowFraction = 0; $0.lossyFraction = 0; $0.lyingFraction = 0; $0.vanishingFraction = 0
        })
        var reached = 0
        for c in simulator.chunks.indices.prefix(50) {
            let address = simulator.chunks[c].address
            let route = simulator.route(from: c % 60, to: address)
            if route.reaches { reached += 1 }
            #expect(route.path.count <= 1 + Int(RetrievalLimits().hopsMax) + 1)
            for (i, node) in route.path.enumerated().dropFirst(2) {
                let (before, here) = (simulator.overlays[route.path[i - 1]], simulator.overlays[node])
                #expect(Retrieval.distance(here, address) < Retrieval.distance(before, address), "a forward that goes no closer")
            }
        }
        #expect(reached >= 45, "only \(reached) of 50 routes reach a holder")
    }
}

/// What the fetch simulation's loop check (d) asks of the retrieval machine, shown on four
/// machines by hand: a request must not come back to a node already on its path.
@Suite struct RetrievalPathTests {
    static func node(_ top: UInt64) -> OverlayAddress { OverlayAddress(w0: top << 56, w1: 0, w2: 0, w3: 1) }

    static func ask(_ actions: [Retrieval.Action]) -> (peer: OverlayAddress, ruid: UInt32, hops: UInt8)? {
        for case .ask(let peer, let ruid, _, let hops) in actions { return (peer, ruid, hops) }
        return nil
    }

    /// U (a caller's origin) asks X; X forwards to C, the one peer closer than itself. A caller
    /// on X joins X's fetch. C refuses. Before, the caller had widened the fetch, so X asked V,
    /// farther than itself, and V forwarded to U, closer than V: the request was back where it
    /// started (U → X → V → U), U joined V to its own fetch, and the three waited on each other
    /// until their attempts timed out (4.5–5 s). Now the fetch stays forward-only while U waits:
    /// X tells U "not found" first, and only then asks V for its own caller; U, told, ends its
    /// fetch, so V's forward to U is a request of its own, which U forwards to X, where it is
    /// refused as a loop (U is in X's skip list). Every request still ends with an answer.
    @Test func aForwardedFetchJoinedByALocalCallerNeverSendsItsRequestBackUpItsPath() throws {
        let address = ChunkAddress(w0: 0, w1: 0, w2: 0, w3: 0)
        // Distances to the address: C < X < U < V.
        let c = Self.node(0x08), x = Self.node(0x10), u = Self.node(0x40), v = Self.node(0x80)
        var machineU = Retrieval(base: u), machineX = Retrieval(base: x), machineV = Retrieval(base: v)
        machineU.peerConnected(x)
        for peer in [c, u, v] { machineX.peerConnected(peer) }
        for peer in [x, u] { machineV.peerConnected(peer) }

        let toX = try #require(Self.ask(machineU.request(address, for: .local(1), now: 0)))
        #expect(toX.peer == x)
        let toC = try #require(Self.ask(machineX.request(address, for: .peer(u, ruid: toX.ruid), hops: toX.hops, now: 10)))
        #expect(toC.peer == c && toC.hops == toX.hops - 1)
        #expect(machineX.request(address, for: .local(2), now: 20).isEmpty)  // joins; the fetch stays forward-only
        let afterC = machineX.refused(by: c, ruid: toC.ruid, now: 30)
        #expect(afterC.first == .refuse(peer: u, ruid: toX.ruid, failure: .notFound(asked: 1)), "U is told before anyone farther is asked")
        let toV = try #require(Self.ask(afterC))
        #expect(toV.peer == v, "X's own caller may still have V asked")
        #expect(machineU.refused(by: x, ruid: toX.ruid, now: 35) == [.resolve(id: 1, .failure(.notFound(asked: 1)))])
        let fromV = try #require(Self.ask(machineV.request(address, for: .peer(x, ruid: toV.ruid), hops: toV.hops, now: 40)))
        #expect(fromV.peer == u)
        let fromU = try #require(Self.ask(machineU.request(address, for: .peer(v, ruid: fromV.ruid), hops: fromV.hops, now: 50)))
        #expect(fromU.peer == x)
        #expect(machineX.request(address, for: .peer(u, ruid: fromU.ruid), hops: fromU.hops, now: 60)
                == [.refuse(peer: u, ruid: fromU.ruid, failure: .loop)])
        for m in [machineU, machineX, machineV] { m.checkInvariants() }
    }
}
