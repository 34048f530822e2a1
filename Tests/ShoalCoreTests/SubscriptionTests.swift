import ShoalCore
import Testing

/// An overlay whose first byte is `prefix` and whose other bytes are zero.
func overlay(prefix: UInt8) -> OverlayAddress {
    Address32(w0: UInt64(prefix) << 56, w1: 0, w2: 0, w3: 0)
}

private func bins(_ range: ClosedRange<UInt8>) -> [UInt8] { Array(range) }

@Suite struct SubscriptionTests {
    // MARK: The plan

    @Test(arguments: [
        (1, 3, 0, [1]),               // below depth: its own bin
        (3, 3, 0, bins(3...31)),      // at depth: a neighbour, every bin ≥ depth
        (5, 3, 0, bins(3...31)),
        (0, 0, 0, bins(0...31)),      // depth 0: everyone is a neighbour
        (5, 3, 4, bins(4...31)),      // a radius above depth: only bins we keep
        (4, 2, 6, [4]),               // a neighbour below the radius: its own bin
        (2, 3, 1, [2]),               // a radius below depth changes nothing
        (31, 31, 0, [31]),
        (0, 0, 31, [0]),              // a radius at the last bin: every peer's own bin still
        (31, 0, 31, [31]),
        (6, 3, 32, []),               // a radius past the last bin keeps nothing (a light node)
        (31, 31, 32, []),
        (6, 3, 40, []),
    ] as [(Int, Int, Int, [UInt8])])
    func theBinsAPeerGivesFollowFromItsPODepthAndRadius(peerBin: Int, depth: Int, radius: Int, expected: [UInt8]) {
        #expect(SubscriptionPlan.bins(peerBin: peerBin, depth: depth, radius: radius) == expected)
    }

    /// The PO arithmetic the plan rests on, checked on real addresses: a chunk in bin `b` of a
    /// peer at PO `p` is at our PO `b` (b < p), `p` (b > p) or above `p` (b == p); so every
    /// bin the plan subscribes holds only chunks at our PO ≥ max(depth, radius), and for a
    /// neighbour every bin it leaves out holds none.
    @Test func everySubscribedBinHoldsOnlyChunksWeKeepAndEveryOmittedOneNone() {
        var random = SplitMix64(seed: 20)
        let base = Address32(bytes: random.bytes(32))!
        for p in 0..<14 {
            let peer = base.sharing(p, seed: random.next())
            for b in 0..<Proximity.binCount {
                let pos = (0..<6).map { _ in base.proximity(to: peer.sharing(b, seed: random.next())) }
                if b < p { #expect(pos.allSatisfy { $0 == b }) }
                if b > p { #expect(pos.allSatisfy { $0 == p }) }
                if b == p { #expect(pos.allSatisfy { $0 > p }) }
                for (depth, radius) in [(0, 0), (3, 0), (6, 0), (3, 5), (5, 9)] {
                    let floor = max(depth, radius)
                    let planned = SubscriptionPlan.bins(peerBin: p, depth: depth, radius: radius).contains(UInt8(b))
                    if planned && b != p { #expect(pos.allSatisfy { $0 >= floor }, "p \(p) b \(b) depth \(depth) radius \(radius)") }
                    if !planned && p >= floor { #expect(pos.allSatisfy { $0 < floor }, "p \(p) b \(b) depth \(depth) radius \(radius)") }
                }
            }
        }
    }

    // MARK: Reconciliation

    /// The example of Docs/Topology.md: our overlay starts with 0x69 (0110 1001), and seven
    /// peers at PO 0…6.
    @Test func theWorkedExampleJournalsExactlyWhatDocsTopologyShows() {
        let base = overlay(prefix: 0x69)
        let peers: [(String, UInt8, Int)] = [("A", 0xe1, 0), ("B", 0x2c, 1), ("C", 0x5a, 2), ("D", 0x7f, 3),
                                              ("E", 0x63, 4), ("F", 0x6e, 5), ("G", 0x6b, 6)]
        var t = Topology(base: base)
        for (_, prefix, po) in peers {
            #expect(t.bin(of: overlay(prefix: prefix)) == po)
            t.connected(overlay(prefix: prefix), addresses: ["10.0.0.\(prefix):1634"], nowMs: 1_000)
        }
        #expect(t.depth == 3)
        var r = SubscriptionReconciler()
        let neighbourhood3 = "3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31"
        #expect(r.reconcile(topology: t, radius: 0).journalLines == [
            "event=reconcile depth=0->3 radius=0->0 connected=7",
            "event=subscribe peer=2c00000000000000 po=1 bins=1 reason=bin-equals-po",
            "event=subscribe peer=5a00000000000000 po=2 bins=2 reason=bin-equals-po",
            "event=subscribe peer=6300000000000000 po=4 bins=\(neighbourhood3) reason=neighbour",
            "event=subscribe peer=6b00000000000000 po=6 bins=\(neighbourhood3) reason=neighbour",
            "event=subscribe peer=6e00000000000000 po=5 bins=\(neighbourhood3) reason=neighbour",
            "event=subscribe peer=7f00000000000000 po=3 bins=\(neighbourhood3) reason=neighbour",
            "event=subscribe peer=e100000000000000 po=0 bins=0 reason=bin-equals-po",
        ])
        #expect(r.reconcile(topology: t, radius: 0).isEmpty, "nothing changed, nothing to journal")

        // G, the deepest neighbour, goes: 3 peers are left at PO ≥ 3, so depth drops to 2.
        t.disconnected(overlay(prefix: 0x6b), nowMs: 2_000)
        #expect(t.depth == 2)
        let drop = r.reconcile(topology: t, radius: 0)
        #expect(drop.journalLines == [
            "event=reconcile depth=3->2 radius=0->0 connected=6",
            "event=subscribe peer=5a00000000000000 po=2 bins=\(neighbourhood3) reason=neighbour",
            "event=subscribe peer=6300000000000000 po=4 bins=2 reason=depth-changed",
            "event=disconnect peer=6b00000000000000 po=6 bins=\(neighbourhood3) reason=disconnected",
            "event=subscribe peer=6e00000000000000 po=5 bins=2 reason=depth-changed",
            "event=subscribe peer=7f00000000000000 po=3 bins=2 reason=depth-changed",
        ])
        #expect(drop.changes.map(\.peer) == drop.changes.map(\.peer).sorted())
        #expect(r.current[overlay(prefix: 0x5a)] == bins(2...31))
        #expect(r.current[overlay(prefix: 0x6b)] == nil)
        r.checkInvariants()
    }

    @Test func depthRisingSendsAPeerBackToItsOwnBin() {
        var t = topology(connectedAt: [0, 1, 2, 3, 4, 5])
        var r = SubscriptionReconciler()
        _ = r.reconcile(topology: t, radius: 0)
        #expect(t.depth == 2 && r.current[peerAt(2)] == bins(2...31))
        t.connected(peerAt(6), addresses: [address(6)], nowMs: 2)
        let rise = r.reconcile(topology: t, radius: 0)
        #expect((rise.oldDepth, rise.newDepth) == (2, 3))
        let c2 = rise.changes.first { $0.peer == peerAt(2) }
        #expect(c2 == .init(peer: peerAt(2), peerBin: 2, subscribe: [], cancel: bins(3...31), reason: "left-neighbourhood"))
        let c4 = rise.changes.first { $0.peer == peerAt(4) }
        #expect(c4 == .init(peer: peerAt(4), peerBin: 4, subscribe: [], cancel: [2], reason: "depth-changed"))
        let c6 = rise.changes.first { $0.peer == peerAt(6) }
        #expect(c6 == .init(peer: peerAt(6), peerBin: 6, subscribe: bins(3...31), cancel: [], reason: "neighbour"))
        #expect(rise.journalLines.contains("event=cancel peer=\(JournalLine.peerToken(peerAt(2))) po=2 bins=\(JournalLine.binList(bins(3...31))) reason=left-neighbourhood"))
    }

    @Test func aRadiusAboveDepthCancelsTheBinsWeWouldNotKeep() {
        let t = topology(connectedAt: [0, 1, 2, 3, 4, 5])
        var r = SubscriptionReconciler()
        _ = r.reconcile(topology: t, radius: 0)
        let raised = r.reconcile(topology: t, radius: 4)
        #expect((raised.oldRadius, raised.newRadius, raised.oldDepth, raised.newDepth) == (0, 4, 2, 2))
        #expect(raised.changes.map(\.reason) == Array(repeating: "radius-changed", count: 4))
        #expect(raised.changes.first { $0.peer == peerAt(3) }?.cancel == [2] + bins(4...31), "PO 3 < radius: bin 3 alone")
        #expect(raised.changes.first { $0.peer == peerAt(5) }?.cancel == [2, 3])
        #expect(raised.journalLines.first == "event=reconcile depth=2->2 radius=0->4 connected=6")
        #expect(r.current[peerAt(5)] == bins(4...31) && r.current[peerAt(3)] == [3] && r.current[peerAt(1)] == [1])
    }

    /// A light node syncs by a radius that keeps nothing: no peer gives a bin, whatever its PO
    /// or depth; a node whose radius comes to keep nothing cancels every bin, and one whose
    /// radius stops doing so subscribes them again, each journalled as a radius change.
    @Test func aRadiusThatKeepsNothingSubscribesNoBinFromAnyPeer() {
        var t = topology(connectedAt: [0, 1, 2, 3, 4, 5])
        var light = SubscriptionReconciler()
        let first = light.reconcile(topology: t, radius: SubscriptionPlan.keepsNothing)
        #expect(first.changes == [] && light.current.isEmpty)
        #expect(first.journalLines == ["event=reconcile depth=0->2 radius=0->32 connected=6"])
        t.connected(peerAt(6), addresses: [address(6)], nowMs: 2)
        let more = light.reconcile(topology: t, radius: SubscriptionPlan.keepsNothing)
        #expect(more.changes == [] && light.current.isEmpty, "a newcomer gives nothing either")
        light.checkInvariants()

        var r = SubscriptionReconciler()
        _ = r.reconcile(topology: t, radius: 0)
        let before = r.current
        let off = r.reconcile(topology: t, radius: SubscriptionPlan.keepsNothing)
        #expect(r.current.isEmpty)
        #expect(off.changes.count == t.connected.count)
        #expect(off.changes.allSatisfy { $0.subscribe == [] && $0.cancel == before[$0.peer] && $0.reason == "radius-changed" })
        let on = r.reconcile(topology: t, radius: 0)
        #expect(r.current == before)
        #expect(on.changes.allSatisfy { $0.cancel == [] && $0.subscribe == before[$0.peer] && $0.reason == "radius-changed" })
        r.checkInvariants()
    }

    /// Random connects, disconnects, dials, gossip and bans: after every step the table and
    /// the reconciler hold their invariants, the reconciler's plan is the one `SubscriptionPlan`
    /// gives for every connected peer, and its changes turn the old plan into the new one.
    @Test(arguments: 1...12 as ClosedRange<UInt64>)
    func invariantsHoldOverRandomSequences(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let base = Address32(bytes: random.bytes(32))!
        var l = TopologyLimits()
        l.knownPeersMax = 24
        l.failedDialsForget = 3
        var t = Topology(base: base, limits: l)
        var r = SubscriptionReconciler()
        // Mostly shallow bins, like a real network: PO ~ the leading zeros of a random word.
        let pool = (0..<40).map { _ in base.sharing(min((random.next() | 1).leadingZeroBitCount, 12), seed: random.next()) }
        var now: UInt64 = 0
        var deepest = 0
        for step in 0..<300 {
            now += random.next() % 3_000
            let peer = pool[Int(random.next() % UInt64(pool.count))]
            switch random.next() % 8 {
            case 0, 1: t.connected(peer, addresses: [address(Int(random.next() % 500))], nowMs: now)
            case 2, 3: t.disconnected(peer, nowMs: now)
            case 4: t.learned(peer, addresses: random.next() % 4 == 0 ? ["bad"] : [address(step)], nowMs: now)
            case 5: for p in t.nextDials(nowMs: now) { t.dialStarted(p.overlay) }
            case 6: t.dialFailed(peer, nowMs: now)
            default: t.banned(peer, untilMs: now + random.next() % 10_000)
            }
            t.checkInvariants()
            let dials = t.nextDials(nowMs: now)
            #expect(dials.count <= l.dialsInFlightMax - t.diallingCount)
            #expect(dials.allSatisfy { !t.isConnected($0.overlay) && !t.isDialling($0.overlay) && !$0.isBanned(nowMs: now) })
            let depth = t.depth
            deepest = max(deepest, depth)
            #expect(t.peersToPrune().allSatisfy { t.isConnected($0) && t.bin(of: $0) < depth })

            let before = r.current
            // Now and then a radius that keeps nothing, as a light node's.
            let radius = [0, 1, 2, SubscriptionPlan.keepsNothing][Int(random.next() % 4)]
            let result = r.reconcile(topology: t, radius: radius)
            r.checkInvariants()
            #expect(r.current.keys.sorted() == (radius < SubscriptionPlan.keepsNothing ? t.connected : []), "seed \(seed) step \(step)")
            for (p, planned) in r.current {
                #expect(planned == SubscriptionPlan.bins(peerBin: t.bin(of: p), depth: depth, radius: r.radius))
            }
            var applied = before
            for c in result.changes {
                let kept = (applied[c.peer] ?? []).filter { !c.cancel.contains($0) }
                let after = (kept + c.subscribe).sorted()
                applied[c.peer] = c.reason == "disconnected" || after.isEmpty ? nil : after
            }
            #expect(applied == r.current, "seed \(seed) step \(step): the changes do not lead to the new plan")
            #expect(result.journalLines.allSatisfy { JournalLine(parsing: $0) != nil })
        }
        #expect(deepest >= 1, "seed \(seed): the sequence never built a neighbourhood")
    }
}
