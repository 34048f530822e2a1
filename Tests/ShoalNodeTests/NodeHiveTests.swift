import Foundation
import NIOCore
import NIOPosix
import ShoalCore
import ShoalNode
import ShoalStore
import ShoalTestSupport
import Testing

/// Hive between real nodes: peers learn of each other through a common peer and connect, and
/// a peer's gossip is bounded — bad entries dropped, entries over the rate dropped, requests
/// over the rate a fault — without stopping the node.
@Suite(.serialized)
struct NodeHiveTests {
    @Test(.timeLimit(.minutes(1)))
    func nodesThatKnowOnlyOneCommonPeerFindEachOther() async throws {
        let a = try RunningNode(name: "a")
        let addressA = try await a.start()
        let b = try RunningNode(name: "b", peers: [addressA])
        _ = try await b.start()
        let c = try RunningNode(name: "c", peers: [addressA])
        _ = try await c.start()
        try await eventually("B and C connect to each other through what A told them", within: .seconds(30)) {
            let fromB = await b.node.topology().peers.map(\.overlay)
            let fromC = await c.node.topology().peers.map(\.overlay)
            return fromB.contains(c.node.overlay.hex) && fromC.contains(b.node.overlay.hex)
        }
        let topology = await b.node.topology()
        #expect(topology.connected == 2)
        #expect(topology.peers.allSatisfy { !$0.subscribedBins.isEmpty }, "B syncs bins of each peer")
        for peer in topology.peers {
            let overlay = try #require(OverlayAddress(hex: peer.overlay))
            #expect(peer.po == Proximity.bin(of: overlay, relativeTo: b.node.overlay))
        }
        // The supervisor journalled why each bin is synced.
        // (The journal line is committed by the writer after the table changed: wait for it.)
        let subscribed = "event=subscribe peer=\(String(c.node.overlay.hex.prefix(16)))"
        let journalled = try await eventually(timeout: .seconds(10)) {
            try b.node.store.read { try $0.journal() }.map(\.entry.text).contains { $0.hasPrefix(subscribed) }
        }
        #expect(journalled)
        await c.stop()
        await b.stop()
        await a.stop()
    }

    @Test(.timeLimit(.minutes(1)))
    func gossipIsBoundedAndAFloodOfRequestsIsAFault() async throws {
        let a = try RunningNode(name: "a")
        let addressA = try await a.start()
        let port = try #require(Int(addressA.split(separator: ":").last!))
        let (configuration, connection) = try await a.dialAsRogue(seed: 91, port: port)
        var rng = SplitMix64(seed: 5)
        func randomOverlay() -> OverlayAddress { OverlayAddress(bytes: rng.bytes(32))! }
        // 40 messages of 30 entries: valid ones (1,200, far over the 128 a minute accepted),
        // the node's own overlay, the sender's own, and addresses that do not parse.
        var messages: [Message] = []
        for m in 0..<40 {
            var entries = (0..<27).map { i in PeerAddress(overlay: randomOverlay(), addresses: ["127.0.0.1:\(20_000 + m * 30 + i)"]) }
            entries.append(PeerAddress(overlay: a.node.overlay, addresses: ["127.0.0.1:1"]))
            entries.append(PeerAddress(overlay: configuration.identity.overlay, addresses: ["127.0.0.1:2"]))
            entries.append(PeerAddress(overlay: randomOverlay(), addresses: ["no port here"]))
            messages.append(.peers(Peers(peers: entries)))
        }
        let goodbye = try await connection.channel.executeThenClose { inbound, outbound -> Goodbye? in
            try await outbound.write(contentsOf: messages)
            // Still connected: gossip over the rate is dropped, not a fault. Our own request is answered.
            try await outbound.write(.peersRequest(PeersRequest(limit: 30)))
            var iterator = inbound.makeAsyncIterator()
            var answered = false
            while !answered, let message = try await iterator.next() {
                if case .peers = message { answered = true }
                if case .goodbye(let g) = message { return g }
            }
            #expect(answered, "a peers request within the rate is answered")
            // More requests in a minute than any honest peer sends: a fault.
            try await outbound.write(contentsOf: (0..<10).map { _ in Message.peersRequest(PeersRequest(limit: 30)) })
            while let message = try await iterator.next() {
                if case .goodbye(let g) = message { return g }
            }
            return nil
        }
        #expect(goodbye?.reason == .protocolViolation)
        #expect(goodbye?.message.contains("flooding") == true, "\(goodbye?.message ?? "no goodbye")")
        let topology = await a.node.topology()
        #expect(topology.known <= HiveLimits().entriesPerMinuteMax + 1, "\(topology.known) entries known: the rate bounds the book")
        #expect(topology.known >= 2, "gossip within the rate was taken")
        #expect(try a.node.status().chunks == 0, "the node still answers")
        await a.stop()
    }
}
