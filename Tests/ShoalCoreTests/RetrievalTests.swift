import ShoalCore
import Testing

/// The retrieval machine alone (one node), then a network of them passing messages.
struct RetrievalTests {
    /// An overlay whose first word is `w0` (the rest zero): distances are easy to read.
    static func overlay(_ w0: UInt64) -> OverlayAddress { Address32(w0: w0, w1: 0, w2: 0, w3: 1) }

    static let base = overlay(0x8000_0000_0000_0000)

    /// A machine at `base` with these peers connected.
    static func machine(peers: [UInt64], limits: RetrievalLimits = RetrievalLimits()) -> Retrieval {
        var r = Retrieval(base: base, limits: limits)
        for p in peers { r.peerConnected(overlay(p)) }
        r.checkInvariants()
        return r
    }

    /// A chunk whose address starts with the given top byte (found by trying seeds).
    static func chunk(top: UInt8, seed: UInt64 = 1) -> Chunk {
        var rng = SplitMix64(seed: seed)
        while true {
            let c = try! Chunk(payload: rng.bytes(16))
            if UInt8(c.address.w0 >> 56) == top { return c }
        }
    }

    static func asks(_ actions: [Retrieval.Action]) -> [(peer: OverlayAddress, ruid: UInt32, hops: UInt8)] {
        actions.compactMap { if case .ask(let p, let r, _, let h) = $0 { return (p, r, h) } else { return nil } }
    }

    @Test func theOriginAsksTheClosestConnectedPeerWithEveryHop() {
        var r = Self.machine(peers: [0x1000_0000_0000_0000, 0x7000_0000_0000_0000, 0xF000_0000_0000_0000])
        let c = Self.chunk(top: 0x71)
        let actions = r.request(c.address, for: .local(1), now: 0)
        r.checkInvariants()
        let ask = Self.asks(actions)
        #expect(ask.count == 1)
        #expect(ask.first?.peer == Self.overlay(0x7000_0000_0000_0000))
        #expect(ask.first?.hops == RetrievalLimits().hopsMax)
        #expect(r.nextDeadline == RetrievalLimits().attemptTimeoutMs(hops: RetrievalLimits().hopsMax))
    }

    @Test func everyoneWaitingGetsTheOneDelivery() {
        var r = Self.machine(peers: [0x7000_0000_0000_0000, 0x1000_0000_0000_0000])
        let c = Self.chunk(top: 0x71)
        let asker = Self.overlay(0x1000_0000_0000_0000)
        let first = Self.asks(r.request(c.address, for: .local(1), now: 0))
        // A second caller and a peer join the same fetch: nobody else is asked.
        #expect(r.request(c.address, for: .local(2), now: 1).isEmpty)
        #expect(r.request(c.address, for: .peer(asker, ruid: 40), hops: 3, now: 2).isEmpty)
        r.checkInvariants()
        let actions = r.delivered(c, from: first[0].peer, ruid: first[0].ruid, now: 3)
        r.checkInvariants()
        #expect(actions == [.keep(c), .resolve(id: 1, .success(c)), .resolve(id: 2, .success(c)),
                            .answer(peer: asker, ruid: 40, chunk: c)])
        #expect(r.openFetches == 0 && r.nextDeadline == nil)
    }

    @Test func refusalsMoveToTheNextPeerUntilNoneIsLeft() {
        var r = Self.machine(peers: [0x7000_0000_0000_0000, 0x6000_0000_0000_0000])
        let c = Self.chunk(top: 0x71)
        let a = Self.asks(r.request(c.address, for: .local(9), now: 0))
        #expect(a.map(\.peer) == [Self.overlay(0x7000_0000_0000_0000)])
        let b = Self.asks(r.refused(by: a[0].peer, ruid: a[0].ruid, now: 5))
        #expect(b.map(\.peer) == [Self.overlay(0x6000_0000_0000_0000)])
        #expect(b[0].ruid != a[0].ruid)
        let end = r.refused(by: b[0].peer, ruid: b[0].ruid, now: 6)
        r.checkInvariants()
        #expect(end == [.resolve(id: 9, .failure(.notFound(asked: 2)))])
        #expect(r.counters.failed == 1 && r.counters.refusals == 2)
    }

    @Test func anAttemptPastItsDeadlineMovesOn() {
        var r = Self.machine(peers: [0x7000_0000_0000_0000, 0x6000_0000_0000_0000])
        let c = Self.chunk(top: 0x71)
        _ = r.request(c.address, for: .local(1), now: 0)
        let deadline = r.nextDeadline!
        #expect(r.tick(now: deadline - 1).isEmpty)
        let next = Self.asks(r.tick(now: deadline))
        r.checkInvariants()
        #expect(next.map(\.peer) == [Self.overlay(0x6000_0000_0000_0000)])
        #expect(r.counters.timeouts == 1)
    }

    @Test func theAttemptLimitEndsTheFetchWithPeersLeft() {
        var limits = RetrievalLimits()
        limits.originAttemptsMax = 2
        var r = Self.machine(peers: [0x7000_0000_0000_0000, 0x6000_0000_0000_0000, 0x5000_0000_0000_0000], limits: limits)
        let c = Self.chunk(top: 0x71)
        var ask = Self.asks(r.request(c.address, for: .local(1), now: 0))
        ask = Self.asks(r.refused(by: ask[0].peer, ruid: ask[0].ruid, now: 1))
        #expect(r.refused(by: ask[0].peer, ruid: ask[0].ruid, now: 2) == [.resolve(id: 1, .failure(.notFound(asked: 2)))])
    }

    /// A forwarder asks only peers closer to the address than itself: a request moves toward
    /// the address at every hop or stops.
    @Test func aForwarderAsksOnlyCloserPeers() {
        let asker = Self.overlay(0x1000_0000_0000_0000)
        let c = Self.chunk(top: 0x81)  // close to base (0x80…)
        var r = Self.machine(peers: [0x1000_0000_0000_0000, 0x7000_0000_0000_0000, 0xC000_0000_0000_0000])
        let actions = r.request(c.address, for: .peer(asker, ruid: 5), hops: 4, now: 0)
        r.checkInvariants()
        #expect(actions == [.refuse(peer: asker, ruid: 5, failure: .notFound(asked: 0))])
        // A peer closer than us is asked, with one hop less.
        r.peerConnected(Self.overlay(0x8100_0000_0000_0000))
        let forward = Self.asks(r.request(c.address, for: .peer(asker, ruid: 6), hops: 4, now: 1))
        #expect(forward.map(\.peer) == [Self.overlay(0x8100_0000_0000_0000)])
        #expect(forward.first?.hops == 3)
    }

    @Test func aRequestWithNoHopLeftIsRefused() {
        var r = Self.machine(peers: [0x7000_0000_0000_0000])
        let asker = Self.overlay(0x1000_0000_0000_0000)
        let c = Self.chunk(top: 0x71)
        #expect(r.request(c.address, for: .peer(asker, ruid: 1), hops: 0, now: 0) == [.refuse(peer: asker, ruid: 1, failure: .hopLimit)])
        #expect(r.openFetches == 0)
    }

    /// A request that comes back along its own path is refused at once instead of waiting on
    /// itself until the timeouts.
    @Test func aRequestComingBackIsALoop() {
        let upstream = Self.overlay(0x7000_0000_0000_0000)
        var r = Self.machine(peers: [0x7000_0000_0000_0000])
        let c = Self.chunk(top: 0x71)
        let ask = Self.asks(r.request(c.address, for: .local(1), now: 0))
        #expect(ask.map(\.peer) == [upstream])
        #expect(r.request(c.address, for: .peer(upstream, ruid: 77), hops: 6, now: 1) == [.refuse(peer: upstream, ruid: 77, failure: .loop)])
        #expect(r.counters.loops == 1)
        r.checkInvariants()
    }

    @Test func theWrongChunkIsAFaultAndTheNextPeerIsAsked() {
        var r = Self.machine(peers: [0x7000_0000_0000_0000, 0x6000_0000_0000_0000])
        let c = Self.chunk(top: 0x71), other = Self.chunk(top: 0x72)
        let ask = Self.asks(r.request(c.address, for: .local(1), now: 0))
        let actions = r.delivered(other, from: ask[0].peer, ruid: ask[0].ruid, now: 1)
        r.checkInvariants()
        guard case .fault(let peer, .invalidChunk)? = actions.first else {
            Issue.record("\(actions)")
            return
        }
        #expect(peer == ask[0].peer)
        #expect(Self.asks(actions).map(\.peer) == [Self.overlay(0x6000_0000_0000_0000)])
        #expect(!actions.contains { if case .resolve = $0 { return true } else { return false } })
    }

    @Test func aLateReplyIsIgnoredAndAnUnissuedOneIsAFault() {
        var r = Self.machine(peers: [0x7000_0000_0000_0000, 0x6000_0000_0000_0000])
        let c = Self.chunk(top: 0x71)
        let ask = Self.asks(r.request(c.address, for: .local(1), now: 0))
        _ = r.tick(now: r.nextDeadline!)
        // The first peer answers after its attempt timed out: late, not a fault, not taken.
        #expect(r.delivered(c, from: ask[0].peer, ruid: ask[0].ruid, now: 99_999).isEmpty)
        #expect(r.counters.lateReplies == 1)
        #expect(r.isFetching(c.address))
        let stranger = r.refused(by: ask[0].peer, ruid: 50_000, now: 100_000)
        #expect(stranger == [.fault(ask[0].peer, .unknownRequest(50_000))])
        r.checkInvariants()
    }

    @Test func cancellingOneCallerLeavesTheOthers() {
        var r = Self.machine(peers: [0x7000_0000_0000_0000])
        let c = Self.chunk(top: 0x71)
        let ask = Self.asks(r.request(c.address, for: .local(1), now: 0))
        _ = r.request(c.address, for: .local(2), now: 0)
        r.cancel(id: 1, address: c.address)
        r.checkInvariants()
        #expect(r.delivered(c, from: ask[0].peer, ruid: ask[0].ruid, now: 1) == [.resolve(id: 2, .success(c))])
        // With no caller left the fetch ends and its answer is late.
        let again = Self.asks(r.request(c.address, for: .local(3), now: 2))
        r.cancel(id: 3, address: c.address)
        #expect(r.openFetches == 0 && r.nextDeadline == nil)
        #expect(r.delivered(c, from: again[0].peer, ruid: again[0].ruid, now: 3).isEmpty)
        r.checkInvariants()
    }

    @Test func aDisconnectFailsOverAndDropsThePeersOwnRequests() {
        var r = Self.machine(peers: [0x7000_0000_0000_0000, 0x6000_0000_0000_0000, 0x1000_0000_0000_0000])
        let c = Self.chunk(top: 0x71), d = Self.chunk(top: 0x62)
        let first = Self.asks(r.request(c.address, for: .local(1), now: 0))
        // Peer 0x10… asks us for d, which we forward… not: 0x10… is farther from d than the
        // peers we ask? We (0x80…) are farther from d (0x62…) than 0x60…, so 0x60… is asked.
        let forwarded = Self.asks(r.request(d.address, for: .peer(Self.overlay(0x1000_0000_0000_0000), ruid: 3), hops: 5, now: 0))
        #expect(forwarded.map(\.peer) == [Self.overlay(0x6000_0000_0000_0000)])
        let actions = r.peerDisconnected(first[0].peer, now: 10)
        r.checkInvariants()
        #expect(Self.asks(actions).map(\.peer) == [Self.overlay(0x6000_0000_0000_0000)])
        // The asker goes: its request is dropped, nobody is told.
        #expect(r.peerDisconnected(Self.overlay(0x1000_0000_0000_0000), now: 11).isEmpty)
        #expect(!r.isFetching(d.address))
        r.checkInvariants()
    }

    @Test func aPeerCannotHoldMoreThanItsShareOpen() {
        var limits = RetrievalLimits()
        limits.openPerPeerMax = 3
        limits.fetchesMax = 5
        let asker = Self.overlay(0x1000_0000_0000_0000)
        var r = Self.machine(peers: [0x1000_0000_0000_0000, 0x8100_0000_0000_0000], limits: limits)
        var refused = 0
        for i in 0..<6 {
            let c = Self.chunk(top: 0x81, seed: UInt64(i + 1))
            for action in r.request(c.address, for: .peer(asker, ruid: UInt32(i)), hops: 3, now: 0) {
                if case .refuse(_, _, .overloaded) = action { refused += 1 }
            }
            r.checkInvariants()
        }
        #expect(refused == 3)
        // The node-wide limit: two more local fetches fit (5), the third is refused.
        var results: [Retrieval.Action] = []
        for i in 0..<3 { results += r.request(Self.chunk(top: 0x82, seed: UInt64(100 + i)).address, for: .local(UInt64(i)), now: 0) }
        #expect(results.filter { if case .resolve(_, .failure(.overloaded)) = $0 { return true } else { return false } }.count == 1)
        r.checkInvariants()
    }

    // MARK: A network of machines

    /// 96 nodes with Kademlia-shaped connections (a few peers per bin, every node sharing four
    /// leading bits); each chunk is held by the node closest to it. Every retrieval from every
    /// origin finds its chunk, in few hops, with no request circling.
    @Test(arguments: [1, 2, 3] as [UInt64])
    func aNetworkOfMachinesRetrievesEveryChunk(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let n = 96
        let overlays = (0..<n).map { _ in Address32(w0: rng.next(), w1: rng.next(), w2: rng.next(), w3: rng.next()) }
        var machines = overlays.map { Retrieval(base: $0) }
        // Connections, symmetric: the first 3 per bin (random order), and all with PO ≥ 4.
        var linked = Set<[Int]>()
        for i in 0..<n {
            var perBin: [Int: Int] = [:]
            for j in (0..<n).shuffled(using: &rng) where j != i {
                let po = overlays[i].proximity(to: overlays[j])
                if po >= 4 || perBin[po, default: 0] < 3 {
                    perBin[po, default: 0] += 1
                    linked.insert([min(i, j), max(i, j)])
                }
            }
        }
        for pair in linked {
            machines[pair[0]].peerConnected(overlays[pair[1]])
            machines[pair[1]].peerConnected(overlays[pair[0]])
        }
        let index = Dictionary(uniqueKeysWithValues: overlays.enumerated().map { ($1, $0) })
        var fixtures = Fixtures(seed: seed)
        var store: [Set<ChunkAddress>] = Array(repeating: [], count: n)
        var byAddress: [ChunkAddress: Chunk] = [:]
        for _ in 0..<60 {
            let c = fixtures.chunk()
            byAddress[c.address] = c
            let holder = (0..<n).min { Retrieval.distance(overlays[$0], c.address) < Retrieval.distance(overlays[$1], c.address) }!
            store[holder].insert(c.address)
        }
        // Messages in flight, first in first out (a network where every link is equally fast).
        enum Wire { case ask(to: Int, from: Int, ruid: UInt32, address: ChunkAddress, hops: UInt8)
                    case answer(to: Int, from: Int, ruid: UInt32, chunk: Chunk?) }
        var wire: [Wire] = []
        var resolved: [UInt64: Result<Chunk, RetrievalFailure>] = [:]
        var hopsTravelled: [Int] = []
        func perform(_ actions: [Retrieval.Action], at node: Int) {
            for action in actions {
                switch action {
                case .ask(let p, let ruid, let address, let hops):
                    wire.append(.ask(to: index[p]!, from: node, ruid: ruid, address: address, hops: hops))
                case .answer(let p, let ruid, let chunk):
                    wire.append(.answer(to: index[p]!, from: node, ruid: ruid, chunk: chunk))
                case .refuse(let p, let ruid, _):
                    wire.append(.answer(to: index[p]!, from: node, ruid: ruid, chunk: nil))
                case .resolve(let id, let result):
                    #expect(resolved[id] == nil, "request \(id) resolved twice")
                    resolved[id] = result
                case .keep(let chunk):
                    store[node].insert(chunk.address)
                case .fault(let p, let fault):
                    Issue.record("node \(node) faulted \(p.hex.prefix(8)): \(fault)")
                }
            }
            machines[node].checkInvariants()
        }
        var id: UInt64 = 0
        var asked: [UInt64: ChunkAddress] = [:]
        for (address, _) in byAddress.sorted(by: { $0.key < $1.key }) {
            for _ in 0..<3 {
                let origin = Int(rng.next() % UInt64(n))
                id += 1
                asked[id] = address
                if store[origin].contains(address) {
                    resolved[id] = .success(byAddress[address]!)
                    continue
                }
                perform(machines[origin].request(address, for: .local(id), now: 0), at: origin)
            }
            var steps = 0
            while !wire.isEmpty {
                steps += 1
                #expect(steps < 10_000, "messages keep circling")
                if steps >= 10_000 { return }
                switch wire.removeFirst() {
                case .ask(let to, let from, let ruid, let address, let hops):
                    hopsTravelled.append(Int(RetrievalLimits().hopsMax) - Int(hops) + 1)
                    if store[to].contains(address) {
                        wire.append(.answer(to: from, from: to, ruid: ruid, chunk: byAddress[address]!))
                    } else {
                        perform(machines[to].request(address, for: .peer(overlays[from], ruid: ruid), hops: hops, now: 0), at: to)
                    }
                case .answer(let to, let from, let ruid, let chunk):
                    if let chunk {
                        perform(machines[to].delivered(chunk, from: overlays[from], ruid: ruid, now: 0), at: to)
                    } else {
                        perform(machines[to].refused(by: overlays[from], ruid: ruid, now: 0), at: to)
                    }
                }
            }
        }
        #expect(resolved.count == asked.count, "every retrieval ended")
        let failed = asked.filter { if case .success(let c)? = resolved[$0.key], c.address == $0.value { return false } else { return true } }
        #expect(failed.isEmpty, "\(failed.count) retrievals failed, e.g. \(failed.first.map { resolved[$0.key].map { "\($0)" } ?? "none" } ?? "")")
        #expect((hopsTravelled.max() ?? 0) <= Int(RetrievalLimits().hopsMax))
        // Most retrievals crossed the network, some of them more than one hop.
        #expect(hopsTravelled.count >= asked.count / 2 && hopsTravelled.contains { $0 >= 2 })
        for m in machines { #expect(m.openFetches == 0) }
    }
}

/// A peer that asks for an address a local caller's fetch is already after: it waits on that
/// fetch only if the fetch moves toward the address.
struct RetrievalJoinTests {
    static let base = RetrievalTests.base

    @Test func aPeerIsRefusedAsALoopWhileTheCallersFetchAsksAFartherPeer() {
        // The base 0x80… is the closest node to 0x81… it knows; its caller may still ask 0x10….
        let farther = RetrievalTests.overlay(0x1000_0000_0000_0000)
        let asker = RetrievalTests.overlay(0x2000_0000_0000_0000)
        var r = RetrievalTests.machine(peers: [0x1000_0000_0000_0000, 0x2000_0000_0000_0000])
        let c = RetrievalTests.chunk(top: 0x81)
        let ask = RetrievalTests.asks(r.request(c.address, for: .local(1), now: 0))
        #expect(ask.map(\.peer) == [farther])
        // 0x10… may forward toward 0x81… through 0x20…, which asks us: waiting on 0x10… it would
        // wait on itself.
        #expect(r.request(c.address, for: .peer(asker, ruid: 5), hops: 3, now: 1) == [.refuse(peer: asker, ruid: 5, failure: .loop)])
        r.checkInvariants()
        #expect(r.counters.loops == 1)
    }

    @Test func aPeerJoiningTheCallersFetchMakesItForwardOnlyUntilThePeerIsTold() {
        let closer = RetrievalTests.overlay(0x8100_0000_0000_0000)
        let farther = RetrievalTests.overlay(0x1000_0000_0000_0000)
        let asker = RetrievalTests.overlay(0x2000_0000_0000_0000)
        var r = RetrievalTests.machine(peers: [0x8100_0000_0000_0000, 0x1000_0000_0000_0000, 0x2000_0000_0000_0000])
        let c = RetrievalTests.chunk(top: 0x81)
        let first = RetrievalTests.asks(r.request(c.address, for: .local(1), now: 0))
        #expect(first.map(\.peer) == [closer])
        // The attempt goes closer: the peer joins.
        #expect(r.request(c.address, for: .peer(asker, ruid: 7), hops: 3, now: 1).isEmpty)
        r.checkInvariants()
        // 0x81… refuses; nobody closer is left: the peer is told first, then the caller's fetch
        // goes on to the farther peer.
        let next = r.refused(by: closer, ruid: first[0].ruid, now: 2)
        r.checkInvariants()
        #expect(next.first == .refuse(peer: asker, ruid: 7, failure: .notFound(asked: 1)))
        #expect(RetrievalTests.asks(next).map(\.peer) == [farther])
    }
}
