import Crypto
import Foundation
import ShoalCore
import ShoalWire

/// Why a connection did not become an `EstablishedConnection`.
public struct HandshakeError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, CaseIterable {
        /// TLS itself failed: no TLS 1.3, no common algorithm, a plaintext peer, a bad record.
        case tlsFailed
        /// The peer's certificate does not parse, is not an Ed25519 key self-signed by itself,
        /// or is not valid now.
        case certificateInvalid
        /// No hello and proof within `TransportConfiguration.handshakeTimeout`.
        case timeout
        /// The peer's hello names another network.
        case wrongNetwork
        /// A hello field has the wrong size (public key, nonce), or the nonce is ours echoed.
        case malformedHello
        /// The hello's overlay is not SHA-256(network id ‖ public key).
        case overlayMismatch
        /// The hello's public key is not the key of the peer's TLS certificate.
        case keyMismatch
        /// The proof is not a valid signature by the hello's key over the hello and our nonce.
        case badSignature
        /// The peer is this node (same overlay).
        case selfConnection
        /// A message out of order: a proof before the hello, a second hello, anything else
        /// before the handshake is complete.
        case unexpectedMessage
        /// The peer's bytes are not valid frames.
        case malformedFrame
        /// The peer said goodbye during the handshake (its message is quoted).
        case rejectedByPeer
        /// The connection closed (or we closed it) before the handshake completed.
        case connectionClosed
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}

/// The hello exchange of one connection, after TLS. Performs no I/O: the shell
/// (`HandshakeHandler`) feeds it events and carries out the actions it returns; the nonce and
/// the time are passed in.
///
/// Each side sends its `Hello` at once (NIOSSL holds it until TLS is up). On the peer's hello
/// it checks the network, the key, the overlay and the certificate binding, then sends its
/// `HelloProof`: a signature over its own hello and the peer's nonce. The handshake is complete
/// when the peer's proof, over the peer's hello and *our* nonce, verifies. Any failure ends the
/// machine; later events are ignored.
struct HandshakeMachine {
    enum State: Equatable {
        /// Our hello is not sent yet.
        case idle
        /// Our hello is sent; the peer's is awaited.
        case awaitingHello
        /// The peer's hello passed every check and our proof is sent; its proof is awaited.
        /// `peer.publicKey` equals the certificate's key.
        case awaitingProof(peer: Hello)
        /// The peer proved its hello. Terminal.
        case established(peer: Hello)
        /// Terminal; `error` is the first failure.
        case failed(HandshakeError)
    }

    enum Action: Equatable {
        case send(Message)
        /// The handshake is complete: hand the connection on.
        case establish(peer: Hello)
        /// Close the connection; `error` is the reason to log and report.
        case close(HandshakeError)
    }

    let identity: NodeIdentity
    let ourHello: Hello
    private(set) var state: State = .idle
    /// The peer's Ed25519 key, once TLS has verified its certificate (always before any of the
    /// peer's messages can arrive: NIOSSL decrypts nothing before the handshake completes).
    private(set) var certificateKey: [UInt8]?
    /// A certificate the TLS layer asked about and we refused: the TLS failure that follows is
    /// reported with this reason instead.
    private var certificateRejection: HandshakeError?

    static let nonceBytes = WireFormat.nonceBytes

    init(identity: NodeIdentity, epoch: UInt64, listenAddresses: [String], agent: String, nonce: [UInt8]) {
        precondition(nonce.count == Self.nonceBytes, "a hello nonce is \(Self.nonceBytes) bytes, got \(nonce.count)")
        self.identity = identity
        self.ourHello = Hello(
            networkID: identity.networkID, publicKey: identity.publicKey, overlay: identity.overlay, epoch: epoch,
            nonce: nonce, listenAddresses: listenAddresses, agent: agent)
    }

    var isFinished: Bool {
        switch state {
        case .established, .failed: return true
        case .idle, .awaitingHello, .awaitingProof: return false
        }
    }

    // MARK: Events

    /// The connection is up: send our hello.
    mutating func started() -> [Action] {
        guard case .idle = state else { return [] }
        state = .awaitingHello
        return [.send(.hello(ourHello))]
    }

    /// TLS asks whether to accept the peer's certificate chain (DER, leaf first).
    /// Returns true to accept; on false the TLS handshake fails, and `failed(_:)` reports
    /// why the certificate was refused.
    mutating func certificatePresented(_ chain: [[UInt8]], now: Date) -> Bool {
        guard !isFinished else { return false }
        guard certificateKey == nil else {
            // TLS 1.3 without renegotiation presents one chain per connection.
            certificateRejection = HandshakeError(.certificateInvalid, "a second certificate during one handshake")
            return false
        }
        do throws(HandshakeError) {
            certificateKey = try NodeCertificate.verifyPeer(chain: chain, now: now)
            return true
        } catch {
            certificateRejection = error
            return false
        }
    }

    mutating func messageReceived(_ message: Message) -> [Action] {
        switch state {
        case .failed:
            return []
        case .established:
            preconditionFailure("the handshake handler forwards messages after the handshake; state \(state)")
        case .idle:
            preconditionFailure("a message before the connection started; state \(state)")
        case .awaitingHello:
            switch message {
            case .hello(let hello):
                return helloReceived(hello)
            case .helloProof:
                return fail(HandshakeError(.unexpectedMessage, "a hello proof before the hello"))
            default:
                return unexpected(message)
            }
        case .awaitingProof(let peer):
            switch message {
            case .helloProof(let proof):
                return proofReceived(proof, peer: peer)
            case .hello:
                return fail(HandshakeError(.unexpectedMessage, "a second hello"))
            default:
                return unexpected(message)
            }
        }
    }

    /// The handshake timer fired.
    mutating func timedOut(after timeout: Duration) -> [Action] {
        switch state {
        case .idle, .awaitingHello:
            return fail(HandshakeError(.timeout, "no hello within \(timeout)"))
        case .awaitingProof:
            return fail(HandshakeError(.timeout, "no hello proof within \(timeout)"))
        case .established, .failed:
            return []
        }
    }

    /// The transport failed under the handshake: a TLS error, undecodable bytes, the
    /// connection closing.
    mutating func failed(_ error: HandshakeError) -> [Action] {
        if error.code == .tlsFailed, let rejection = certificateRejection {
            return fail(rejection)
        }
        return fail(error)
    }

    // MARK: Checks

    private mutating func helloReceived(_ hello: Hello) -> [Action] {
        guard let certificateKey else {
            return fail(HandshakeError(.certificateInvalid, "a hello before TLS verified the peer's certificate"))
        }
        guard hello.networkID == identity.networkID else {
            return fail(HandshakeError(.wrongNetwork, "the peer is on network \(hello.networkID), this node on \(identity.networkID)"))
        }
        guard hello.publicKey.count == WireFormat.publicKeyBytes else {
            return fail(HandshakeError(.malformedHello, "public key of \(hello.publicKey.count) bytes, not \(WireFormat.publicKeyBytes)"))
        }
        guard hello.nonce.count == Self.nonceBytes else {
            return fail(HandshakeError(.malformedHello, "nonce of \(hello.nonce.count) bytes, not \(Self.nonceBytes)"))
        }
        guard hello.nonce != ourHello.nonce else {
            return fail(HandshakeError(.malformedHello, "the peer's nonce is ours, echoed"))
        }
        let expected = Overlay.address(networkID: hello.networkID, publicKey: hello.publicKey)
        guard hello.overlay == expected else {
            return fail(HandshakeError(.overlayMismatch, "overlay \(hello.overlay) is not \(expected), the address of the hello's key"))
        }
        guard hello.publicKey == certificateKey else {
            return fail(HandshakeError(.keyMismatch, "the hello's public key is not the key of the peer's TLS certificate"))
        }
        guard hello.overlay != identity.overlay else {
            return fail(HandshakeError(.selfConnection, "the peer is this node (overlay \(hello.overlay))"))
        }
        state = .awaitingProof(peer: hello)
        let signature = identity.sign(HelloProof.signedBytes(own: ourHello, peerNonce: hello.nonce))
        return [.send(.helloProof(HelloProof(signature: signature)))]
    }

    private mutating func proofReceived(_ proof: HelloProof, peer: Hello) -> [Action] {
        let signed = HelloProof.signedBytes(own: peer, peerNonce: ourHello.nonce)
        guard proof.signature.count == WireFormat.signatureBytes,
            let key = try? Curve25519.Signing.PublicKey(rawRepresentation: peer.publicKey),
            key.isValidSignature(proof.signature, for: signed)
        else {
            return fail(HandshakeError(.badSignature, "the hello proof is not the peer key's signature over its hello and our nonce"))
        }
        state = .established(peer: peer)
        return [.establish(peer: peer)]
    }

    private mutating func unexpected(_ message: Message) -> [Action] {
        if case .goodbye(let goodbye) = message {
            return fail(HandshakeError(.rejectedByPeer, "the peer said goodbye (\(goodbye.reason)): \(goodbye.message)"))
        }
        return fail(HandshakeError(.unexpectedMessage, "\(message.type) before the handshake completed"))
    }

    private mutating func fail(_ error: HandshakeError) -> [Action] {
        guard !isFinished else { return [] }
        state = .failed(error)
        // The peer is told why, in a goodbye, when TLS is up (its certificate was verified) and
        // the connection still carries frames: not after a goodbye, a close, a TLS failure or
        // undecodable bytes.
        let quietly: Set<HandshakeError.Code> = [.rejectedByPeer, .connectionClosed, .tlsFailed, .malformedFrame]
        guard certificateKey != nil, !quietly.contains(error.code) else { return [.close(error)] }
        let goodbye = Goodbye(reason: .protocolViolation, message: Self.truncated("handshake: \(error)"))
        return [.send(.goodbye(goodbye)), .close(error)]
    }

    /// Checks what each state promises. Tests call it after every event.
    func checkInvariants() {
        switch state {
        case .awaitingProof(let peer), .established(let peer):
            precondition(peer.networkID == identity.networkID, "peer on another network accepted: \(state)")
            precondition(
                peer.overlay == Overlay.address(networkID: peer.networkID, publicKey: peer.publicKey),
                "peer overlay does not follow from its key: \(state)")
            precondition(peer.overlay != identity.overlay, "self-connection accepted: \(state)")
        case .idle, .awaitingHello, .failed:
            break
        }
        if let key = certificateKey {
            precondition(key.count == WireFormat.publicKeyBytes, "certificate key of \(key.count) bytes: \(state)")
        }
        if case .awaitingProof(let peer) = state {
            precondition(peer.publicKey == certificateKey, "peer hello key is not the certificate key: \(state)")
        }
    }

    /// `s` cut to at most `ProtocolLimits.messageTextBytesMax` UTF-8 bytes, on a character boundary.
    static func truncated(_ s: String) -> String {
        var out = ""
        var bytes = 0
        for character in s {
            let n = character.utf8.count
            if bytes + n > ProtocolLimits.messageTextBytesMax { break }
            out.append(character)
            bytes += n
        }
        return out
    }
}
