import Foundation
import NIOCore
import NIOPosix
import ShoalCore
import ShoalWire
import Testing

@testable import ShoalNode

/// Two transports over real sockets on 127.0.0.1: TLS 1.3 with each node's certificate, the
/// hello exchange, framed messages; and what happens to peers that get it wrong.
struct TransportConnectionTests {
    @Test func listenAndDialEstablishBothWaysAndCarryFramesOverTLS() async throws {
        let server = TransportNode(seed: 10, epoch: 11)
        let client = TransportNode(seed: 20, epoch: 22)
        try await withTransportTimeout {
            let (inboundPeers, inboundPeer) = AsyncStream.makeStream(of: PeerInfo.self)
            let (received, receivedMessage) = AsyncStream.makeStream(of: Message.self)
            let listener = try await server.transport.listen(host: "127.0.0.1", port: 0) { connection in
                inboundPeer.yield(connection.peer)
                try? await connection.channel.executeThenClose { inbound, outbound in
                    for try await message in inbound {
                        receivedMessage.yield(message)
                        if case .ping(let nonce) = message { try await outbound.write(.pong(nonce: nonce)) }
                    }
                }
            }
            #expect(listener.localPort > 0)

            let connection = try await client.transport.dial(host: "127.0.0.1", port: listener.localPort)
            #expect(connection.peer.overlay == server.identity.overlay)
            #expect(connection.peer.publicKey == server.identity.publicKey)
            #expect(connection.peer.epoch == 11)
            #expect(connection.peer.outbound)
            #expect(connection.peer.listenAddresses == ["127.0.0.1:1010"])
            #expect(connection.peer.agent == "shoal/0.1")
            #expect(connection.peer.remoteAddress == "127.0.0.1:\(listener.localPort)")

            var peers = inboundPeers.makeAsyncIterator()
            let seenByServer = try #require(await peers.next())
            #expect(seenByServer.overlay == client.identity.overlay)
            #expect(seenByServer.publicKey == client.identity.publicKey)
            #expect(seenByServer.epoch == 22)
            #expect(!seenByServer.outbound)
            #expect(seenByServer.remoteAddress.hasPrefix("127.0.0.1:"))

            try await connection.channel.executeThenClose { inbound, outbound in
                try await outbound.write(.ping(nonce: 42))
                var replies = inbound.makeAsyncIterator()
                #expect(try await replies.next() == .pong(nonce: 42))
            }
            var messages = received.makeAsyncIterator()
            #expect(await messages.next() == .ping(nonce: 42))

            await listener.shutdown()
        }
        #expect(server.log.all.allSatisfy { $0.metadata["handshake.failure"] == nil }, "\(server.log.all)")
    }

    @Test func framesSentRightAfterTheHandshakeAreAllDelivered() async throws {
        let server = TransportNode(seed: 11)
        let client = TransportNode(seed: 21)
        let count = 500
        try await withTransportTimeout {
            let (received, receivedNonces) = AsyncStream.makeStream(of: [UInt64].self)
            let listener = try await server.transport.listen(host: "127.0.0.1", port: 0) { connection in
                var nonces: [UInt64] = []
                try? await connection.channel.executeThenClose { inbound, _ in
                    for try await message in inbound {
                        if case .ping(let nonce) = message { nonces.append(nonce) }
                        if nonces.count == count { break }
                    }
                }
                receivedNonces.yield(nonces)
            }
            let connection = try await client.transport.dial(host: "127.0.0.1", port: listener.localPort)
            try await connection.channel.executeThenClose { inbound, outbound in
                for nonce in 0..<UInt64(count) { try await outbound.write(.ping(nonce: nonce)) }
                // Wait for the server to close: it has read everything then.
                for try await _ in inbound {}
            }
            var iterator = received.makeAsyncIterator()
            #expect(await iterator.next() == Array(0..<UInt64(count)))
            await listener.shutdown()
        }
    }

    @Test func aPeerOnAnotherNetworkIsRefusedOnBothSides() async throws {
        let server = TransportNode(seed: 12, networkID: 7)
        let client = TransportNode(seed: 22, networkID: 8)
        let accepted = AcceptedPeers()
        try await withTransportTimeout {
            let listener = try await server.transport.listen(host: "127.0.0.1", port: 0) { connection in
                accepted.append(connection.peer)
            }
            let error = await #expect(throws: HandshakeError.self) {
                _ = try await client.transport.dial(host: "127.0.0.1", port: listener.localPort)
            }
            #expect(error?.code == .wrongNetwork)
            #expect(error?.message.contains("network 7") == true, "\(String(describing: error))")

            let record = await server.log.handshakeFailure(.wrongNetwork)
            #expect(record != nil, "\(server.log.all)")
            #expect(record?.metadata["peer.address"]?.hasPrefix("127.0.0.1:") == true)
            #expect(record?.metadata["handshake.direction"] == "inbound")
            await listener.shutdown()
        }
        #expect(accepted.all.isEmpty)
    }

    @Test func aTLSClientThatNeverSaysHelloIsClosedAfterTheHandshakeTimeout() async throws {
        // Long enough for TLS to finish on a loaded machine (under ThreadSanitizer, with the
        // whole suite running, 300 ms was not), short enough to wait out.
        let server = TransportNode(seed: 13) { $0.handshakeTimeout = .seconds(2) }
        let silent = TransportNode(seed: 23)
        let accepted = AcceptedPeers()
        try await withTransportTimeout {
            let listener = try await server.transport.listen(host: "127.0.0.1", port: 0) { connection in
                accepted.append(connection.peer)
            }
            // The server's timer starts after it accepted, so after this instant.
            let connecting = ContinuousClock.now
            let channel = try await rawTLSConnection(using: silent, port: listener.localPort)
            let (messages, _) = try await channel.executeThenClose { inbound, _ in await drainUntilClosed(inbound) }
            let closedAfter = ContinuousClock.now - connecting

            // TLS completed (the server's hello came through it), then nothing until the timeout.
            guard case .hello(let hello)? = messages.first else {
                Issue.record("expected the server's hello first: \(messages)")
                return
            }
            #expect(hello.overlay == server.identity.overlay)
            if case .goodbye(let goodbye)? = messages.last {
                #expect(goodbye.message.contains("timeout"))
            } else {
                Issue.record("expected a goodbye before the close: \(messages)")
            }
            #expect(closedAfter >= .milliseconds(1950), "closed after \(closedAfter)")
            #expect(closedAfter < .seconds(8), "closed after \(closedAfter)")

            let record = await server.log.handshakeFailure(.timeout)
            #expect(record != nil, "\(server.log.all)")
            await listener.shutdown()
        }
        #expect(accepted.all.isEmpty)
    }

    @Test func plaintextGarbageIsClosedAndTheListenerKeepsServing() async throws {
        let server = TransportNode(seed: 14)
        let client = TransportNode(seed: 24)
        try await withTransportTimeout {
            let listener = try await server.transport.listen(host: "127.0.0.1", port: 0) { connection in
                try? await connection.channel.executeThenClose { inbound, _ in for try await _ in inbound {} }
            }
            for garbage in ["GET / HTTP/1.1\r\nHost: x\r\n\r\n", String(repeating: "\u{0}", count: 4096)] {
                let channel = try await rawTCPConnection(port: listener.localPort)
                let (_, closedAfter) = try await channel.executeThenClose { inbound, outbound in
                    try await outbound.write(ByteBuffer(string: garbage))
                    return await drainUntilClosed(inbound)
                }
                #expect(closedAfter < .seconds(5))
            }
            let record = await server.log.handshakeFailure(.tlsFailed)
            #expect(record != nil, "\(server.log.all)")

            // Still accepting, and still completing handshakes.
            let connection = try await client.transport.dial(host: "127.0.0.1", port: listener.localPort)
            #expect(connection.peer.overlay == server.identity.overlay)
            try await connection.channel.executeThenClose { _, _ in }
            await listener.shutdown()
        }
    }

    @Test func aNodeDiallingItselfIsRefused() async throws {
        let node = TransportNode(seed: 15)
        let accepted = AcceptedPeers()
        try await withTransportTimeout {
            let listener = try await node.transport.listen(host: "127.0.0.1", port: 0) { connection in
                accepted.append(connection.peer)
            }
            let error = await #expect(throws: HandshakeError.self) {
                _ = try await node.transport.dial(host: "127.0.0.1", port: listener.localPort)
            }
            #expect(error?.code == .selfConnection)
            #expect(await node.log.handshakeFailure(.selfConnection) != nil)
            await listener.shutdown()
        }
        #expect(accepted.all.isEmpty)
    }

    @Test func diallingAPortNobodyListensOnIsAConnectFailure() async throws {
        let node = TransportNode(seed: 16)
        try await withTransportTimeout {
            // A port that was just free: bind, note it, close.
            let probe = try await node.transport.listen(host: "127.0.0.1", port: 0) { _ in }
            let port = probe.localPort
            await probe.shutdown()
            let error = await #expect(throws: TransportError.self) {
                _ = try await node.transport.dial(host: "127.0.0.1", port: port)
            }
            #expect(error?.code == .connectFailed)
        }
    }

    @Test func closingTheListenerStopsAcceptingAndShutdownEndsItsConnections() async throws {
        let server = TransportNode(seed: 17)
        let client = TransportNode(seed: 27)
        try await withTransportTimeout {
            let (ended, handlerEnded) = AsyncStream.makeStream(of: Void.self)
            let listener = try await server.transport.listen(host: "127.0.0.1", port: 0) { connection in
                try? await connection.channel.executeThenClose { inbound, outbound in
                    for try await message in inbound {
                        if case .ping(let nonce) = message { try await outbound.write(.pong(nonce: nonce)) }
                    }
                }
                handlerEnded.yield()
            }
            let connection = try await client.transport.dial(host: "127.0.0.1", port: listener.localPort)
            try await connection.channel.executeThenClose { inbound, outbound in
                var replies = inbound.makeAsyncIterator()
                try await outbound.write(.ping(nonce: 1))
                #expect(try await replies.next() == .pong(nonce: 1))

                // Closed: nothing new is accepted, but the established connection still works.
                await listener.close()
                await #expect(throws: TransportError.self) {
                    _ = try await client.transport.dial(host: "127.0.0.1", port: listener.localPort)
                }
                try await outbound.write(.ping(nonce: 2))
                #expect(try await replies.next() == .pong(nonce: 2))

                // Shut down: the connection's handler is cancelled, and the client sees the end.
                await listener.shutdown()
                var endedIterator = ended.makeAsyncIterator()
                await endedIterator.next()
                let start = ContinuousClock.now
                do { while try await replies.next() != nil {} } catch {}
                #expect(ContinuousClock.now - start < .seconds(5))
            }
        }
    }

    @Test func closingTheListenerEndsHandshakesInProgress() async throws {
        let server = TransportNode(seed: 19) { $0.handshakeTimeout = .seconds(10) }
        let silent = TransportNode(seed: 29)
        let accepted = AcceptedPeers()
        try await withTransportTimeout {
            let listener = try await server.transport.listen(host: "127.0.0.1", port: 0) { connection in
                accepted.append(connection.peer)
            }
            let channel = try await rawTLSConnection(using: silent, port: listener.localPort)
            let closedAfter = try await channel.executeThenClose { inbound, _ in
                var messages = inbound.makeAsyncIterator()
                guard case .hello? = try await messages.next() else {
                    Issue.record("expected the server's hello")
                    return Duration.zero
                }
                // The server waits for our hello (10 s); closing the listener must not.
                let start = ContinuousClock.now
                await listener.close()
                do { while try await messages.next() != nil {} } catch {}
                return ContinuousClock.now - start
            }
            #expect(closedAfter < .seconds(5), "closed after \(closedAfter)")
            await listener.waitForConnections()
        }
        #expect(accepted.all.isEmpty)
    }

    @Test func connectionsBeyondTheHandshakeLimitAreClosedAtOnce() async throws {
        let server = TransportNode(seed: 30) {
            $0.handshakesInFlightMax = 1
            $0.handshakeTimeout = .seconds(10)
        }
        let client = TransportNode(seed: 31)
        try await withTransportTimeout {
            let listener = try await server.transport.listen(host: "127.0.0.1", port: 0) { connection in
                try? await connection.channel.executeThenClose { _, _ in }
            }
            // One silent TLS client holds the only handshake slot…
            let silent = try await rawTLSConnection(using: client, port: listener.localPort)
            try await silent.executeThenClose { inbound, _ in
                var messages = inbound.makeAsyncIterator()
                guard case .hello? = try await messages.next() else {
                    Issue.record("expected the server's hello")
                    return
                }
                // …so a second connection is refused without waiting for any timeout.
                let start = ContinuousClock.now
                await #expect(throws: HandshakeError.self) {
                    _ = try await client.transport.dial(host: "127.0.0.1", port: listener.localPort)
                }
                #expect(ContinuousClock.now - start < .seconds(5))
                #expect(await server.log.first { $0.message.contains("too many handshakes") } != nil)
            }
            // The slot is free again once the server has seen the silent client go.
            #expect(await server.log.first { $0.message == "inbound handshake failed" } != nil)
            let connection = try await client.transport.dial(host: "127.0.0.1", port: listener.localPort)
            #expect(connection.peer.overlay == server.identity.overlay)
            try await connection.channel.executeThenClose { _, _ in }
            await listener.shutdown()
        }
    }

    @Test func anInvalidConfigurationIsRefusedBeforeAnySocketIsOpened() async throws {
        let node = TransportNode(seed: 18) { $0.advertisedAddresses = Array(repeating: "127.0.0.1:1", count: 9) }
        let error = await #expect(throws: TransportError.self) {
            _ = try await node.transport.listen(host: "127.0.0.1", port: 0) { _ in }
        }
        #expect(error?.code == .invalidConfiguration)
    }
}
