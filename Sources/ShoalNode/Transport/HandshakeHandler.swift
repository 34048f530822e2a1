import Foundation
import NIOCore
import NIOSSL
import ShoalCore
import ShoalWire

/// The shell around `HandshakeMachine` for one connection: it sits at the tail of the pipeline
/// (after the TLS handler and the frame codec) until the hello exchange ends.
///
/// On success it wraps the channel in a `NIOAsyncChannel` (whose handlers go in after it),
/// removes itself, and succeeds `promise`; frames that arrive after the peer's proof flow
/// straight into the new channel, so nothing is read on the connection's behalf. On failure it
/// closes the channel and fails `promise` with the `HandshakeError`. The promise is always
/// completed, once.
final class HandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = Message
    typealias OutboundOut = Message

    struct Settings {
        var timeout: Duration
        var outbound: Bool
        var inboundBackPressure: NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark
    }

    private var machine: HandshakeMachine
    private let settings: Settings
    private let promise: EventLoopPromise<EstablishedConnection>
    private var context: ChannelHandlerContext?
    private var timer: Scheduled<Void>?
    private var completed = false

    init(machine: HandshakeMachine, settings: Settings, promise: EventLoopPromise<EstablishedConnection>) {
        self.machine = machine
        self.settings = settings
        self.promise = promise
    }

    /// NIOSSL's custom verification callback for this connection (called on the event loop).
    /// The peer's certificate is checked by the machine, which keeps the key for the hello check.
    func verifyCertificates(_ certificates: [NIOSSLCertificate], _ result: EventLoopPromise<NIOSSLVerificationResult>) {
        var chain: [[UInt8]] = []
        for certificate in certificates {
            guard let der = try? certificate.toDERBytes() else { break }
            chain.append(der)
        }
        let accepted = machine.certificatePresented(chain, now: Date())
        result.succeed(accepted ? .certificateVerified : .failed)
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { start(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        self.context = nil
        if !completed {
            completed = true
            promise.fail(HandshakeError(.connectionClosed, "the handshake handler was removed before the handshake completed"))
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        perform(machine.failed(HandshakeError(.connectionClosed, "the connection closed during the handshake")), context: context)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        perform(machine.messageReceived(unwrapInboundIn(data)), context: context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        perform(machine.failed(Self.classify(error)), context: context)
    }

    // MARK: Actions

    private func start(context: ChannelHandlerContext) {
        guard timer == nil, !completed else { return }
        let timeout = settings.timeout
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(timeout)) { [self] in
            guard let context = self.context else { return }
            self.perform(self.machine.timedOut(after: timeout), context: context)
        }
        perform(machine.started(), context: context)
    }

    private func perform(_ actions: [HandshakeMachine.Action], context: ChannelHandlerContext) {
        for action in actions {
            switch action {
            case .send(let message):
                context.writeAndFlush(wrapOutboundOut(message), promise: nil)
            case .establish(let peer):
                establish(peer: peer, context: context)
            case .close(let error):
                finish(context: context)
                promise.fail(error)
                context.close(promise: nil)
            }
        }
    }

    private func establish(peer: Hello, context: ChannelHandlerContext) {
        let channel = context.channel
        let info = PeerInfo(
            overlay: peer.overlay, publicKey: peer.publicKey, epoch: peer.epoch,
            listenAddresses: peer.listenAddresses, agent: peer.agent,
            remoteAddress: channel.remoteAddress.map(Self.describe) ?? "unknown",
            outbound: settings.outbound)
        do {
            // Added after this handler, so every later frame reaches it; then we step aside.
            let asyncChannel = try NIOAsyncChannel<Message, Message>(
                wrappingChannelSynchronously: channel,
                configuration: .init(backPressureStrategy: settings.inboundBackPressure))
            finish(context: context)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            promise.succeed(EstablishedConnection(peer: info, channel: asyncChannel))
        } catch {
            finish(context: context)
            promise.fail(HandshakeError(.connectionClosed, "cannot hand the connection on: \(error)"))
            context.close(promise: nil)
        }
    }

    /// Stops the timer and marks the promise as taken care of (the caller completes it).
    private func finish(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        completed = true
    }

    static func classify(_ error: any Error) -> HandshakeError {
        switch error {
        case let error as WireError:
            return HandshakeError(.malformedFrame, "\(error)")
        case let error as NIOSSLError:
            return HandshakeError(.tlsFailed, "\(error)")
        case let error as BoringSSLError:
            return HandshakeError(.tlsFailed, "\(error)")
        default:
            return HandshakeError(.connectionClosed, "\(error)")
        }
    }

    /// "127.0.0.1:54321", "[::1]:54321".
    static func describe(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        if case .v6 = address { return "[\(ip)]:\(port)" }
        return "\(ip):\(port)"
    }
}
