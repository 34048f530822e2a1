import ShoalCore
import Testing

private let base = Address32(w0: 0x1000, w1: 0, w2: 0, w3: 0)
private let sender = Address32(w0: 0x2000, w1: 0, w2: 0, w3: 0)

private func overlay(_ n: UInt64) -> OverlayAddress { Address32(w0: 0xabc0_0000 + n, w1: n, w2: 0, w3: 0) }

private func entry(_ n: UInt64, _ addresses: [String] = ["10.0.0.1:1634"]) -> PeerAddress {
    PeerAddress(overlay: overlay(n), addresses: addresses)
}

/// `count` distinct good entries, numbered from `from`.
private func entries(_ count: Int, from: UInt64 = 1) -> [PeerAddress] {
    (0..<UInt64(count)).map { entry(from + $0, ["10.0.\($0 / 256).\($0 % 256):1634"]) }
}

extension HiveMachine {
    /// Receives `peers` from the test sender and checks the invariants after the event.
    fileprivate mutating func receive(_ peers: [PeerAddress], at nowMs: UInt64) -> HiveOutcome {
        let outcome = peersReceived(Peers(peers: peers), from: sender, base: base, nowMs: nowMs)
        checkInvariants()
        return outcome
    }

    fileprivate mutating func request(limit: UInt16 = 30, at nowMs: UInt64) -> HiveRequestDecision {
        let decision = requestReceived(PeersRequest(limit: limit), nowMs: nowMs)
        checkInvariants()
        return decision
    }
}

@Suite struct HiveMachineTests {
    @Test func goodEntriesAreAcceptedInMessageOrder() {
        var hive = HiveMachine()
        let sent = [entry(3), entry(1, ["[::1]:1634", "node.example:1635"]), entry(2)]
        let outcome = hive.receive(sent, at: 0)
        #expect(outcome == HiveOutcome(accepted: sent))
        #expect(hive.counters.entriesAccepted == 3 && hive.counters.messagesReceived == 1)
    }

    @Test func eachDropReasonIsCountedApart() {
        var hive = HiveMachine()
        let outcome = hive.receive([
            PeerAddress(overlay: base, addresses: ["10.0.0.9:1634"]),  // us
            entry(1),
            PeerAddress(overlay: sender, addresses: ["10.0.0.8:1634"]),  // the sender itself
            entry(1, ["10.0.0.2:1634"]),  // the same overlay again
            entry(2, ["no port", "host:0", "::1:1634"]),  // nothing dialable
            entry(3),
        ], at: 0)
        #expect(outcome.accepted == [entry(1), entry(3)])
        #expect(outcome.dropped == HiveDrops(ownOverlay: 1, senderOverlay: 1, duplicate: 1, badAddress: 1))
        #expect(hive.counters.dropped == outcome.dropped)
        #expect(hive.counters.entriesReceived == 6)
    }

    @Test func anEntryKeepsOnlyItsGoodAddressesOnceEach() {
        var hive = HiveMachine()
        let outcome = hive.receive([entry(1, ["bad address:1", "a.example:1634", "a.example:1634", "[fe80::1%eth0]:1", "10.1.2.3:9"])], at: 0)
        #expect(outcome.accepted == [entry(1, ["a.example:1634", "10.1.2.3:9"])])
        #expect(outcome.addressesDropped == 3)
        #expect(outcome.dropped.total == 0)
    }

    @Test func anEntryKeepsAtMostTheListenAddressLimit() {
        let many = (1...12).map { "10.0.0.\($0):1634" }
        let kept = HiveMachine.usable(entry(1, many))
        #expect(kept?.entry.addresses == Array(many.prefix(ProtocolLimits.listenAddressesMax)))
        #expect(kept?.addressesDropped == 4)
    }

    @Test func beyond128EntriesAMinuteAreDroppedNotFaulted() {
        var hive = HiveMachine()
        var accepted = 0
        for message in 0..<5 {
            accepted += hive.receive(entries(30, from: UInt64(message) * 100), at: 1_000).accepted.count
        }
        #expect(accepted == 128)
        #expect(hive.counters.dropped.overRate == 150 - 128)
        #expect(hive.counters.entriesAccepted == 128)
    }

    @Test func theEntryBucketRefillsWithTime() {
        var hive = HiveMachine()
        for message in 0..<5 { _ = hive.receive(entries(30, from: UInt64(message) * 100), at: 0) }
        // 128 a minute: one entry every 468.75 ms.
        // By 15 s, 31 more (32 units of credit were left over at 469 ms).
        let accepted = [(1_000, 468), (2_000, 469), (3_000, 15_000), (4_000, 15_000)].map { from, at in
            hive.receive(entries(30, from: from), at: at).accepted.count
        }
        #expect(accepted == [0, 1, 30, 1])
        // A full minute of quiet refills the bucket to 128 and no more.
        var afterQuiet = 0
        for message in 0..<6 { afterQuiet += hive.receive(entries(30, from: 10_000 + UInt64(message) * 100), at: 200_000).accepted.count }
        #expect(afterQuiet == 128)
    }

    @Test func droppedEntriesDoNotSpendTheBudget() {
        var hive = HiveMachine(limits: HiveLimits(entriesPerMinuteMax: 2))
        let outcome = hive.receive([entry(1, ["x"]), PeerAddress(overlay: base, addresses: ["10.0.0.1:1"]), entry(2), entry(2), entry(3), entry(4)], at: 0)
        #expect(outcome.accepted == [entry(2), entry(3)])
        #expect(outcome.dropped == HiveDrops(ownOverlay: 1, duplicate: 1, badAddress: 1, overRate: 1))
    }

    @Test func aFifthRequestWithinAMinuteIsFlooding() {
        var hive = HiveMachine()
        let first = (0..<4).map { second in hive.request(at: UInt64(second) * 1_000) }
        #expect(first == .init(repeating: .answer(limit: 30), count: 4))
        guard case .fault(let fault) = hive.request(at: 4_000) else {
            Issue.record("a fifth request within a minute was answered")
            return
        }
        #expect(fault == .flooding("more than 4 peers requests a minute"))
        #expect(fault.dropsPeer)
        // The bucket refills a request every 15 s.
        let refilled = hive.request(at: 3_000 + 15_000)
        #expect(refilled == .answer(limit: 30))
        #expect(hive.counters.requestsReceived == 6 && hive.counters.requestsAnswered == 5)
    }

    @Test func requestsOncePerMinuteAreNeverFlooding() {
        var hive = HiveMachine()
        let decisions = (0..<100).map { minute in hive.request(at: UInt64(minute) * 60_000) }
        #expect(decisions == .init(repeating: .answer(limit: 30), count: 100))
    }

    @Test func theRequestLimitIsConfigurable() {
        var hive = HiveMachine(limits: HiveLimits(requestsPerMinuteMax: 1))
        let decisions = [0, 59_999, 60_000].map { hive.request(at: $0) }
        #expect(decisions == [.answer(limit: 30), .fault(.flooding("more than 1 peers requests a minute")), .answer(limit: 30)])
    }

    @Test func theAnswerLimitIsTheRequestsWithinHivePeersMax() {
        var hive = HiveMachine()
        let decisions = [5, 1_000, 0].map { hive.request(limit: $0, at: 0) }
        #expect(decisions == [.answer(limit: 5), .answer(limit: ProtocolLimits.hivePeersMax), .fault(.malformedRequest("peers request with limit 0"))])
    }

    @Test func aNodeAsksOnConnectingThenOnceAnInterval() {
        var hive = HiveMachine(limits: HiveLimits(requestIntervalMs: 30_000))
        #expect(hive.shouldRequest(nowMs: 5_000) && hive.nextRequestMs == 0)
        hive.requestSent(nowMs: 5_000)
        hive.checkInvariants()
        #expect(!hive.shouldRequest(nowMs: 5_000) && !hive.shouldRequest(nowMs: 34_999))
        #expect(hive.shouldRequest(nowMs: 35_000) && hive.nextRequestMs == 35_000)
        hive.requestSent(nowMs: 40_000)
        #expect(hive.nextRequestMs == 70_000 && hive.counters.requestsSent == 2)
        #expect(HiveMachine.request == PeersRequest(limit: 30))
        // The default interval is a minute.
        var byDefault = HiveMachine()
        byDefault.requestSent(nowMs: 0)
        #expect(!byDefault.shouldRequest(nowMs: 59_999) && byDefault.shouldRequest(nowMs: 60_000))
    }

    @Test func announcementsAndAnswersCarryOnlyWhatAPeerAccepts() {
        #expect(HiveMachine.announcement(of: entry(1, ["bad", "10.0.0.1:1"])) == Peers(peers: [entry(1, ["10.0.0.1:1"])]))
        #expect(HiveMachine.announcement(of: entry(1, ["bad"])) == nil)
        let candidates = [entry(1, ["bad"])] + entries(40, from: 10)
        #expect(HiveMachine.answer(candidates, limit: 3) == Peers(peers: Array(entries(40, from: 10).prefix(3))))
        #expect(HiveMachine.answer(candidates, limit: 100).peers.count == ProtocolLimits.hivePeersMax)
        #expect(HiveMachine.answer([], limit: 30) == Peers(peers: []))
    }

    @Test func theSameEventsGiveTheSameOutcomes() {
        func run(seed: UInt64) -> [HiveOutcome] {
            var random = SplitMix64(seed: seed)
            var hive = HiveMachine()
            var nowMs: UInt64 = 0
            return (0..<200).map { _ in
                nowMs += random.next() % 2_000
                let peers = (0..<Int(random.next() % 31)).map { _ in
                    let pick = random.next() % 50
                    let who = pick == 0 ? base : pick == 1 ? sender : overlay(random.next() % 64)
                    return PeerAddress(overlay: who, addresses: random.next() % 5 == 0 ? ["bad"] : ["10.0.0.\(random.next() % 9):1634"])
                }
                return hive.receive(peers, at: nowMs)
            }
        }
        let first = run(seed: 7)
        #expect(first == run(seed: 7))
        #expect(first != run(seed: 8))
        #expect(first.contains { $0.dropped.overRate > 0 } && first.contains { $0.dropped.duplicate > 0 })
    }

    @Test func aClockThatStepsBackRefillsNothing() {
        var budget = WindowBudget(capacity: 2, windowMs: 1_000)
        let taken = [10_000, 10_000, 5_000, 10_499, 10_500].map { budget.take(nowMs: $0) }
        #expect(taken == [true, true, false, false, true])
        #expect(budget.tokens == 0)
        budget.checkInvariants()
    }
}

@Suite struct HostPortTests {
    static let good: [(text: String, host: String, port: UInt16, kind: HostPort.Kind)] = [
        ("127.0.0.1:1634", "127.0.0.1", 1634, .ipv4),
        ("0.0.0.0:1", "0.0.0.0", 1, .ipv4),
        ("255.255.255.255:65535", "255.255.255.255", 65535, .ipv4),
        ("localhost:1634", "localhost", 1634, .name),
        ("node-1.example.org:443", "node-1.example.org", 443, .name),
        ("Node_2.Example:80", "Node_2.Example", 80, .name),
        ("10.0.0.1x:9", "10.0.0.1x", 9, .name),
        ("a:1", "a", 1, .name),
        ("[::1]:1634", "::1", 1634, .ipv6),
        ("[::]:1", "::", 1, .ipv6),
        ("[2001:db8::8:800:200c:417a]:1634", "2001:db8::8:800:200c:417a", 1634, .ipv6),
        ("[2001:DB8:0:0:8:800:200C:417A]:1", "2001:DB8:0:0:8:800:200C:417A", 1, .ipv6),
        ("[::ffff:192.0.2.1]:1634", "::ffff:192.0.2.1", 1634, .ipv6),
        ("[1:2:3:4:5:6:1.2.3.4]:7", "1:2:3:4:5:6:1.2.3.4", 7, .ipv6),
        ("[1:2:3:4:5:6:7::]:7", "1:2:3:4:5:6:7::", 7, .ipv6),
        ("[" + String(repeating: "abcd:", count: 7) + "abcd]:1", String(repeating: "abcd:", count: 7) + "abcd", 1, .ipv6),
        (String(repeating: "a", count: 63) + ".b:1", String(repeating: "a", count: 63) + ".b", 1, .name),
        (longName(253) + ":1634", longName(253), 1634, .name),
    ]

    static let bad: [String] = [
        "", ":", ":1634", "host", "host:", "host:0", "host:65536", "host:99999", "host:01634", "host:+1", "host:1 ",
        "host:1634:1", " host:1", "ho st:1", "host\t:1", "ho\u{0}st:1", "hö.example:1", "host/path:1", "user@host:1",
        "-host:1", "host-:1", "a..b:1", ".host:1", "host.:1", String(repeating: "a", count: 64) + ".b:1",
        longName(254) + ":1",
        "1.2.3:1", "1.2.3.4.5:1", "256.0.0.1:1", "01.2.3.4:1", "1.2.3.04:1", "example.123:1",
        "::1:1634", "[::1]", "[::1]:", "[::1]1634", "[::1:1634", "::1]:1634", "[]:1", "[:]:1", "[:::]:1",
        "[1::2::3]:1", "[1:2:3:4:5:6:7:8:9]:1", "[1:2:3:4:5:6:7]:1", "[1:2:3:4:5:6:7:8::]:1", "[12345::]:1",
        "[::g]:1", "[fe80::1%eth0]:1", "[1.2.3.4]:1", "[1.2.3.4::]:1", "[::1.2.3]:1", "[:1::]:1", "[::1] :1",
        "[example.com]:1",
    ]

    /// A dotted name of exactly `bytes` bytes, in labels of at most 63.
    static func longName(_ bytes: Int) -> String {
        var labels: [String] = []
        var left = bytes
        while left > 0 {
            let size = min(63, left - (labels.isEmpty ? 0 : 1))
            labels.append(String(repeating: "n", count: size))
            left -= size + (labels.count > 1 ? 1 : 0)
        }
        return labels.joined(separator: ".")
    }

    @Test(arguments: good.indices)
    func parsesAndRoundTrips(_ index: Int) throws {
        let row = Self.good[index]
        let parsed = try #require(HostPort.parse(row.text), "\(row.text)")
        #expect(parsed.host == row.host && parsed.port == row.port && parsed.kind == row.kind)
        #expect(parsed.description == row.text)
        #expect(HostPort.parse(parsed.description) == parsed)
    }

    @Test(arguments: bad)
    func refuses(_ text: String) {
        #expect(HostPort.parse(text) == nil, "\(text)")
    }

    @Test func theLongestNamesAreTheLimits() {
        #expect(Self.longName(253).utf8.count == 253 && Self.longName(254).utf8.count == 254)
        #expect(HostPort.hostBytesMax == 253)
    }
}
