import ShoalCore
import Testing

extension Address32 {
    /// An address sharing exactly `po` (< 256) leading bits with `self`, the rest drawn from `seed`.
    func sharing(_ po: Int, seed: UInt64) -> Address32 {
        var random = SplitMix64(seed: seed)
        let mine = [w0, w1, w2, w3]
        var words: [UInt64] = []
        for k in 0..<4 {
            let noise = random.next()
            let j = po - 64 * k
            if j >= 64 { words.append(mine[k]); continue }
            if j < 0 { words.append(noise); continue }
            let high: UInt64 = j == 0 ? 0 : ~0 << UInt64(64 - j)
            let flip: UInt64 = 1 << UInt64(63 - j)
            words.append((mine[k] & high) | (~mine[k] & flip) | (noise & (flip - 1)))
        }
        return Address32(w0: words[0], w1: words[1], w2: words[2], w3: words[3])
    }
}

let topologyBase = Address32(w0: 0x6969_0f0f_3c3c_a5a5, w1: 1, w2: 2, w3: 3)

/// A peer `n` of bin `po`, distinct per (po, n).
func peerAt(_ po: Int, _ n: Int = 0, base: OverlayAddress = topologyBase) -> OverlayAddress {
    base.sharing(po, seed: UInt64(po) << 32 | UInt64(n))
}

func address(_ n: Int) -> String { "10.0.\(n / 250).\(n % 250 + 1):1634" }

/// A topology with these peers connected (each `n`-th of its bin by order of appearance).
func topology(connectedAt bins: [Int], limits: TopologyLimits = .init()) -> Topology {
    var t = Topology(base: topologyBase, limits: limits)
    var seen: [Int: Int] = [:]
    for po in bins {
        let n = seen[po, default: 0]
        seen[po] = n + 1
        t.connected(peerAt(po, n), addresses: [address(po * 100 + n)], nowMs: 1)
    }
    t.checkInvariants()
    return t
}

private func limits(_ configure: (inout TopologyLimits) -> Void) -> TopologyLimits {
    var l = TopologyLimits()
    configure(&l)
    return l
}

@Suite struct TopologyTests {
    // MARK: Depth

    @Test(arguments: [
        ([], 0),                                    // nobody
        ([3, 5, 9], 0),                             // fewer than 4 connected
        ([1, 2, 3, 4, 5], 0),                       // bin 0 is empty
        ([0, 1, 2, 3], 0),                          // depth 1 would leave 3 beyond
        ([0, 0, 1, 1, 2, 5, 6, 7], 2),              // bins 0, 1 filled, 4 peers at PO ≥ 2
        ([0, 2, 2, 3, 3, 4, 5], 1),                 // bin 1 is a gap: depth stops there
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15], 10), // a deep neighbourhood
        ([0, 1, 2, 3, 31, 31, 31, 31], 4),          // bin 31 holds PO ≥ 31
    ] as [([Int], Int)])
    func depthIsTheDeepestLevelWithEnoughPeersBeyondAndNoEmptyBinBelow(bins: [Int], depth: Int) {
        #expect(topology(connectedAt: bins).depth == depth)
    }

    @Test func depthCountsConnectedPeersOnly() {
        var t = topology(connectedAt: [0, 1, 2, 3, 4, 5])
        #expect(t.depth == 2)
        for n in 0..<10 { t.learned(peerAt(2, 10 + n), addresses: [address(n)], nowMs: 1) }
        #expect(t.depth == 2, "known but unconnected peers do not count")
        t.disconnected(peerAt(1), nowMs: 2)
        #expect(t.depth == 1, "bin 1 is empty now")
        t.checkInvariants()
    }

    @Test func binSummariesCountKnownAndConnectedAndMarkSaturation() {
        var t = topology(connectedAt: Array(repeating: 3, count: 8) + [4])
        t.learned(peerAt(4, 7), addresses: [address(1)], nowMs: 1)
        let s = t.binSummaries()
        #expect(s.count == Proximity.binCount && s.map(\.bin) == Array(0..<32))
        #expect(s[3] == BinSummary(bin: 3, known: 8, connected: 8, saturated: true))
        #expect(s[4] == BinSummary(bin: 4, known: 2, connected: 1, saturated: false))
        #expect(s[5] == BinSummary(bin: 5, known: 0, connected: 0, saturated: false))
    }

    // MARK: Dialling

    @Test func dialsGoToTheEmptiestBinThenTheDeeperThenByScoreAndStayWithinTheInFlightBound() {
        var t = topology(connectedAt: Array(repeating: 1, count: 8))   // bin 1 saturated
        let inSaturated = peerAt(1, 50), shallow = peerAt(0, 1), deep = peerAt(6, 1), deepBetter = peerAt(6, 2), deepest = peerAt(9, 1)
        for (i, p) in [inSaturated, shallow, deep, deepBetter, deepest].enumerated() {
            let learned1 = t.learned(p, addresses: [address(i)], nowMs: 1)
            #expect(learned1)
        }
        t.scored(deepBetter, score: 5)
        // Bins 0, 6 and 9 are empty: the deepest first, then 6 (the better score), then 0;
        // then bin 6 again (it holds 1 now, as 9 does, which has no candidate left).
        #expect(t.nextDials(nowMs: 1).map(\.overlay) == [deepest, deepBetter, shallow, deep], "4 in flight at most; the saturated bin last")
        t.dialStarted(deepest)
        t.dialStarted(deepBetter)
        #expect(t.nextDials(nowMs: 1).map(\.overlay) == [shallow, deep], "2 dials under way leave room for 2; bin 0 is the emptiest")
        t.dialStarted(deep)
        t.dialStarted(shallow)
        #expect(t.nextDials(nowMs: 1).isEmpty)
        t.dialFailed(shallow, nowMs: 1)
        #expect(t.nextDials(nowMs: 1).map(\.overlay) == [inSaturated], "the one left, though its bin is saturated")
        t.checkInvariants()
    }

    @Test func aBinAtItsMaximumIsNotDialledAndPeersPickedTogetherCountTowardsIt() {
        var t = topology(connectedAt: Array(repeating: 2, count: 15), limits: limits { $0.dialsInFlightMax = 8; $0.binPeersMax = 16 })
        for n in 0..<4 { t.learned(peerAt(2, 100 + n), addresses: [address(n)], nowMs: 1) }
        #expect(t.nextDials(nowMs: 1).count == 1, "15 connected + 1 picked = binPeersMax")
        t.connected(peerAt(2, 100), addresses: [], nowMs: 1)
        #expect(t.nextDials(nowMs: 1).isEmpty)
    }

    @Test func binsBelowDepthAreDialledOnlyToSaturationTheNeighbourhoodToTheMaximum() {
        // Depth 2: bins 0 and 1 filled, 4 peers beyond. Bin 0 holds 8 (saturated).
        var t = topology(connectedAt: Array(repeating: 0, count: 8) + [1, 1, 5, 6, 7, 8],
                         limits: limits { $0.dialsInFlightMax = 16 })
        #expect(t.depth == 2)
        let moreInBin0 = peerAt(0, 50), moreInBin1 = peerAt(1, 50)
        let neighbours = (0..<12).map { peerAt(5, 50 + $0) }
        for (i, p) in ([moreInBin0, moreInBin1] + neighbours).enumerated() { t.learned(p, addresses: [address(i)], nowMs: 1) }
        let picked = Set(t.nextDials(nowMs: 1).map(\.overlay))
        #expect(!picked.contains(moreInBin0), "a saturated bin below depth is not dialled")
        #expect(picked.contains(moreInBin1))
        #expect(picked.intersection(neighbours).count == 12, "the neighbourhood is dialled beyond saturation (1 + 12 < 16)")
    }

    @Test func aFullBinBelowDepthRefusesAndIsPrunedOnlyWhenItsPeersHaveOthersToTurnTo() {
        // binPeersMax 16. Depth 2; bin 0 holds 17 (one beyond the maximum), bin 1 one peer, 4 neighbours.
        var t = Topology(base: topologyBase, limits: limits { $0.binPeersMax = 16 })
        for n in 0..<17 { t.connected(peerAt(0, n), addresses: [address(n)], nowMs: UInt64(100 + n)) }
        for (i, po) in [1, 5, 6, 7, 8].enumerated() { t.connected(peerAt(po, 0), addresses: [address(50 + i)], nowMs: 1) }
        #expect(t.depth == 2)
        // A peer of our bin 0 sees us in its bin 0, with our 5 deeper peers: few to turn to.
        #expect(t.peersToPrune().isEmpty, "bin 0's peers may need us: 5 deeper peers known, fewer than 16")
        #expect(t.admits(peerAt(0, 99)), "nor is one refused")
        for n in 0..<11 { t.learned(peerAt(9, 100 + n), addresses: [address(200 + n)], nowMs: 1) }
        #expect(t.peersToPrune() == [peerAt(0, 0)], "16 deeper peers known: the least recently seen goes")
        #expect(!t.admits(peerAt(0, 99)), "and a newcomer to the full bin is refused")
        #expect(t.admits(peerAt(0, 3)), "a peer connected already")
        #expect(t.admits(peerAt(1, 99)), "bin 1 is not full")
        for n in 0..<20 { t.connected(peerAt(6, 100 + n), addresses: [], nowMs: 1) }
        #expect(t.admits(peerAt(6, 200)), "the neighbourhood is never full")
        #expect(!t.admits(topologyBase))
        t.checkInvariants()
    }

    @Test func theMaximumLeavesRoomAboveTwiceTheSaturation() {
        // Every node dials at most binPeersSaturated into a bin below depth, so bins hold twice
        // that on average; a maximum above it means some peer of a bin always has room.
        let l = TopologyLimits()
        #expect(l.binPeersMax > 2 * l.binPeersSaturated)
    }

    @Test func failedDialsBackOffStepByStepAndTheLastStepRepeats() {
        var t = Topology(base: topologyBase)
        let p = peerAt(4)
        t.learned(p, addresses: [address(1)], nowMs: 0)
        var now: UInt64 = 0
        for wait in [1_000, 10_000, 60_000, 300_000, 600_000, 600_000] as [UInt64] {
            t.dialStarted(p)
            t.dialFailed(p, nowMs: now)
            #expect(t.peer(p)?.nextDialMs == now + wait)
            #expect(t.nextDials(nowMs: now + wait - 1).isEmpty, "not before the back-off ends")
            now += wait
            #expect(t.nextDials(nowMs: now).map(\.overlay) == [p])
        }
        t.connected(p, addresses: [], nowMs: now)
        #expect(t.peer(p)?.failedDials == 0, "a connection clears the record")
        t.disconnected(p, nowMs: now)
        #expect(t.nextDials(nowMs: now).isEmpty && t.nextDials(nowMs: now + 1_000).count == 1, "one back-off step after a disconnection")
        t.checkInvariants()
    }

    @Test func anUnverifiedPeerIsForgottenAfterEnoughFailedDialsAndAVerifiedOneNever() {
        var t = Topology(base: topologyBase, limits: limits { $0.failedDialsForget = 3 })
        let gossip = peerAt(3, 1), met = peerAt(3, 2)
        t.learned(gossip, addresses: [address(1)], nowMs: 0)
        t.connected(met, addresses: [address(2)], nowMs: 0)
        t.disconnected(met, nowMs: 0)
        for _ in 0..<3 {
            t.dialFailed(gossip, nowMs: 0)
            t.dialFailed(met, nowMs: 0)
        }
        #expect(t.peer(gossip) == nil)
        #expect(t.peer(met)?.failedDials == 3)
        t.checkInvariants()
    }

    @Test func aBannedPeerIsNeitherDialledNorLearnedUntilTheBanEnds() {
        var t = Topology(base: topologyBase)
        let p = peerAt(2)
        t.learned(p, addresses: [address(1)], nowMs: 0)
        t.banned(p, untilMs: 5_000)
        #expect(t.nextDials(nowMs: 4_999).isEmpty)
        let learned2 = t.learned(p, addresses: [address(2)], nowMs: 4_999)
        #expect(!learned2)
        #expect(t.nextDials(nowMs: 5_000).map(\.overlay) == [p])
        let learned3 = t.learned(p, addresses: [address(2)], nowMs: 5_000)
        #expect(learned3)
        // A ban on a stranger is remembered, so gossip about it is refused.
        let stranger = peerAt(7)
        t.banned(stranger, untilMs: 5_000)
        let learned4 = t.learned(stranger, addresses: [address(3)], nowMs: 1)
        #expect(!learned4)
        t.checkInvariants()
    }

    // MARK: The address book

    @Test(arguments: ["", "host", ":1634", "host:", "host:0", "host:65536", "host:+80", "host:12345678", "::1:1634", "[::1]",
                      "[]:1634", "[zz::1]:1634", "a b:1634", "host:80 ", "h/st:80", String(repeating: "a", count: 250) + ".example:80"])
    func learnedRefusesAnAddressThatIsNotHostColonPort(text: String) {
        var t = Topology(base: topologyBase)
        let learned5 = t.learned(peerAt(1), addresses: [text], nowMs: 0)
        #expect(!learned5)
        #expect(t.knownCount == 0)
    }

    @Test(arguments: ["10.0.0.1:1634", "[::1]:1634", "[2001:db8::7]:65535", "node-1.example.org:1", "localhost:443"])
    func learnedAcceptsHostColonPort(text: String) {
        var t = Topology(base: topologyBase)
        let learned6 = t.learned(peerAt(1), addresses: [text], nowMs: 0)
        #expect(learned6)
        #expect(t.peer(peerAt(1))?.addresses == [text])
    }

    @Test func learnedRefusesOurOwnOverlayAndKeepsOnlyValidAddressesUpToTheBound() {
        var t = Topology(base: topologyBase)
        let learned7 = t.learned(topologyBase, addresses: [address(1)], nowMs: 0)
        #expect(!learned7)
        let many = ["junk"] + (0..<12).map(address) + [address(0)]
        let learned8 = t.learned(peerAt(5), addresses: many, nowMs: 0)
        #expect(learned8)
        #expect(t.peer(peerAt(5))?.addresses == (0..<ProtocolLimits.listenAddressesMax).map(address))
        t.checkInvariants()
    }

    @Test func gossipAddsToAVerifiedEntryButNeverReplacesItsAddresses() {
        var t = Topology(base: topologyBase)
        let p = peerAt(3)
        t.connected(p, addresses: [address(1)], nowMs: 0)
        t.learned(p, addresses: [address(9)], nowMs: 0)
        #expect(t.peer(p)?.addresses == [address(1), address(9)])
        t.learned(p, addresses: (10..<20).map(address), nowMs: 0)
        #expect(t.peer(p)?.addresses.first == address(1) && t.peer(p)?.addresses.count == ProtocolLimits.listenAddressesMax)
        // An unverified entry puts the newest hint first.
        let q = peerAt(4)
        t.learned(q, addresses: [address(1)], nowMs: 0)
        t.learned(q, addresses: [address(2)], nowMs: 0)
        #expect(t.peer(q)?.addresses == [address(2), address(1)])
    }

    @Test func aFullBookEvictsOnlyWorseUnverifiedEntriesAndNeverAConnectedOne() {
        var t = Topology(base: topologyBase, limits: limits { $0.knownPeersMax = 3 })
        let a = peerAt(1, 1), b = peerAt(2, 1), c = peerAt(3, 1), d = peerAt(4, 1)
        for (i, p) in [a, b, c].enumerated() {
            let learned9 = t.learned(p, addresses: [address(i)], nowMs: 0)
            #expect(learned9)
        }
        let learned10 = t.learned(d, addresses: [address(3)], nowMs: 0)
        #expect(!learned10, "no entry is worse than an untried hint")
        t.dialFailed(b, nowMs: 0)
        let learned11 = t.learned(d, addresses: [address(3)], nowMs: 0)
        #expect(learned11, "b failed a dial: it gives way")
        #expect(t.peer(b) == nil && t.knownCount == 3)
        // Handshakes always get in; connected peers are never evicted, even past the bound.
        for n in 0..<5 { t.connected(peerAt(6, n), addresses: [address(10 + n)], nowMs: 1) }
        #expect(t.knownCount == 5 && t.connectedCount == 5)
        let learned12 = t.learned(peerAt(7), addresses: [address(20)], nowMs: 1)
        #expect(!learned12)
        t.checkInvariants()
    }

    @Test func loadRestoresEntriesWithinTheBoundMostUsefulFirst() {
        var t = Topology(base: topologyBase, limits: limits { $0.knownPeersMax = 2 })
        let never = KnownPeer(restoring: peerAt(1), addresses: [address(1)], lastSeenMs: 0, score: 0, banUntilMs: 0)
        let seen = KnownPeer(restoring: peerAt(2), addresses: [address(2), "junk"], lastSeenMs: 10, score: 0, banUntilMs: 0)
        let good = KnownPeer(restoring: peerAt(3), addresses: [address(3)], lastSeenMs: 10, score: 9, banUntilMs: 0)
        t.load([never, seen, good, KnownPeer(overlay: topologyBase, addresses: [address(4)])])
        #expect(t.knownPeers.map(\.overlay).sorted() == [peerAt(2), peerAt(3)].sorted())
        #expect(t.peer(peerAt(2))?.verified == true && t.peer(peerAt(2))?.addresses == [address(2)])
        t.checkInvariants()
    }

    // MARK: Pruning

    @Test func pruningDropsTheExcessOfABinBelowDepthLowestScoreFirstAndNeverNeighbours() {
        var t = topology(connectedAt: Array(repeating: 0, count: 18) + [1, 2, 3, 4] + Array(repeating: 5, count: 18),
                         limits: limits { $0.binPeersMax = 16 })
        #expect(t.depth == 5)
        t.scored(peerAt(0, 7), score: -3)
        t.scored(peerAt(0, 4), score: -1)
        #expect(t.peersToPrune() == [peerAt(0, 7), peerAt(0, 4)], "bin 5 is in the neighbourhood: kept whole")
        for p in t.peersToPrune() { t.disconnected(p, nowMs: 2) }
        #expect(t.peersToPrune().isEmpty && t.depth == 5)
    }

    // MARK: Hive

    @Test func aHiveAnswerNeverNamesTheAskerAnUnverifiedOrABannedPeerAndStaysWithinItsLimit() {
        var t = topology(connectedAt: [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 5, 7])
        let asker = peerAt(3, 0)
        let gossip = peerAt(5, 9)
        t.learned(gossip, addresses: [address(1)], nowMs: 1)
        t.banned(peerAt(7, 0), untilMs: 100)
        var random = SplitMix64(seed: 1)
        let all = t.hiveAnswer(for: asker, limit: 30, nowMs: 50, random: &random)
        let named = all.map(\.overlay)
        #expect(!named.contains(asker) && !named.contains(gossip) && !named.contains(peerAt(7, 0)))
        #expect(Set(named).count == named.count)
        // The asker is a neighbour (PO 3 ≥ depth 3): our other neighbours come first, closest to it first.
        #expect(t.depth == 3)
        let neighbours = [peerAt(3, 1), peerAt(4), peerAt(5)]   // and peerAt(7), banned
        #expect(Set(named.prefix(3)) == Set(neighbours))
        #expect(named.first == peerAt(3, 1), "it shares more than 3 bits with the asker; the others exactly 3")
        // Then at most 2 per bin of the asker's table: bins 0, 1 and 2 hold 3, 3 and 2 of ours.
        #expect(named.count == 3 + 2 + 2 + 2)
        #expect(named.dropFirst(3).map { asker.proximity(to: $0) } == [0, 0, 1, 1, 2, 2])
        var random2 = SplitMix64(seed: 1)
        #expect(t.hiveAnswer(for: asker, limit: 5, nowMs: 50, random: &random2).map(\.overlay) == Array(named.prefix(5)))
        #expect(t.hiveAnswer(for: asker, limit: 0, nowMs: 50, random: &random2).isEmpty)
        // After the ban ends the peer may be named.
        var random3 = SplitMix64(seed: 1)
        #expect(t.hiveAnswer(for: asker, limit: 30, nowMs: 100, random: &random3).contains { $0.overlay == peerAt(7, 0) })
    }

    @Test func aHiveAnswerIsTheSameForTheSameSeedAndVariesWithIt() {
        let t = topology(connectedAt: Array(repeating: 0, count: 12) + Array(repeating: 1, count: 12) + [2, 3, 4, 5])
        let asker = Address32(w0: ~topologyBase.w0, w1: 0, w2: 0, w3: 0)   // PO 0: a far asker
        func answer(_ seed: UInt64) -> [OverlayAddress] {
            var random = SplitMix64(seed: seed)
            return t.hiveAnswer(for: asker, limit: 30, nowMs: 1, random: &random).map(\.overlay)
        }
        #expect(answer(7) == answer(7))
        #expect(Set((1...8).map(answer)).count > 1, "the random picks depend on the seed")
        // A far asker (PO 0) gets our bin 0 first: those peers share at least one more bit with it.
        let first = answer(7).prefix(12)
        #expect(first.allSatisfy { t.bin(of: $0) == 0 } && first.count == 12)
    }
}
