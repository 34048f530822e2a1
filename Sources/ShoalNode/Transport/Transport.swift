import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ShoalCore
import ShoalWire
import Synchronization

/// Who is on the other end of an established connection, as its hello (checked against its TLS
/// certificate and proved by its signature) said.
public struct PeerInfo: Sendable, Equatable {
    public var overlay: OverlayAddress
    /// The peer's raw 32-byte Ed25519 identity key (the key of its TLS certificate).
    public var publicKey: [UInt8]
    /// The peer's store epoch.
    public var epoch: UInt64
    /// "host:port" addresses the peer says it accepts connections on (unverified).
    public var listenAddresses: [String]
    public var agent: String
    /// The address of the other end of the TCP connection, e.g. "127.0.0.1:54321".
    public var remoteAddress: String
    /// True when this node dialled.
    public var outbound: Bool

    public init(
        overlay: OverlayAddress, publicKey: [UInt8], epoch: UInt64, listenAddresses: [String], agent: String,
        remoteAddress: String, outbound: Bool
    ) {
        self.overlay = overlay
        self.publicKey = publicKey
        self.epoch = epoch
        self.listenAddresses = listenAddresses
        self.agent = agent
        self.remoteAddress = remoteAddress
        self.outbound = outbound
    }
}

public struct TransportConfiguration: Sendable {
    public var identity: NodeIdentity
    /// Our store epoch, sent in the hello.
    public var epoch: UInt64
    /// "host:port" addresses sent in the hello (at most `ProtocolLimits.listenAddressesMax`).
    public var advertisedAddresses: [String]
    /// Sent in the hello (at most `ProtocolLimits.agentBytesMax` UTF-8 bytes).
    public var agent = "shoal/0.1"
    /// From TCP connected to the peer's proof verified: TLS and the hello exchange together.
    public var handshakeTimeout: Duration = .seconds(5)
    public var connectTimeout: Duration = .seconds(5)
    /// How long a closing side waits for the peer's TLS close_notify.
    public var tlsShutdownTimeout: Duration = .seconds(2)
    /// Back-pressure on writes, bytes: above the high mark the channel turns unwritable and the
    /// `NIOAsyncChannel` writer suspends, so a slow peer slows only its own writer.
    public var writeBufferLowWater = 256 * 1024
    public var writeBufferHighWater = 1024 * 1024
    /// Back-pressure on reads, messages: above the high mark the transport stops reading from
    /// the socket until the consumer has drained to the low mark.
    public var inboundMessagesLow = 16
    public var inboundMessagesHigh = 64
    /// Accepted connections still in their handshake; more are closed at once.
    public var handshakesInFlightMax = 64

    public init(identity: NodeIdentity, epoch: UInt64, advertisedAddresses: [String] = []) {
        self.identity = identity
        self.epoch = epoch
        self.advertisedAddresses = advertisedAddresses
    }

    /// Throws when the hello could not be encoded or a bound makes no sense.
    public func validate() throws(TransportError) {
        func invalid(_ message: String) -> TransportError { TransportError(.invalidConfiguration, message) }
        guard advertisedAddresses.count <= ProtocolLimits.listenAddressesMax else {
            throw invalid("\(advertisedAddresses.count) advertised addresses, at most \(ProtocolLimits.listenAddressesMax)")
        }
        for address in advertisedAddresses where !(1...WireFormat.listenAddressBytesMax).contains(address.utf8.count) {
            throw invalid("advertised address \"\(address)\" is not 1…\(WireFormat.listenAddressBytesMax) bytes")
        }
        guard agent.utf8.count <= ProtocolLimits.agentBytesMax else {
            throw invalid("agent is \(agent.utf8.count) bytes, at most \(ProtocolLimits.agentBytesMax)")
        }
        guard handshakeTimeout > .zero, connectTimeout > .zero, tlsShutdownTimeout >= .zero else {
            throw invalid("timeouts must be positive")
        }
        guard 0 <= writeBufferLowWater, writeBufferLowWater <= writeBufferHighWater, writeBufferHighWater > 0 else {
            throw invalid("write buffer marks \(writeBufferLowWater)…\(writeBufferHighWater) are not 0 ≤ low ≤ high")
        }
        guard 0 <= inboundMessagesLow, inboundMessagesLow <= inboundMessagesHigh, inboundMessagesHigh > 0 else {
            throw invalid("inbound message marks \(inboundMessagesLow)…\(inboundMessagesHigh) are not 0 ≤ low ≤ high")
        }
        guard handshakesInFlightMax > 0 else { throw invalid("handshakesInFlightMax must be positive") }
    }
}

/// A connection that finished TLS and the hello exchange; nothing else has been read from it.
///
/// Whoever holds it owns the channel and must close it, normally by running the connection
/// inside `channel.executeThenClose { inbound, outbound in … }`.
public struct EstablishedConnection: Sendable {
    public let peer: PeerInfo
    /// Framed by ShoalWire's codec, over TLS.
    public let channel: NIOAsyncChannel<Message, Message>

    public init(peer: PeerInfo, channel: NIOAsyncChannel<Message, Message>) {
        self.peer = peer
        self.channel = channel
    }
}

/// Why the transport could not listen or dial (handshake failures are `HandshakeError`s).
public struct TransportError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case invalidConfiguration
        /// The certificate or the TLS contexts could not be made.
        case tlsSetupFailed
        case bindFailed
        /// TCP did not connect (refused, unreachable, `connectTimeout`).
        case connectFailed
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}

/// TCP + TLS 1.3 (mutual, self-signed Ed25519 certificates) + the hello handshake, on both
/// sides of a connection. See Docs/Decisions/0007-tls-identity-and-hello.md.
///
/// Pipeline of every connection: `NIOSSLHandler` → `ByteToMessageHandler(MessageDecoder())` →
/// `MessageToByteHandler(MessageEncoder())` → `HandshakeHandler` (until the handshake ends) →
/// `NIOAsyncChannel<Message, Message>`.
public final class Transport: Sendable {
    public let configuration: TransportConfiguration
    private let group: any EventLoopGroup
    private let logger: Logger
    private let tls: Mutex<TLSContexts?> = Mutex(nil)
    /// What our hello announces; starts as the configuration's, may be set once the port is known.
    private let advertised: Mutex<[String]>

    public init(configuration: TransportConfiguration, group: any EventLoopGroup, logger: Logger) {
        self.configuration = configuration
        advertised = Mutex(configuration.advertisedAddresses)
        self.group = group
        var logger = logger
        if logger[metadataKey: "node.overlay"] == nil {
            logger[metadataKey: "node.overlay"] = "\(configuration.identity.overlay)"
        }
        self.logger = logger
    }

    /// The addresses our hellos announce from now on (for example, once a listener bound to
    /// port 0 knows its port). Checked as `TransportConfiguration.validate` checks them.
    public func advertise(_ addresses: [String]) throws(TransportError) {
        var check = configuration
        check.advertisedAddresses = addresses
        try check.validate()
        advertised.withLock { $0 = addresses }
    }

    /// The addresses our hellos announce.
    public var advertisedAddresses: [String] { advertised.withLock { $0 } }

    /// Binds and accepts until the returned listener is closed.
    ///
    /// Each connection that completes the handshake is handed to `onConnection`, in a child task
    /// of the listener's accept loop (so calls run concurrently). The connection lives while
    /// `onConnection` runs: when it returns, the transport closes the channel if it is still
    /// open. A failed handshake is logged (`handshake.failure`, `peer.address`) and closed;
    /// `onConnection` never sees it. See `Listener` for how to stop.
    public func listen(
        host: String, port: Int,
        onConnection: @escaping @Sendable (EstablishedConnection) async -> Void
    ) async throws -> Listener {
        try configuration.validate()
        _ = try contexts()  // fail here, not in every accepted connection

        // Admission happens as a connection is accepted, before TLS starts: a connection over
        // the limit must not get as far as a completed handshake while the accept loop is busy.
        let state = ListenerState(handshakesMax: configuration.handshakesInFlightMax)
        let logger = self.logger
        let server: NIOAsyncChannel<PendingConnection, Never>
        do {
            server = try await ServerBootstrap(group: group)
                .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                .serverChannelOption(ChannelOptions.backlog, value: 256)
                .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(ChannelOptions.writeBufferWaterMark, value: writeBufferWaterMark)
                .bind(host: host, port: port) { channel in
                    switch state.beginHandshake(channel) {
                    case .admitted:
                        return channel.eventLoop.makeCompletedFuture {
                            do {
                                return try self.prepare(channel, outbound: false)
                            } catch {
                                _ = state.endHandshake(channel)
                                throw error
                            }
                        }
                    case .refusedTooMany:
                        logger.warning(
                            "refusing connection: too many handshakes in flight",
                            metadata: ["peer.address": "\(channel.remoteAddress.map { "\($0)" } ?? "unknown")",
                                       "handshake.inFlightMax": "\(state.handshakesMax)"])
                        return channel.eventLoop.makeFailedFuture(TransportError(.connectFailed, "too many handshakes in flight"))
                    case .refusedClosed:
                        return channel.eventLoop.makeFailedFuture(TransportError(.connectFailed, "listener closed"))
                    }
                }
        } catch {
            throw TransportError(.bindFailed, "cannot listen on \(host):\(port): \(error)")
        }
        let localPort = server.channel.localAddress?.port ?? port
        var listenLogger = self.logger
        listenLogger[metadataKey: "listener.address"] = "\(host):\(localPort)"
        listenLogger.debug("listening")
        let acceptLoop = Task { [self, logger] in
            await self.accept(from: server, state: state, logger: listenLogger, onConnection: onConnection)
        }
        return Listener(localPort: localPort, serverChannel: server.channel, state: state, acceptLoop: acceptLoop)
    }

    /// Connects, runs TLS and the hello exchange, and returns the established connection.
    /// Throws a `TransportError` (`connectFailed`) when TCP does not connect, a `HandshakeError`
    /// when the handshake fails; the connection is closed then.
    public func dial(host: String, port: Int) async throws -> EstablishedConnection {
        try configuration.validate()
        _ = try contexts()
        let pending: PendingConnection
        do {
            pending = try await ClientBootstrap(group: group)
                .connectTimeout(TimeAmount(configuration.connectTimeout))
                .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                .channelOption(ChannelOptions.writeBufferWaterMark, value: writeBufferWaterMark)
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try self.prepare(channel, outbound: true)
                    }
                }
        } catch {
            throw TransportError(.connectFailed, "cannot connect to \(host):\(port): \(error)")
        }
        do {
            return try await pending.established()
        } catch {
            logger.debug(
                "outbound handshake failed",
                metadata: Self.failureMetadata(error, address: "\(host):\(port)", direction: "outbound"))
            throw error
        }
    }

    // MARK: Accepting

    private func accept(
        from server: NIOAsyncChannel<PendingConnection, Never>, state: ListenerState, logger: Logger,
        onConnection: @escaping @Sendable (EstablishedConnection) async -> Void
    ) async {
        do {
            try await server.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await pending in inbound {
                        // Admitted (and counted) by the child channel initializer in `listen`.
                        let address = pending.remoteAddress
                        group.addTask {
                            let result: Result<EstablishedConnection, any Error>
                            do {
                                result = .success(try await pending.established())
                            } catch {
                                result = .failure(error)
                            }
                            let listening = state.endHandshake(pending.channel)
                            let connection: EstablishedConnection
                            switch result {
                            case .failure(let error):
                                // A handshake cut short by `Listener.close()` is no peer's fault.
                                logger.log(
                                    level: listening ? .notice : .debug, "inbound handshake failed",
                                    metadata: Self.failureMetadata(error, address: address, direction: "inbound"))
                                return
                            case .success(let established):
                                connection = established
                            }
                            guard listening else {
                                try? await connection.channel.channel.close()
                                return
                            }
                            logger.debug(
                                "inbound connection established",
                                metadata: ["peer.address": "\(address)", "peer.overlay": "\(connection.peer.overlay)"])
                            await onConnection(connection)
                            // Whatever `onConnection` did with it, the connection ends with it.
                            try? await connection.channel.channel.close()
                        }
                    }
                }
            }
        } catch {
            if !Task.isCancelled {
                logger.error("accept loop failed", metadata: ["error": "\(error)"])
            }
        }
        logger.debug("listener closed")
    }

    // MARK: Connections

    /// Installs TLS, the frame codec and the handshake on a new channel. On the channel's
    /// event loop, before it is registered.
    private func prepare(_ channel: any Channel, outbound: Bool) throws -> PendingConnection {
        let promise = channel.eventLoop.makePromise(of: EstablishedConnection.self)
        do {
            let contexts = try self.contexts()
            let machine = HandshakeMachine(
                identity: configuration.identity, epoch: configuration.epoch,
                listenAddresses: advertisedAddresses, agent: configuration.agent,
                nonce: Self.freshNonce())
            let handshake = HandshakeHandler(
                machine: machine,
                settings: .init(
                    timeout: configuration.handshakeTimeout, outbound: outbound,
                    inboundBackPressure: .init(
                        lowWatermark: configuration.inboundMessagesLow,
                        highWatermark: configuration.inboundMessagesHigh)),
                promise: promise)
            let sync = channel.pipeline.syncOperations
            try sync.addHandler(contexts.handler(outbound: outbound) { certificates, result in
                handshake.verifyCertificates(certificates, result)
            })
            try sync.addHandler(ByteToMessageHandler(MessageDecoder()))
            try sync.addHandler(MessageToByteHandler(MessageEncoder()))
            try sync.addHandler(handshake)
        } catch {
            promise.fail(error)
            channel.close(promise: nil)  // an accepted channel is not registered yet: nobody else would
            throw error
        }
        // Known now for an accepted channel; a closed channel no longer reports it.
        let remoteAddress = channel.remoteAddress.map(HandshakeHandler.describe) ?? "unknown"
        return PendingConnection(channel: channel, remoteAddress: remoteAddress, result: promise.futureResult)
    }

    /// Adds only the TLS layer of a connection, with `verifyPeer` deciding on the peer's
    /// certificate chain (DER, leaf first). For tests that speak raw frames over TLS.
    func addTLSHandler(to channel: any Channel, outbound: Bool, verifyPeer: @escaping ([[UInt8]]) -> Bool) throws {
        let contexts = try self.contexts()
        try channel.pipeline.syncOperations.addHandler(contexts.handler(outbound: outbound) { certificates, result in
            let chain = certificates.compactMap { try? $0.toDERBytes() }
            result.succeed(verifyPeer(chain) ? .certificateVerified : .failed)
        })
    }

    /// The TLS contexts, made on first use and remade when the certificate is a month old
    /// (it is valid for a year).
    func contexts() throws(TransportError) -> TLSContexts {
        try tls.withLock { (current: inout TLSContexts?) throws(TransportError) -> TLSContexts in
            let now = Date()
            if let current, now.timeIntervalSince(current.created) < TLSContexts.renewalInterval {
                return current
            }
            do {
                let fresh = try TLSContexts(
                    identity: configuration.identity, now: now, shutdownTimeout: configuration.tlsShutdownTimeout)
                current = fresh
                return fresh
            } catch {
                throw TransportError(.tlsSetupFailed, "cannot make the TLS certificate and contexts: \(error)")
            }
        }
    }

    private var writeBufferWaterMark: ChannelOptions.Types.WriteBufferWaterMark {
        .init(low: configuration.writeBufferLowWater, high: configuration.writeBufferHighWater)
    }

    private static func freshNonce() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()  // getrandom(2) on Linux
        return (0..<HandshakeMachine.nonceBytes).map { _ in generator.next() }
    }

    private static func failureMetadata(_ error: any Error, address: String, direction: String) -> Logger.Metadata {
        var metadata: Logger.Metadata = ["peer.address": "\(address)", "handshake.direction": "\(direction)"]
        if let error = error as? HandshakeError {
            metadata["handshake.failure"] = "\(error.code.rawValue)"
            metadata["handshake.reason"] = "\(error.message)"
        } else {
            metadata["handshake.failure"] = "\(type(of: error))"
            metadata["handshake.reason"] = "\(error)"
        }
        return metadata
    }
}

/// A listening socket and its accept loop.
///
/// Stopping has two steps, so a node can drain: `close()` stops accepting and leaves the
/// established connections running (their `onConnection` calls go on, e.g. to send goodbyes);
/// `shutdown()` also cancels those calls and returns when every one has returned. Call
/// `shutdown()` (or `close()` and then `waitForConnections()`) before dropping the listener:
/// until then its task lives on.
public final class Listener: Sendable {
    /// The bound port (the ephemeral one when listening on port 0).
    public let localPort: Int
    private let serverChannel: any Channel
    private let state: ListenerState
    private let acceptLoop: Task<Void, Never>

    init(localPort: Int, serverChannel: any Channel, state: ListenerState, acceptLoop: Task<Void, Never>) {
        self.localPort = localPort
        self.serverChannel = serverChannel
        self.state = state
        self.acceptLoop = acceptLoop
    }

    /// Stops accepting: closes the listening socket and every connection still in its
    /// handshake, and returns once the socket is closed. Connections already handed to
    /// `onConnection` are left alone. Safe to call more than once.
    public func close() async {
        let handshaking = state.close()
        serverChannel.close(promise: nil)
        for channel in handshaking { channel.close(promise: nil) }
        try? await serverChannel.closeFuture.get()
    }

    /// Returns when the accept loop and every `onConnection` call it started have returned.
    /// Without `close()` first, that is never.
    public func waitForConnections() async {
        await acceptLoop.value
    }

    /// `close()`, then cancels the running `onConnection` calls (a connection's inbound stream
    /// ends when its task is cancelled), closes their channels, and returns when all is done.
    public func shutdown() async {
        await close()
        acceptLoop.cancel()
        await acceptLoop.value
    }
}

/// What the accept loop and `Listener.close()` share: whether the listener is closed, and the
/// connections in their handshake (bounded by `handshakesMax`).
final class ListenerState: Sendable {
    enum Admission {
        case admitted, refusedClosed, refusedTooMany
    }

    private struct Inner {
        var closed = false
        var handshaking: [ObjectIdentifier: any Channel] = [:]
    }

    let handshakesMax: Int
    private let inner = Mutex(Inner())

    init(handshakesMax: Int) {
        self.handshakesMax = handshakesMax
    }

    func beginHandshake(_ channel: any Channel) -> Admission {
        inner.withLock { inner in
            if inner.closed { return .refusedClosed }
            if inner.handshaking.count >= handshakesMax { return .refusedTooMany }
            inner.handshaking[ObjectIdentifier(channel)] = channel
            return .admitted
        }
    }

    /// Whether the listener is still open, i.e. whether an established connection may be handed on.
    func endHandshake(_ channel: any Channel) -> Bool {
        inner.withLock { inner in
            inner.handshaking[ObjectIdentifier(channel)] = nil
            return !inner.closed
        }
    }

    /// Marks the listener closed; returns the connections still in their handshake.
    func close() -> [any Channel] {
        inner.withLock { inner in
            inner.closed = true
            defer { inner.handshaking = [:] }
            return Array(inner.handshaking.values)
        }
    }
}

/// A connection whose pipeline is set up and whose handshake runs.
struct PendingConnection: Sendable {
    let channel: any Channel
    /// "host:port" of the other end ("unknown" for a dialled channel, which is not connected yet
    /// when it is prepared).
    let remoteAddress: String
    let result: EventLoopFuture<EstablishedConnection>

    /// Waits for the handshake; cancelling the waiting task closes the connection.
    func established() async throws -> EstablishedConnection {
        try await withTaskCancellationHandler {
            try await result.get()
        } onCancel: {
            channel.close(promise: nil)
        }
    }
}
