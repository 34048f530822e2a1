import Foundation
import Logging
import NIOCore
import NIOPosix
import ShoalCore
import ShoalStore
import ShoalTestSupport
import ShoalWire
import Testing

@testable import ShoalNode

/// The data-directory lock, peer records with the ports peers really listen on, and bans.
@Suite(.serialized)
struct NodePeerRecordTests {
    @Test func aDataDirectoryIsOpenedByOneNodeAtATime() throws {
        let a = try RunningNode(name: "lock")
        let configuration = RunningNode.configuration(a.directory, peers: [])
        #expect(throws: DataDirectoryLockError.self) { _ = try Node(configuration: configuration) }
        a.node.close()
        let again = try Node(configuration: configuration)
        again.close()
    }

    @Test(.timeLimit(.minutes(1)))
    func peersAreRecordedWithThePortsTheyListenOn() async throws {
        let a = try RunningNode(name: "a")
        let addressA = try await a.start()
        let b = try RunningNode(name: "b", peers: [addressA])
        let addressB = try await b.start()
        // Both listen on port 0; each learns the other's real port (from the hello, or as dialled).
        try await eventually("A records B", within: .seconds(20)) {
            try a.node.store.read { try $0.peer(b.node.overlay) }?.addresses == [addressB]
        }
        try await eventually("B records A", within: .seconds(20)) {
            try b.node.store.read { try $0.peer(a.node.overlay) }?.addresses.first == addressA
        }
        let record = try #require(try a.node.store.read { try $0.peer(b.node.overlay) })
        #expect(record.lastSeenMs > 0)
        #expect(record.banUntilMs == 0)
        await b.stop()
        await a.stop()
    }

    @Test(.timeLimit(.minutes(1)))
    func servingIsLimitedPerPeer() async throws {
        let a = try RunningNode(name: "a") { $0.session.sync.servedChunksPerSecondMax = 200 }
        let addressA = try await a.start()
        let chunks = SeededChunks.chunks(count: 600, seed: 21)
        for chunk in chunks { try await a.node.upload(chunk) }
        let started = ContinuousClock.now
        let b = try RunningNode(name: "b", peers: [addressA])
        _ = try await b.start()
        try await eventually("B holds A's chunks", within: .seconds(30)) { try b.node.store.count() == chunks.count }
        // 200 from the full bucket at once, then 400 at 200 a second.
        let elapsed = ContinuousClock.now - started
        #expect(elapsed >= .milliseconds(1500), "\(elapsed)")
        let waited = await a.node.peers().map(\.serveWaitedMs).reduce(0, +)
        #expect(waited >= 1000, "A's deliveries waited \(waited) ms")
        await b.stop()
        await a.stop()
    }

    @Test(.timeLimit(.minutes(1)))
    func aPeerThatBreaksTheProtocolIsBannedAndRefusedOnReturn() async throws {
        let a = try RunningNode(name: "a")
        let addressA = try await a.start()
        let port = try #require(Int(addressA.split(separator: ":").last!))
        var configuration = TransportConfiguration(identity: seededIdentity(seed: 77, networkID: a.node.configuration.networkID), epoch: 1)
        configuration.handshakeTimeout = .seconds(5)
        let rogue = Transport(configuration: configuration, group: MultiThreadedEventLoopGroup.singleton,
                              logger: RunningNode.logger("rogue"))

        // A delivery for a request A never made: a protocol violation, so A drops and bans us.
        let first = try await rogue.dial(host: "127.0.0.1", port: port)
        try await first.channel.executeThenClose { inbound, outbound in
            try await outbound.write(.chunkDelivery(ChunkDelivery(ruid: 999, chunks: [DeliveredChunk(span: 1, payload: [1])])))
            var messages = inbound.makeAsyncIterator()
            var goodbye: Goodbye?
            while goodbye == nil, let message = try await messages.next() {
                if case .goodbye(let g) = message { goodbye = g }
            }
            #expect(goodbye?.reason == .protocolViolation)
        }
        let overlay = configuration.identity.overlay
        try await eventually("the ban is recorded", within: .seconds(10)) {
            (try a.node.store.read { try $0.peer(overlay) }?.banUntilMs ?? 0) > Store.wallClockMs()
        }
        let record = try #require(try a.node.store.read { try $0.peer(overlay) })
        #expect(record.score < 0)

        // Back again: refused before anything else is said.
        let second = try await rogue.dial(host: "127.0.0.1", port: port)
        try await second.channel.executeThenClose { inbound, _ in
            var messages = inbound.makeAsyncIterator()
            let message = try await messages.next()
            guard case .goodbye(let goodbye) = message else {
                Issue.record("expected a goodbye, got \(String(describing: message))")
                return
            }
            #expect(goodbye.reason == .banned)
        }
        // Both count against the rogue's IP address, whatever identity it comes back with.
        try await eventually("two offences counted", within: .seconds(10)) { try a.node.status().connections.inbound?.counters.offences == 2 }
        await a.stop()
    }

    @Test(.timeLimit(.minutes(1)))
    func aPeerThatSendsBytesThatAreNoFrameIsDroppedBannedAndCountedAgainstItsAddress() async throws {
        let a = try RunningNode(name: "a")
        let addressA = try await a.start()
        let port = try #require(Int(addressA.split(separator: ":").last!))
        let (configuration, connection) = try await a.dialAsRogue(seed: 78, port: port)
        try await connection.channel.executeThenClose { inbound, _ in
            // A length field far over the frame limit, written beneath our own encoder.
            let channel = connection.channel.channel
            try await channel.eventLoop.submit {
                let encoder = try channel.pipeline.syncOperations.context(handlerType: MessageToByteHandler<MessageEncoder>.self)
                encoder.writeAndFlush(NIOAny(ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xF0, 1, 2, 3, 4])), promise: nil)
            }.get()
            _ = await drainUntilClosed(inbound)
        }
        let overlay = configuration.identity.overlay
        try await eventually("the ban is recorded", within: .seconds(10)) {
            (try a.node.store.read { try $0.peer(overlay) }?.banUntilMs ?? 0) > Store.wallClockMs()
        }
        try await eventually("an offence counted", within: .seconds(10)) { try a.node.status().connections.inbound?.counters.offences == 1 }
        await a.stop()
    }

    @Test(.timeLimit(.minutes(1)))
    func aPeerThatFloodsRequestsIsDroppedAsFlooding() async throws {
        let a = try RunningNode(name: "a")
        let addressA = try await a.start()
        let port = try #require(Int(addressA.split(separator: ":").last!))
        let (configuration, connection) = try await a.dialAsRogue(seed: 79, port: port)
        // Each ping on its own is fine; 20,000 at once are more than any peer needs.
        let goodbye = try await connection.channel.executeThenClose { inbound, outbound -> Goodbye? in
            try? await outbound.write(contentsOf: (0..<20_000).map { Message.ping(nonce: UInt64($0)) })
            var messages = inbound.makeAsyncIterator()
            while let message = try? await messages.next() {
                if case .goodbye(let g) = message { return g }
            }
            return nil
        }
        #expect(goodbye?.reason == .protocolViolation)
        #expect(goodbye?.message.contains("flooding") == true)
        let overlay = configuration.identity.overlay
        try await eventually("the ban is recorded", within: .seconds(10)) {
            (try a.node.store.read { try $0.peer(overlay) }?.banUntilMs ?? 0) > Store.wallClockMs()
        }
        await a.stop()
    }

    @Test(.timeLimit(.minutes(1)))
    func aPeerThatAsksForStreamInfoOverAndOverIsDroppedAsFlooding() async throws {
        let a = try RunningNode(name: "a")
        let addressA = try await a.start()
        let port = try #require(Int(addressA.split(separator: ":").last!))
        let (_, connection) = try await a.dialAsRogue(seed: 80, port: port)
        // Fewer than the request budget, but each one reads every cursor of the store.
        let goodbye = try await connection.channel.executeThenClose { inbound, outbound -> Goodbye? in
            let all = StreamInfoRequest(bins: (0..<UInt8(Proximity.binCount)).map { $0 })
            try? await outbound.write(contentsOf: (0..<200).map { _ in Message.streamInfoRequest(all) })
            var messages = inbound.makeAsyncIterator()
            while let message = try? await messages.next() {
                if case .goodbye(let g) = message { return g }
            }
            return nil
        }
        #expect(goodbye?.reason == .protocolViolation)
        #expect(goodbye?.message.contains("stream-info") == true)
        await a.stop()
    }

    @Test func beyondTheLimitTheLeastUsefulPeerRecordsAreForgotten() async throws {
        let a = try RunningNode(name: "a") { $0.peerRecordsMax = 5 }
        defer { a.node.close() }
        // 20 records: 3 peers that were worth something (score > 0), 17 strangers.
        var batch = StoreBatch()
        var expectedKept: [OverlayAddress] = []
        for i in 0..<20 {
            let overlay = seededIdentity(seed: 1000 + UInt64(i)).overlay
            let useful = i % 7 == 0  // 0, 7, 14
            let record = PeerRecord(addresses: [], lastSeenMs: 1_000 + UInt64(i), score: useful ? 5 : -10,
                                    banUntilMs: useful ? 0 : 9_999_999_999_999)
            batch.peerUpserts.append((overlay, record))
            // Kept: the three useful ones, then the two strangers seen last (18, 19).
            if useful || i >= 18 { expectedKept.append(overlay) }
        }
        // The node is not running: a writer of the test's own puts the records in.
        let writer = StoreWriter(store: a.node.store)
        _ = try await writer.apply(batch)
        writer.stop()
        #expect(try await a.node.forgetPeerRecords() == 15)
        let left = try a.node.store.read { try $0.peers() }.map(\.overlay)
        #expect(Set(left) == Set(expectedKept))
        #expect(try await a.node.forgetPeerRecords() == 0, "nothing more to forget")
    }
}
