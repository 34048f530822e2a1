import Locking
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ShoalCore
import ShoalWire

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
    /// Bounds on inbound connections (in total, per IP, per /24, in their handshake) and the
    /// penalty box for addresses that keep failing; a connection over a bound is closed as it is
    /// accepted. Outbound connections do not count against them.
    public var inboundLimits = InboundLimits()
    /// The listen backlog asked of the kernel (it caps it at `net.core.somaxconn`, 4096 here).
    public static let acceptBacklog = 4096
    /// Accepted connections still in their handshake; more are closed at once.
    public var handshakesInFlightMax: Int {
        get { inboundLimits.handshakesMax }
        set { inboundLimits.handshakesMax = newValue }
    }
    /// Repeated events (refused connections, failed handshakes) are logged in full this many
    /// times per `logWindowMs` and kind, then summarised in one line per window.
    public var logLinesPerWindow = 5
    public var logWindowMs: UInt64 = 10_000
    /// Milliseconds of a monotonic clock; tests may pass their own.
    public var nowMs: @Sendable () -> UInt64 = ThrottledLog.monotonicMs

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
        if let problem = inboundLimits.problem { throw invalid(problem) }
        guard logLinesPerWindow >= 0, logWindowMs > 0 else { throw invalid("log throttle bounds must be positive") }
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
    private let tls: Locked<TLSContexts?> = Locked(nil)
    /// What our hello announces; starts as the configuration's, may be set once the port is known.
    private let advertised: Locked<[String]>

    public init(configuration: TransportConfiguration, group: any EventLoopGroup, logger: Logger) {
        self.configuration = configuration
        advertised = Locked(configuration.advertisedAddresses)
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

        // Admission happens as a connection is accepted, before TLS starts: a connection over a
        // limit is closed there and then, before it costs a handshake or a task.
        let state = ListenerState(configuration: configuration, logger: logger)
        let server: NIOAsyncChannel<PendingConnection, Never>
        do {
            server = try await ServerBootstrap(group: group)
                .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                // A connect-and-close flood overflowed an accept queue of 256 about once per
                // attacker per second, and the kernel then drops every SYN, an honest peer's too
                // (it waits out TCP's 1 s retransmit). Refusing is cheap; queueing is cheaper.
                .serverChannelOption(ChannelOptions.backlog, value: Int32(TransportConfiguration.acceptBacklog))
                .serverChannelOption(ChannelOptions.maxMessagesPerRead, value: 64)
                .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(ChannelOptions.writeBufferWaterMark, value: writeBufferWaterMark)
                .bind(host: host, port: port) { channel in
                    guard let slot = state.admit(channel) else {
                        // NIO neither closes nor registers a channel whose initializer failed:
                        // closing it here is what gives its descriptor back.
                        channel.close(promise: nil)
                        return channel.eventLoop.makeFailedFuture(TransportError(.connectFailed, "refused"))
                    }
                    return channel.eventLoop.makeCompletedFuture {
                        do {
                            return try self.prepare(channel, outbound: false, slot: slot)
                        } catch {
                            _ = state.endHandshake(slot, established: false, offence: false)
                            throw error
                        }
                    }
                }
        } catch {
            throw TransportError(.bindFailed, "cannot listen on \(host):\(port): \(error)")
        }
        let localPort = server.channel.localAddress?.port ?? port
        var listenLogger = self.logger
        listenLogger[metadataKey: "listener.address"] = "\(host):\(localPort)"
        listenLogger.debug("listening")
        let acceptLoop = Task { [self] in
            await withDiscardingTaskGroup { group in
                group.addTask { await state.log.flushPeriodically() }
                await self.accept(from: server, state: state, logger: listenLogger, onConnection: onConnection)
                group.cancelAll()
            }
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
                        guard let slot = pending.slot else { continue }
                        let address = pending.remoteAddress
                        group.addTask {
                            let result: Result<EstablishedConnection, any Error>
                            do {
                                result = .success(try await pending.established())
                            } catch {
                                result = .failure(error)
                            }
                            let connection: EstablishedConnection
                            switch result {
                            case .failure(let error):
                                // A handshake cut short by `Listener.close()` is no peer's fault.
                                let listening = state.endHandshake(slot, established: false, offence: Self.isOffence(error))
                                state.log.log(
                                    "handshake.\(Self.failureKind(error))", level: listening ? .notice : .debug,
                                    "inbound handshake failed",
                                    metadata: Self.failureMetadata(error, address: address, direction: "inbound"))
                                return
                            case .success(let established):
                                connection = established
                            }
                            guard state.endHandshake(slot, established: true, offence: false) else {
                                try? await connection.channel.channel.close()
                                state.connectionEnded(slot)
                                return
                            }
                            logger.debug(
                                "inbound connection established",
                                metadata: ["peer.address": "\(address)", "peer.overlay": "\(connection.peer.overlay)"])
                            await onConnection(connection)
                            // Whatever `onConnection` did with it, the connection ends with it.
                            try? await connection.channel.channel.close()
                            state.connectionEnded(slot)
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
    private func prepare(_ channel: any Channel, outbound: Bool, slot: InboundAdmission.Slot? = nil) throws -> PendingConnection {
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
        return PendingConnection(channel: channel, remoteAddress: remoteAddress, slot: slot, result: promise.futureResult)
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

    /// Whether a failed inbound handshake counts against the remote address (see
    /// `InboundLimits.offencesMax`). A node reaching itself through an address it was told is
    /// no offence; anything else a peer does to fail its handshake is.
    static func isOffence(_ error: any Error) -> Bool {
        guard let error = error as? HandshakeError else { return true }
        return error.code != .selfConnection
    }

    static func failureKind(_ error: any Error) -> String {
        (error as? HandshakeError)?.code.rawValue ?? "error"
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

    /// Counts `remoteAddress` ("host:port" or "host") an offender, e.g. after its session was
    /// dropped for a protocol fault; enough offences put it in the penalty box. Returns true
    /// when this one did.
    @discardableResult
    public func offence(remoteAddress: String) -> Bool {
        guard let host = RemoteHost(describing: remoteAddress) else { return false }
        return state.offence(host)
    }

    /// Inbound connections now, the limits, and what admission refused so far.
    public var status: InboundStatus { state.status() }
}

/// Inbound connections as `/status` shows them.
public struct InboundStatus: Sendable, Equatable, Codable {
    public var limits: Limits
    public var open: InboundAdmission.Occupancy
    public var counters: InboundAdmission.Counters

    public struct Limits: Sendable, Equatable, Codable {
        public var inboundMax: Int
        public var perAddressMax: Int
        public var perSubnetMax: Int
        public var handshakesMax: Int
        public var offencesMax: Int
        public var offenceWindowMs: UInt64
        public var penaltyMs: UInt64

        init(_ limits: InboundLimits) {
            inboundMax = limits.inboundMax
            perAddressMax = limits.perAddressMax
            perSubnetMax = limits.perSubnetMax
            handshakesMax = limits.handshakesMax
            offencesMax = limits.offencesMax
            offenceWindowMs = limits.offenceWindowMs
            penaltyMs = limits.penaltyMs
        }
    }
}

/// What the accept loop and `Listener` share: admission (`InboundAdmission`), the channels
/// still in their handshake (closed by `Listener.close()`), and the throttle of the listener's
/// repeated log lines.
final class ListenerState: Sendable {
    private struct Inner {
        var admission: InboundAdmission
        var handshaking: [InboundAdmission.Slot: any Channel] = [:]
    }

    private let inner: Locked<Inner>
    private let nowMs: @Sendable () -> UInt64
    /// The listener's log of repeated events.
    let log: ThrottledLog

    init(configuration: TransportConfiguration, logger: Logger) {
        inner = Locked(Inner(admission: InboundAdmission(limits: configuration.inboundLimits)))
        nowMs = configuration.nowMs
        log = ThrottledLog(logger: logger, linesPerWindow: configuration.logLinesPerWindow,
                           windowMs: configuration.logWindowMs, nowMs: configuration.nowMs)
    }

    /// Admits a just-accepted channel, or returns nil (and logs, throttled) when it is refused.
    func admit(_ channel: any Channel) -> InboundAdmission.Slot? {
        let host = channel.remoteAddress.flatMap(RemoteHost.init(socketAddress:))
            ?? RemoteHost(address: "unknown", subnet: "unknown")
        let now = nowMs()
        let decision = inner.withLock { inner -> InboundAdmission.Decision in
            let decision = inner.admission.admit(host, nowMs: now)
            if case .admitted(let slot) = decision { inner.handshaking[slot] = channel }
            return decision
        }
        switch decision {
        case .admitted(let slot):
            return slot
        case .refused(.closed):
            return nil
        case .refused(let refusal):
            log.log("refused.\(refusal.rawValue)", level: .warning, "refusing connection: \(Self.explain(refusal))",
                metadata: ["peer.address": "\(host)", "refusal": "\(refusal.rawValue)"])
            return nil
        }
    }

    private static func explain(_ refusal: InboundAdmission.Refusal) -> String {
        switch refusal {
        case .closed: return "listener closed"
        case .tooManyHandshakes: return "too many handshakes in flight"
        case .tooManyInbound: return "too many inbound connections"
        case .tooManyFromAddress: return "too many connections from this address"
        case .tooManyFromSubnet: return "too many connections from this subnet"
        case .penalized: return "address penalised for repeated offences"
        }
    }

    /// The handshake of `slot` ended. Returns whether the listener is still open, i.e. whether
    /// an established connection may be handed on.
    func endHandshake(_ slot: InboundAdmission.Slot, established: Bool, offence: Bool) -> Bool {
        let now = nowMs()
        let (open, penalized) = inner.withLock { inner -> (Bool, Bool) in
            inner.handshaking[slot] = nil
            inner.admission.handshakeEnded(slot, established: established)
            let penalized = offence && !inner.admission.closed && inner.admission.offence(slot.host, nowMs: now)
            return (!inner.admission.closed, penalized)
        }
        if penalized { logPenalty(slot.host) }
        return open
    }

    func connectionEnded(_ slot: InboundAdmission.Slot) {
        inner.withLock { $0.admission.connectionEnded(slot) }
    }

    func offence(_ host: RemoteHost) -> Bool {
        let now = nowMs()
        let penalized = inner.withLock { $0.admission.offence(host, nowMs: now) }
        if penalized { logPenalty(host) }
        return penalized
    }

    private func logPenalty(_ host: RemoteHost) {
        let limits = inner.withLock { $0.admission.limits }
        log.log("penalized", level: .warning,
            "refusing \(host) for \(limits.penaltyMs / 1000) s: \(limits.offencesMax) offences within \(limits.offenceWindowMs / 1000) s",
            metadata: ["peer.address": "\(host)"])
    }

    /// Marks the listener closed; returns the connections still in their handshake.
    func close() -> [any Channel] {
        inner.withLock { inner in
            _ = inner.admission.close()
            defer { inner.handshaking = [:] }
            return Array(inner.handshaking.values)
        }
    }

    func status() -> InboundStatus {
        let now = nowMs()
        return inner.withLock { inner in
            InboundStatus(limits: .init(inner.admission.limits), open: inner.admission.occupancy(nowMs: now),
                          counters: inner.admission.counters)
        }
    }
}

extension RemoteHost {
    /// The host of an IPv4 or IPv6 socket address (nil for other kinds); an IPv4-mapped IPv6
    /// address counts as the IPv4 address it carries.
    init?(socketAddress: SocketAddress) {
        guard let ip = socketAddress.ipAddress else { return nil }
        self.init(ip: ip)
    }

    /// From "host:port", "[v6]:port" or a bare IP.
    init?(describing text: String) {
        if let ip = RemoteHost(ip: text) { self = ip; return }
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.init(ip: host)
    }

    init?(ip text: String) {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.init(v4Bytes: withUnsafeBytes(of: v4) { Array($0) })
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            let bytes = withUnsafeBytes(of: v6) { Array($0) }
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
                self.init(v4Bytes: Array(bytes[12..<16]))
                return
            }
            let groups = stride(from: 0, to: 16, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
            self.init(address: groups.joined(separator: ":"), subnet: groups[0..<4].joined(separator: ":") + "::/64")
        } else {
            return nil
        }
    }

    private init(v4Bytes b: [UInt8]) {
        self.init(address: "\(b[0]).\(b[1]).\(b[2]).\(b[3])", subnet: "\(b[0]).\(b[1]).\(b[2]).0/24")
    }
}

/// A connection whose pipeline is set up and whose handshake runs.
struct PendingConnection: Sendable {
    let channel: any Channel
    /// "host:port" of the other end ("unknown" for a dialled channel, which is not connected yet
    /// when it is prepared).
    let remoteAddress: String
    /// The admission slot of an accepted connection (nil for a dialled one).
    let slot: InboundAdmission.Slot?
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
