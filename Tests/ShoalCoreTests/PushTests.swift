import ShoalCore
import Testing

/// The push machine alone (one node): who stores, where a push goes next, what a receipt,
/// a refusal, a timeout and a disconnect do, and the bounds on what peers may keep open.
struct PushTests {
    static func overlay(_ w0: UInt64) -> OverlayAddress { RetrievalTests.overlay(w0) }
    static let base = RetrievalTests.base
    static let near = overlay(0x7000_0000_0000_0000)
    static let middle = overlay(0x6000_0000_0000_0000)
    static let far = overlay(0x1000_0000_0000_0000)

    static func machine(peers: [OverlayAddress], limits: PushLimits = PushLimits()) -> Push {
        var p = Push(base: base, limits: limits)
        for peer in peers { p.peerConnected(peer) }
        p.checkInvariants()
        return p
    }

    static func sends(_ actions: [Push.Action]) -> [(peer: OverlayAddress, ruid: UInt32, hops: UInt8)] {
        actions.compactMap { if case .send(let p, let r, _, let h) = $0 { return (p, r, h) } else { return nil } }
    }

    /// A receipt as a storer would sign it (the machine trusts the shell's check of the signature).
    static func stored(_ chunk: Chunk) -> Receipt.Stored {
        Receipt.Stored(address: chunk.address, publicKey: [UInt8](repeating: 1, count: 32), signature: [UInt8](repeating: 2, count: 64))
    }

    @Test func anUploadGoesToTheClosestPeerAndItsReceiptResolvesIt() {
        var p = Self.machine(peers: [Self.far, Self.near, Self.middle])
        let chunk = RetrievalTests.chunk(top: 0x71)
        let actions = p.push(chunk, id: 1, depth: 0, now: 0)
        p.checkInvariants()
        let send = Self.sends(actions)
        #expect(send.map(\.peer) == [Self.near])
        #expect(send.first?.hops == PushLimits().hopsMax)
        let storer = Self.overlay(0x7100_0000_0000_0000)
        let done = p.receipted(Self.stored(chunk), storer: storer, signatureValid: true, from: Self.near, ruid: send[0].ruid, depth: 0, now: 5)
        p.checkInvariants()
        #expect(done == [.resolve(id: 1, .success(PushReceipt(receipt: Self.stored(chunk), storer: storer)))])
        #expect(p.openPushes == 0 && p.nextDeadline == nil)
        #expect(p.counters.receipted == 1)
    }

    @Test func aNodeWithNoCloserPeerOrWithinTheNeighbourhoodStoresItself() {
        // No peer closer to 0x81… than the base 0x80…: the base is the closest node the path knows.
        var p = Self.machine(peers: [Self.far, Self.near])
        let close = RetrievalTests.chunk(top: 0x81)
        #expect(p.push(close, id: 1, depth: 0, now: 0) == [.store(close, origin: .local(1))])
        // A closer peer exists, but at depth 1 the base (top bit 1) is in 0xF1…'s neighbourhood.
        let inside = RetrievalTests.chunk(top: 0xF1)
        var deep = Self.machine(peers: [Self.overlay(0xF000_0000_0000_0000)])
        #expect(deep.push(inside, id: 2, depth: 1, now: 0) == [.store(inside, origin: .local(2))])
        #expect(Self.sends(deep.push(inside, id: 3, depth: 0, now: 0)).count == 1, "at depth 0 it goes to the closer peer")
        // A peer's push we are the storer for is stored, and its receipt is the shell's to sign.
        let taken = p.taken(close, from: Self.far, ruid: 9, hops: 3, depth: 0, now: 0)
        #expect(taken == [.store(close, origin: .peer(Self.far, ruid: 9))])
        p.checkInvariants()
    }

    @Test func aForwarderHandsItOnlyToCloserPeersWithOneHopLessAndPassesTheReceiptBack() {
        let pusher = Self.far
        var p = Self.machine(peers: [pusher, Self.overlay(0x8F00_0000_0000_0000)])
        let chunk = RetrievalTests.chunk(top: 0x71)
        // 0x8F… is farther from 0x71… than the base, and the pusher is not asked back: nobody to forward to.
        let refused = p.taken(chunk, from: pusher, ruid: 4, hops: 3, depth: 0, now: 0)
        p.checkInvariants()
        guard case .refuse(pusher, 4, .notStored, _)? = refused.first else {
            Issue.record("not refused: \(refused)")
            return
        }
        p.peerConnected(Self.near)
        let forward = Self.sends(p.taken(chunk, from: pusher, ruid: 5, hops: 3, depth: 0, now: 0))
        p.checkInvariants()
        #expect(forward.map(\.peer) == [Self.near])
        #expect(forward.first?.hops == 2)
        let back = p.receipted(Self.stored(chunk), storer: Self.near, signatureValid: true, from: Self.near, ruid: forward[0].ruid, depth: 0, now: 1)
        p.checkInvariants()
        #expect(back == [.pass(peer: pusher, ruid: 5, Self.stored(chunk))])
        #expect(p.counters.passed == 1)
    }

    @Test func aPushWithNoHopLeftIsRefusedUnlessItBelongsHere() {
        var p = Self.machine(peers: [Self.far, Self.near])
        let chunk = RetrievalTests.chunk(top: 0x71)
        guard case .refuse(Self.far, 1, .hopLimit, _)? = p.taken(chunk, from: Self.far, ruid: 1, hops: 0, depth: 0, now: 0).first else {
            Issue.record("a push with no hop left was not refused")
            return
        }
        let here = RetrievalTests.chunk(top: 0x81)
        #expect(p.taken(here, from: Self.far, ruid: 2, hops: 0, depth: 0, now: 0) == [.store(here, origin: .peer(Self.far, ruid: 2))])
    }

    @Test func refusalsTimeoutsAndDisconnectsMoveToTheNextPeerUntilTheAttemptsRunOut() {
        var limits = PushLimits()
        limits.originAttemptsMax = 3
        let peers = [Self.near, Self.middle, Self.overlay(0x5000_0000_0000_0000), Self.overlay(0x4000_0000_0000_0000)]
        var p = Self.machine(peers: peers, limits: limits)
        let chunk = RetrievalTests.chunk(top: 0x71)
        let first = Self.sends(p.push(chunk, id: 1, depth: 0, now: 0))
        let second = Self.sends(p.refused(by: Self.near, ruid: first[0].ruid, depth: 0, now: 1))
        p.checkInvariants()
        #expect(second.map(\.peer) == [Self.middle])
        let deadline = p.nextDeadline!
        #expect(p.tick(depth: 0, now: deadline - 1).isEmpty)
        let third = Self.sends(p.tick(depth: 0, now: deadline))
        p.checkInvariants()
        #expect(third.map(\.peer) == [peers[2]])
        #expect(p.counters.timeouts == 1)
        // The third peer goes away: the attempts are used up, and the upload hears why.
        let end = p.peerDisconnected(peers[2], depth: 0, now: deadline + 1)
        p.checkInvariants()
        #expect(end == [.resolve(id: 1, .failure(.notReceipted(tried: 3)))])
        // A receipt from the peer that timed out comes late: ignored, not a fault.
        #expect(p.receipted(Self.stored(chunk), storer: Self.middle, signatureValid: true, from: Self.middle,
                            ruid: second[0].ruid, depth: 0, now: deadline + 2).isEmpty)
        #expect(p.counters.lateReceipts == 1)
    }

    @Test func aReceiptForAnotherChunkOrWithABadSignatureIsAFaultAndTheNextPeerIsTried() {
        var p = Self.machine(peers: [Self.near, Self.middle, Self.far])
        let chunk = RetrievalTests.chunk(top: 0x71)
        let other = RetrievalTests.chunk(top: 0x72)
        let first = Self.sends(p.push(chunk, id: 1, depth: 0, now: 0))
        let wrong = p.receipted(Self.stored(other), storer: Self.near, signatureValid: true, from: Self.near, ruid: first[0].ruid, depth: 0, now: 1)
        p.checkInvariants()
        guard case .fault(Self.near, .invalidReceipt)? = wrong.first else {
            Issue.record("a receipt for another chunk was not a fault: \(wrong)")
            return
        }
        let second = Self.sends(wrong)
        #expect(second.map(\.peer) == [Self.middle])
        let forged = p.receipted(Self.stored(chunk), storer: Self.middle, signatureValid: false, from: Self.middle, ruid: second[0].ruid, depth: 0, now: 2)
        p.checkInvariants()
        guard case .fault(Self.middle, .invalidReceipt)? = forged.first else {
            Issue.record("a receipt whose signature fails was not a fault: \(forged)")
            return
        }
        #expect(Self.sends(forged).map(\.peer) == [Self.far])
        #expect(p.counters.badReceipts == 2)
        // A receipt under a request ID never issued is a fault too.
        #expect(p.receipted(Self.stored(chunk), storer: Self.far, signatureValid: true, from: Self.far, ruid: 999, depth: 0, now: 3)
                == [.fault(Self.far, .unknownRequest(999))])
    }

    @Test func aPeerCannotKeepMorePushesOpenThanItsShareAndTheTotalIsBounded() {
        var limits = PushLimits()
        limits.openPerPeerMax = 2
        limits.pushesMax = 3
        let pusher = Self.far
        var p = Self.machine(peers: [pusher, Self.near], limits: limits)
        var actions: [Push.Action] = []
        for i in 0..<3 {
            actions = p.taken(RetrievalTests.chunk(top: 0x71, seed: UInt64(i + 1)), from: pusher, ruid: UInt32(i + 1), hops: 3, depth: 0, now: 0)
            p.checkInvariants()
        }
        guard case .refuse(pusher, 3, .overloaded, _)? = actions.first else {
            Issue.record("the third open push of one peer was not refused: \(actions)")
            return
        }
        _ = p.push(RetrievalTests.chunk(top: 0x71, seed: 10), id: 1, depth: 0, now: 0)
        #expect(p.push(RetrievalTests.chunk(top: 0x71, seed: 11), id: 2, depth: 0, now: 0) == [.resolve(id: 2, .failure(.overloaded))])
        // The pusher goes away: its pushes are dropped, and their receipts come late.
        _ = p.peerDisconnected(pusher, depth: 0, now: 1)
        p.checkInvariants()
        #expect(p.openPushes == 1)
    }
}
