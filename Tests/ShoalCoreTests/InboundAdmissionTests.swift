import ShoalCore
import Testing

private func host(_ a: UInt8, _ b: UInt8) -> RemoteHost {
    RemoteHost(address: "10.0.\(a).\(b)", subnet: "10.0.\(a).0/24")
}

private func refusal(_ d: InboundAdmission.Decision) -> InboundAdmission.Refusal? {
    if case .refused(let r) = d { return r }
    return nil
}

private func limits(_ configure: (inout InboundLimits) -> Void) -> InboundLimits {
    var l = InboundLimits()
    configure(&l)
    return l
}

@Suite struct InboundAdmissionTests {
    @Test func eachBoundRefusesWithItsOwnReason() {
        var a = InboundAdmission(limits: limits {
            $0.inboundMax = 6; $0.perAddressMax = 2; $0.perSubnetMax = 3; $0.handshakesMax = 5
        })
        var slots: [InboundAdmission.Slot] = []
        func admit(_ h: RemoteHost) -> InboundAdmission.Decision {
            let d = a.admit(h, nowMs: 0)
            if case .admitted(let s) = d { slots.append(s) }
            a.checkInvariants()
            return d
        }
        let decisions = [host(1, 1), host(1, 1), host(1, 1), host(1, 2), host(1, 3), host(2, 1), host(3, 1), host(4, 1)].map(admit)
        #expect(decisions.map(refusal) == [nil, nil, .tooManyFromAddress, nil, .tooManyFromSubnet, nil, nil, .tooManyHandshakes])
        // Established connections leave the handshake bound but still count in total.
        for s in slots { a.handshakeEnded(s, established: true) }
        let more = [host(4, 1), host(5, 1)].map(admit)
        #expect(more.map(refusal) == [nil, .tooManyInbound])
        #expect(a.counters.refused == ["tooManyFromAddress": 1, "tooManyFromSubnet": 1, "tooManyHandshakes": 1, "tooManyInbound": 1])
        // Every slot given back frees its address, subnet and total.
        for s in slots {
            a.handshakeEnded(s, established: true)  // a no-op for those established already
            a.connectionEnded(s)
        }
        a.checkInvariants()
        #expect(a.occupancy(nowMs: 0) == .init(inbound: 0, handshaking: 0, addresses: 0, subnets: 0, penalized: 0))
        #expect(refusal(admit(host(1, 1))) == nil)
    }

    @Test func aFailedHandshakeGivesItsSlotBackAndEndingTwiceChangesNothing() {
        var a = InboundAdmission(limits: limits { $0.perAddressMax = 1 })
        guard case .admitted(let slot) = a.admit(host(1, 1), nowMs: 0) else { Issue.record("refused"); return }
        let r12 = a.handshakeEnded(slot, established: false)
        #expect(r12)
        let r13 = a.handshakeEnded(slot, established: false)
        #expect(!r13)
        a.connectionEnded(slot)
        a.checkInvariants()
        guard case .admitted = a.admit(host(1, 1), nowMs: 0) else { Issue.record("refused after release"); return }
    }

    @Test func offencesWithinAWindowPenaliseAnAddressUntilThePenaltyEnds() {
        var a = InboundAdmission(limits: limits {
            $0.offencesMax = 3; $0.offenceWindowMs = 1_000; $0.penaltyMs = 5_000
        })
        let h = host(1, 1)
        let r14 = a.offence(h, nowMs: 0)
        #expect(!r14)
        let r15 = a.offence(h, nowMs: 500)
        #expect(!r15)
        let r16 = a.offence(h, nowMs: 900)
        #expect(r16)
        #expect(a.isPenalized(h, nowMs: 1_000))
        let r17 = a.admit(h, nowMs: 5_899)
        #expect(r17 == .refused(.penalized))
        let r18 = a.admit(host(1, 2), nowMs: 5_899)
        #expect(refusal(r18) == nil)
        #expect(a.occupancy(nowMs: 5_899).penalized == 1)
        // Over: admitted again, with a clean record.
        guard case .admitted = a.admit(h, nowMs: 5_900) else { Issue.record("still refused"); return }
        let r19 = a.offence(h, nowMs: 6_000)
        #expect(!r19)
        #expect(a.counters.penalties == 1)
    }

    @Test func offencesSpreadOverWindowsDoNotAddUp() {
        var a = InboundAdmission(limits: limits { $0.offencesMax = 3; $0.offenceWindowMs = 1_000 })
        let h = host(1, 1)
        for t in stride(from: UInt64(0), to: 20_000, by: 600) {
            let r20 = a.offence(h, nowMs: t)
            #expect(!r20)
        }
    }

    @Test func theOffenderTableStaysWithinItsBound() {
        var a = InboundAdmission(limits: limits { $0.offendersTrackedMax = 100; $0.offencesMax = 1_000 })
        for i in 0..<10_000 {
            a.offence(RemoteHost(address: "h\(i)", subnet: "s\(i / 256)"), nowMs: UInt64(i))
        }
        a.checkInvariants()
    }

    @Test func closingRefusesAllAndReturnsWhatWasHandshaking() {
        var a = InboundAdmission(limits: InboundLimits())
        guard case .admitted(let s1) = a.admit(host(1, 1), nowMs: 0),
              case .admitted(let s2) = a.admit(host(1, 2), nowMs: 0) else { Issue.record("refused"); return }
        a.handshakeEnded(s2, established: true)
        let r21 = a.close()
        #expect(r21 == [s1])
        let r22 = a.admit(host(1, 3), nowMs: 0)
        #expect(r22 == .refused(.closed))
        let r23 = a.handshakeEnded(s1, established: true)
        #expect(!r23)
        a.connectionEnded(s2)
        a.checkInvariants()
        #expect(a.occupancy(nowMs: 0).inbound == 0)
    }

    @Test(arguments: [1 as UInt64, 2, 3, 4, 5])
    func randomEventsKeepEveryInvariant(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var a = InboundAdmission(limits: limits {
            $0.inboundMax = 20; $0.perAddressMax = 3; $0.perSubnetMax = 6; $0.handshakesMax = 8
            $0.offencesMax = 4; $0.offendersTrackedMax = 16
        })
        var handshaking: [InboundAdmission.Slot] = []
        var established: [InboundAdmission.Slot] = []
        for step in 0..<5_000 {
            let now = UInt64(step * 7)
            switch rng.next() % 5 {
            case 0, 1:
                if case .admitted(let s) = a.admit(host(UInt8(rng.next() % 4), UInt8(rng.next() % 4)), nowMs: now) {
                    handshaking.append(s)
                }
            case 2 where !handshaking.isEmpty:
                let s = handshaking.remove(at: Int(rng.next() % UInt64(handshaking.count)))
                let ok = rng.next() % 2 == 0
                a.handshakeEnded(s, established: ok)
                if ok { established.append(s) } else { a.offence(s.host, nowMs: now) }
            case 3 where !established.isEmpty:
                a.connectionEnded(established.remove(at: Int(rng.next() % UInt64(established.count))))
            default:
                a.offence(host(UInt8(rng.next() % 8), UInt8(rng.next() % 8)), nowMs: now)
            }
            a.checkInvariants()
            #expect(a.occupancy(nowMs: now).inbound == handshaking.count + established.count)
        }
    }
}

@Suite struct EventThrottleTests {
    @Test func theFirstLinesOfAWindowAreToldAndTheRestSummedUp() {
        var t = EventThrottle(linesPerWindow: 3, windowMs: 10_000)
        let decisions = (0..<1_809).map { t.record("refused", nowMs: UInt64($0)) }
        #expect(decisions.prefix(3).allSatisfy { $0 == .log })
        #expect(decisions.dropFirst(3).allSatisfy { $0 == .suppress })
        let r24 = t.flush(nowMs: 5_000)
        #expect(r24.isEmpty, "the window is not over")
        let r25 = t.flush(nowMs: 10_001)
        #expect(r25 == [.init(key: "refused", suppressed: 1_806, windowMs: 10_001)])
        let r26 = t.flush(nowMs: 30_000)
        #expect(r26.isEmpty, "told once")
        let r27 = t.record("refused", nowMs: 30_001)
        #expect(r27 == .log)
    }

    @Test func kindsAreCountedApartAndAWindowThatEndsInRecordIsSummedUpAtTheNextFlush() {
        var t = EventThrottle(linesPerWindow: 1, windowMs: 100)
        let r28 = t.record("a", nowMs: 0)
        #expect(r28 == .log)
        let r29 = t.record("b", nowMs: 0)
        #expect(r29 == .log)
        let r30 = t.record("a", nowMs: 1)
        #expect(r30 == .suppress)
        let r31 = t.record("a", nowMs: 150)
        #expect(r31 == .log, "a new window")
        let r32 = t.flush(nowMs: 150)
        #expect(r32 == [.init(key: "a", suppressed: 1, windowMs: 150)])
    }

    @Test func windowsWithNothingLeftOutAreDroppedSilentlyAndAllFlushesEverything() {
        var t = EventThrottle(linesPerWindow: 2, windowMs: 100)
        _ = t.record("quiet", nowMs: 0)
        _ = t.record("loud", nowMs: 0)
        _ = t.record("loud", nowMs: 0)
        _ = t.record("loud", nowMs: 0)
        let r33 = t.flush(nowMs: 10, all: true)
        #expect(r33 == [.init(key: "loud", suppressed: 1, windowMs: 10)])
        #expect(t.trackedKeys == 0)
    }

    @Test func manyKindsStayWithinTheBoundAndLoseNoCount() {
        var t = EventThrottle(linesPerWindow: 0, windowMs: 1_000_000, keysMax: 10)
        for i in 0..<1_000 { _ = t.record("k\(i % 50)", nowMs: UInt64(i)) }
        #expect(t.trackedKeys <= 10)
        let r34 = t.flush(nowMs: 0, all: true)
        #expect(r34.map(\.suppressed).reduce(0, +) == 1_000)
    }
}

@Suite struct RequestBudgetTests {
    @Test func aBurstIsAllowedAndThenTheRateHolds() {
        var budget = RequestBudget(perSecond: 100, burst: 10)
        let burst = (0..<12).map { _ in budget.take(nowMs: 0) }
        #expect(burst == Array(repeating: true, count: 10) + [false, false])
        // 100 a second: one every 10 ms.
        let later = (0..<3).map { i in budget.take(nowMs: 10 + UInt64(i)) }
        #expect(later == [true, false, false])
        let refilled = (0..<11).map { _ in budget.take(nowMs: 10_000) }
        #expect(refilled.filter { $0 }.count == 10, "never more than the burst")
    }

    @Test func aClockThatGoesBackGivesNothingExtra() {
        var budget = RequestBudget(perSecond: 1000, burst: 1)
        let first = budget.take(nowMs: 5_000)
        let backwards = budget.take(nowMs: 4_000)
        #expect(first && !backwards)
    }
}
