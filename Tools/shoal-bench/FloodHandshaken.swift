import Locking
import Logging
import NIOCore
import NIOPosix
import ShoalCore
import ShoalNode
import ShoalWire

/// Hostile clients that complete TLS and the hello, with the node's own `Transport.dial` and a
/// fresh `NodeIdentity` each time, then misbehave.
///
/// `Transport.dial` picks no source address, so each client dials a relay of its own on
/// 127.0.0.1, which connects to the victim from the client's address (127.0.1.x) and copies
/// bytes both ways: the victim sees the hostile source address, TLS runs end to end.
enum HandshakenFlood {
    enum Kind: Sendable {
        /// Maximum-size `ChunkDelivery` frames for requests never made.
        case unsolicitedDeliveries
        /// Valid `GetRange` requests, fresh request IDs, half of them live.
        case rangeRequests
        case streamInfoRequests
        /// Random bytes beneath the frame codec, through TLS.
        case garbage
    }

    static let quiet = Logger(label: "shoal-bench.flood") { _ in SwiftLogNoOpLogHandler() }

    /// One client: dials, misbehaves until the victim closes the connection or the flood ends,
    /// and dials again with a new identity.
    static func client(index: Int, kind: Kind, relayPort: Int, control: FloodControl, seed: UInt64) async -> FloodTally {
        var tally = FloodTally()
        var droppedBefore = false
        var rng = SplitMix64(seed: derivedSeed(seed, UInt64(index)))
        let noise = rng.bytes(1 << 20)
        let delivery = Message.chunkDelivery(ChunkDelivery(
            ruid: UInt32.max - UInt32(index),
            chunks: (0..<ProtocolLimits.deliveryChunksMax).map { i in
                DeliveredChunk(span: UInt64(Chunk.payloadMax), payload: Array(noise[(i * 4096)..<(i * 4096 + Chunk.payloadMax)]))
            }))
        while !control.stopped {
            let identity = NodeIdentity.generate(networkID: 7)
            let transport = Transport(configuration: TransportConfiguration(identity: identity, epoch: 1),
                                      group: MultiThreadedEventLoopGroup.singleton, logger: quiet)
            tally.connects += 1
            if droppedBefore { tally.returns += 1 }
            let dialled = monotonicSeconds()
            let connection: EstablishedConnection
            do {
                connection = try await transport.dial(host: "127.0.0.1", port: relayPort)
            } catch {
                // Refused at accept or closed during the handshake (the relay turns a refused
                // TCP connect into a closed one). Not counted as an offence.
                let seconds = monotonicSeconds() - dialled
                if tally.refused == 0 && index < 4 { Output.note("flood: client \(index): first dial failed after \(Int(seconds * 1000)) ms: \(error)") }
                tally.refused += 1
                if tally.refuseMs.count < FloodTally.samplesMax { tally.refuseMs.append(seconds * 1000) }
                if droppedBefore {
                    tally.returnsRefused += 1
                    if tally.returnRefuseMs.count < FloodTally.samplesMax { tally.returnRefuseMs.append(seconds * 1000) }
                }
                if !control.stopped { try? await Task.sleep(for: .milliseconds(20)) }
                continue
            }
            tally.established += 1
            let outcome = await misbehave(connection, kind: kind, noise: noise, delivery: delivery, control: control)
            tally.bytesWritten += outcome.bytes
            if let closedAfter = outcome.closedAfterSeconds {
                tally.dropped += 1
                if tally.dropMs.count < FloodTally.samplesMax { tally.dropMs.append(closedAfter * 1000) }
                droppedBefore = true
            } else {
                tally.survived += 1
            }
        }
        return tally
    }

    private struct Outcome: Sendable {
        /// Seconds from the first offending write to the victim's close; nil if the flood
        /// ended first.
        var closedAfterSeconds: Double?
        var bytes: Int
    }

    private enum Ending: Sendable {
        case victimClosed(at: Double)
        case floodOver
    }

    private static func misbehave(
        _ connection: EstablishedConnection, kind: Kind, noise: [UInt8], delivery: Message, control: FloodControl
    ) async -> Outcome {
        let channel = connection.channel.channel
        let offenceAt = monotonicSeconds()
        let written = ByteCounter()
        let ending: Ending = (try? await connection.channel.executeThenClose { inbound, outbound -> Ending in
            await withTaskGroup(of: Ending.self) { group -> Ending in
                group.addTask {
                    // The victim's messages are read and thrown away; the stream ends when it closes.
                    do { for try await _ in inbound {} } catch {}
                    return control.stopped ? .floodOver : .victimClosed(at: monotonicSeconds())
                }
                group.addTask {
                    var ruid: UInt32 = 0
                    var offset = 0
                    // Cancelled once the connection has ended: `try? await Task.sleep` returns at
                    // once in a cancelled task, so without that check the loop would spin.
                    while !control.stopped && !Task.isCancelled {
                        // One frame in flight per client, each awaited until written: writing
                        // through `outbound.write` flat out, this process grew to 24 GB and was
                        // OOM-killed (the async writer's back-pressure did not hold it back).
                        if !channel.isWritable {
                            written.waited()
                            try? await Task.sleep(for: .milliseconds(1))
                            continue
                        }
                        do {
                            switch kind {
                            case .unsolicitedDeliveries:
                                try await channel.writeAndFlush(delivery).get()
                                written.add(ProtocolLimits.deliveryChunksMax * (Chunk.payloadMax + 8))
                            case .rangeRequests:
                                ruid &+= 1
                                try await channel.writeAndFlush(Message.getRange(GetRange(
                                    ruid: ruid, bin: UInt8(ruid % UInt32(Proximity.binCount)), from: 1,
                                    to: ruid % 2 == 0 ? nil : UInt64(ruid), limit: UInt16(ProtocolLimits.offerBatchMax)))).get()
                                written.add(24)
                            case .streamInfoRequests:
                                try await channel.writeAndFlush(Message.streamInfoRequest(StreamInfoRequest(bins: (0..<UInt8(Proximity.binCount)).map { $0 }))).get()
                                written.add(40)
                            case .garbage:
                                let size = 16 << 10
                                offset = (offset + 7919) % (noise.count - size)
                                let bytes = ByteBuffer(bytes: noise[offset..<(offset + size)])
                                // Beneath the encoder: from its context the write goes straight to TLS.
                                try await channel.eventLoop.flatSubmit {
                                    do {
                                        let context = try channel.pipeline.syncOperations.context(handlerType: MessageToByteHandler<MessageEncoder>.self)
                                        return context.writeAndFlush(NIOAny(bytes))
                                    } catch {
                                        return channel.eventLoop.makeFailedFuture(error)
                                    }
                                }.get()
                                written.add(size)
                            }
                        } catch {
                            return control.stopped ? .floodOver : .victimClosed(at: monotonicSeconds())
                        }
                    }
                    return .floodOver
                }
                group.addTask {
                    // A writer held up by back-pressure and a reader with nothing to read
                    // would both outlive the flood: this ends the connection on time.
                    while !control.stopped && !Task.isCancelled { try? await Task.sleep(for: .milliseconds(50)) }
                    return .floodOver
                }
                let first = await group.next() ?? .floodOver
                channel.close(promise: nil)
                group.cancelAll()
                return first
            }
        }) ?? (control.stopped ? .floodOver : .victimClosed(at: monotonicSeconds()))
        switch ending {
        case .victimClosed(let at): return Outcome(closedAfterSeconds: at - offenceAt, bytes: written.value)
        case .floodOver: return Outcome(closedAfterSeconds: nil, bytes: written.value)
        }
    }
}

/// A counter two tasks of one connection add to.
final class ByteCounter: Sendable {
    private let count = Locked((bytes: 0, waits: 0))
    func add(_ n: Int) { count.withLock { $0.bytes += n } }
    func waited() { count.withLock { $0.waits += 1 } }
    var value: Int { count.withLock { $0.bytes } }
    var waits: Int { count.withLock { $0.waits } }
}

// MARK: Relay

/// A listener on 127.0.0.1 whose every connection is copied to 127.0.0.1:`targetPort` from the
/// source address `source`.
struct SourceRelay: Sendable {
    let port: Int
    let channel: any Channel

    static func start(source: String, targetPort: Int) async throws -> SourceRelay {
        let group = MultiThreadedEventLoopGroup.singleton
        let sourceAddress = try SocketAddress(ipAddress: source, port: 0)
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { inbound in
                // The client's channel is registered (and read from) only once this future
                // succeeds: by then the victim's side is connected and the pair glued.
                ClientBootstrap(group: inbound.eventLoop)
                    .bind(to: sourceAddress)
                    .connectTimeout(.seconds(5))
                    .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                    .connect(host: "127.0.0.1", port: targetPort)
                    .flatMapThrowing { outbound in
                        let (a, b) = GlueHandler.matchedPair()
                        try inbound.pipeline.syncOperations.addHandler(a)
                        try outbound.pipeline.syncOperations.addHandler(b)
                    }
                    .flatMapError { _ in
                        // The victim refused the TCP connection: the client sees its connection
                        // close as soon as it is registered.
                        inbound.eventLoop.makeCompletedFuture { try inbound.pipeline.syncOperations.addHandler(CloseWhenActive()) }
                    }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return SourceRelay(port: server.localAddress?.port ?? 0, channel: server)
    }

    func close() async {
        try? await channel.close()
    }
}

/// Closes its channel as soon as it is active.
final class CloseWhenActive: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny
    func channelActive(context: ChannelHandlerContext) { context.close(promise: nil) }
}

/// Copies what one channel reads to its partner, reading only while the partner can write
/// (swift-nio's connect-proxy example). Both channels of a pair live on one event loop.
final class GlueHandler: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false

    static func matchedPair() -> (GlueHandler, GlueHandler) {
        let first = GlueHandler(), second = GlueHandler()
        first.partner = second
        second.partner = first
        return (first, second)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { partner?.context?.write(data, promise: nil) }

    func channelReadComplete(context: ChannelHandlerContext) { partner?.context?.flush() }

    func channelInactive(context: ChannelHandlerContext) { partner?.context?.close(promise: nil) }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { partner?.context?.close(promise: nil) }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let partner, partner.pendingRead {
            partner.pendingRead = false
            partner.context?.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if let partner, partner.context?.channel.isWritable ?? false {
            context.read()
        } else {
            pendingRead = true
        }
    }
}
