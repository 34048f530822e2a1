import Foundation
import NIOCore
import NIOPosix
import ShoalCore
import ShoalTestSupport
import Testing

@testable import ShoalNode

/// A plain TCP connection from `source` (any address of 127.0.0.0/8) to 127.0.0.1:`port`,
/// which tells when the other side closed it.
private struct SourcedConnection {
    let channel: any Channel

    static func open(from source: String, to port: Int) async throws -> SourcedConnection {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(to: try SocketAddress(ipAddress: source, port: 0))
            .connect(host: "127.0.0.1", port: port).get()
        return SourcedConnection(channel: channel)
    }

    /// Whether the server closed the connection within `limit`.
    func closedByServer(within limit: Duration) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if !channel.isActive { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return !channel.isActive
    }

    func close() async { try? await channel.close() }
}

/// Server-side sockets of `port` that still hold a descriptor in some process, from
/// /proc/net/tcp (sockets in TIME_WAIT have none and are not counted): a connection the
/// server never closes stays here, in CLOSE_WAIT, until the process exits.
private func serverSocketsHoldingDescriptors(port: Int) throws -> Int {
    let text = try String(contentsOfFile: "/proc/net/tcp", encoding: .utf8)
    let portHex = String(format: "%04X", port)
    var count = 0
    for line in text.split(separator: "\n").dropFirst() {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count > 9 else { continue }
        let local = fields[1], state = fields[3], inode = fields[9]
        // 0A is LISTEN: the listening socket itself.
        if local.hasSuffix(":" + portHex) && state != "0A" && inode != "0" { count += 1 }
    }
    return count
}

@Suite struct InboundLimitTests {
    @Test func connectionsRefusedForTooManyHandshakesAreClosedAndGiveBackTheirDescriptors() async throws {
        // The holders must keep their slots for the whole test: a handshake timeout that ends
        // first frees a slot and admits what should be refused (a loaded ThreadSanitizer run
        // took 80 s here).
        let server = TransportNode(seed: 60) {
            $0.handshakesInFlightMax = 2
            $0.handshakeTimeout = .seconds(300)
        }
        try await withTransportTimeout(.seconds(240)) {
            let listener = try await server.transport.listen(host: "127.0.0.1", port: 0) { _ in }
            let port = listener.localPort
            // Two silent connections hold both handshake slots…
            let holders = [try await SourcedConnection.open(from: "127.0.10.1", to: port),
                           try await SourcedConnection.open(from: "127.0.10.2", to: port)]
            try await eventually("both handshakes admitted", within: .seconds(10)) { listener.status.open.handshaking == 2 }
            // …so every further connection is refused, and closed at once.
            var refused: [SourcedConnection] = []
            for i in 0..<60 { refused.append(try await SourcedConnection.open(from: "127.0.11.\(1 + i % 50)", to: port)) }
            for connection in refused {
                #expect(await connection.closedByServer(within: .seconds(5)))
            }
            #expect(listener.status.counters.refused["tooManyHandshakes"] == 60)
            for connection in refused { await connection.close() }
            for holder in holders { await holder.close() }
            // No server-side socket is left holding a descriptor.
            try await eventually("the server closed every socket", within: .seconds(15)) { try serverSocketsHoldingDescriptors(port: port) == 0 }
            try await eventually("every slot given back", within: .seconds(10)) { listener.status.open.inbound == 0 }
            await listener.shutdown()
        }
    }

    @Test func oneAddressAndOneSubnetGetOnlyTheirShare() async throws {
        let server = TransportNode(seed: 61) {
            $0.inboundLimits.perAddressMax = 3
            $0.inboundLimits.perSubnetMax = 5
            $0.handshakeTimeout = .seconds(15)
        }
        let client = TransportNode(seed: 62)
        try await withTransportTimeout(.seconds(40)) {
            let listener = try await server.transport.listen(host: "127.0.0.1", port: 0) { connection in
                try? await connection.channel.executeThenClose { _, _ in }
            }
            let port = listener.localPort
            var fromOne: [SourcedConnection] = []
            for _ in 0..<4 { fromOne.append(try await SourcedConnection.open(from: "127.0.20.1", to: port)) }
            var fromNeighbour: [SourcedConnection] = []
            for _ in 0..<3 { fromNeighbour.append(try await SourcedConnection.open(from: "127.0.20.2", to: port)) }
            let elsewhere = try await SourcedConnection.open(from: "127.0.21.1", to: port)

            try await eventually("every connection admitted or refused", within: .seconds(10)) {
                let s = listener.status
                return s.counters.admitted + s.counters.refused.values.reduce(0, +) == 8
            }
            let status = listener.status
            #expect(status.counters.refused == ["tooManyFromAddress": 1, "tooManyFromSubnet": 1])
            #expect(status.open.inbound == 6)
            #expect(status.open.addresses == 3)
            #expect(status.open.subnets == 2)
            // The refused ones are closed; the admitted ones wait in their handshake.
            var closed = 0
            for connection in fromOne + fromNeighbour + [elsewhere] where await connection.closedByServer(within: .milliseconds(500)) {
                closed += 1
            }
            #expect(closed == 2)
            #expect(await !elsewhere.closedByServer(within: .milliseconds(10)))

            // A peer from another subnet still gets through.
            let connection = try await client.transport.dial(host: "127.0.0.1", port: port)
            #expect(connection.peer.overlay == server.identity.overlay)
            try await connection.channel.executeThenClose { _, _ in }
            for c in fromOne + fromNeighbour + [elsewhere] { await c.close() }
            await listener.shutdown()
        }
    }

    @Test func anAddressThatKeepsFailingItsHandshakeIsRefusedForAWhile() async throws {
        let server = TransportNode(seed: 63) {
            $0.inboundLimits.offencesMax = 3
            $0.inboundLimits.penaltyMs = 60_000
        }
        try await withTransportTimeout(.seconds(40)) {
            let listener = try await server.transport.listen(host: "127.0.0.1", port: 0) { _ in }
            let port = listener.localPort
            // Three connections that hang up in the handshake…
            for i in 1...3 {
                let c = try await SourcedConnection.open(from: "127.0.30.1", to: port)
                try await eventually("connection \(i) admitted", within: .seconds(10)) { listener.status.counters.admitted == i }
                await c.close()
                try await eventually("offence \(i) counted", within: .seconds(10)) { listener.status.counters.offences == i }
            }
            #expect(listener.status.counters.penalties == 1)
            #expect(listener.status.open.penalized == 1)
            // …and the next one from that address is closed as it is accepted.
            let again = try await SourcedConnection.open(from: "127.0.30.1", to: port)
            #expect(await again.closedByServer(within: .seconds(5)))
            #expect(listener.status.counters.refused["penalized"] == 1)
            // Its neighbour is not punished for it.
            let neighbour = try await SourcedConnection.open(from: "127.0.30.2", to: port)
            #expect(await !neighbour.closedByServer(within: .milliseconds(500)))
            await neighbour.close()
            await again.close()
            await listener.shutdown()
        }
    }

    @Test func aFloodOfRefusalsIsLoggedAsAFewLinesAndASummary() async throws {
        let server = TransportNode(seed: 64) {
            $0.handshakesInFlightMax = 1
            $0.handshakeTimeout = .seconds(300)  // the holder keeps its slot for the whole test
            $0.logLinesPerWindow = 3
            $0.logWindowMs = 500
        }
        try await withTransportTimeout(.seconds(240)) {
            let listener = try await server.transport.listen(host: "127.0.0.1", port: 0) { _ in }
            let port = listener.localPort
            let holder = try await SourcedConnection.open(from: "127.0.40.1", to: port)
            try await eventually("the holder admitted", within: .seconds(10)) { listener.status.open.handshaking == 1 }
            for i in 0..<40 {
                let c = try await SourcedConnection.open(from: "127.0.41.\(1 + i)", to: port)
                _ = await c.closedByServer(within: .seconds(5))
            }
            #expect(listener.status.counters.refused["tooManyHandshakes"] == 40)
            // Every refusal is either told or counted in a summary, once its window is flushed.
            @Sendable func told() -> (lines: Int, summarised: Int) {
                let records = server.log.all
                return (records.count { $0.message.hasPrefix("refusing connection") },
                        records.filter { $0.metadata["log.event"] == "refused.tooManyHandshakes" }
                            .compactMap { Int($0.metadata["log.suppressed"] ?? "") }.reduce(0, +))
            }
            try await eventually("every refusal told or summarised", within: .seconds(10)) { told().lines + told().summarised == 40 }
            #expect(told().lines < 40)
            #expect(told().summarised > 0)
            await holder.close()
            await listener.shutdown()
        }
    }

    @Test(arguments: [
        ("127.0.0.1:5000", "127.0.0.1", "127.0.0.0/24"),
        ("10.1.2.3", "10.1.2.3", "10.1.2.0/24"),
        ("[::1]:1634", "0:0:0:0:0:0:0:1", "0:0:0:0::/64"),
        ("[2001:db8:aa:bb:1::2]:1", "2001:db8:aa:bb:1:0:0:2", "2001:db8:aa:bb::/64"),
        ("::ffff:192.168.7.9", "192.168.7.9", "192.168.7.0/24"),
    ])
    func remoteHostsAreGroupedByAddressAndSubnet(text: String, address: String, subnet: String) throws {
        let host = try #require(RemoteHost(describing: text))
        #expect(host.address == address)
        #expect(host.subnet == subnet)
    }

    @Test(arguments: ["", "host:1", "1.2.3:4", "[::1", "999.1.1.1:2"])
    func textThatIsNoIPAddressIsNoHost(text: String) {
        #expect(RemoteHost(describing: text) == nil)
    }
}
