import Crypto
import Foundation
import ShoalCore
import Testing

@testable import ShoalNode

/// The hello exchange as a pure machine: every way a peer can get it wrong ends the handshake
/// with the right `HandshakeError`, and a correct peer is accepted on both sides.
struct TransportHandshakeMachineTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)
    let us = seededIdentity(seed: 1)
    let peer = seededIdentity(seed: 2)
    let ourNonce = [UInt8](repeating: 0xA1, count: 32)
    let peerNonce = [UInt8](repeating: 0xB2, count: 32)

    // MARK: Helpers

    func certificate(of identity: NodeIdentity) -> [UInt8] {
        try! NodeCertificate.make(for: identity, now: Self.now)
    }

    func machine(_ identity: NodeIdentity, nonce: [UInt8], epoch: UInt64 = 1) -> HandshakeMachine {
        HandshakeMachine(identity: identity, epoch: epoch, listenAddresses: ["127.0.0.1:1"], agent: "test", nonce: nonce)
    }

    /// Our machine with its hello sent and TLS having verified `certificateOf`'s certificate.
    func startedMachine(certificateOf presented: NodeIdentity? = nil) -> HandshakeMachine {
        var m = machine(us, nonce: ourNonce)
        #expect(m.started() == [.send(.hello(m.ourHello))])
        let accepted = m.certificatePresented([certificate(of: presented ?? peer)], now: Self.now)
        #expect(accepted)
        m.checkInvariants()
        return m
    }

    func hello(of identity: NodeIdentity, nonce: [UInt8]? = nil, epoch: UInt64 = 5) -> Hello {
        Hello(
            networkID: identity.networkID, publicKey: identity.publicKey, overlay: identity.overlay, epoch: epoch,
            nonce: nonce ?? peerNonce, listenAddresses: ["127.0.0.1:2"], agent: "peer")
    }

    func proof(by identity: NodeIdentity, over hello: Hello, peerNonce nonce: [UInt8]) -> HelloProof {
        HelloProof(signature: identity.sign(HelloProof.signedBytes(own: hello, peerNonce: nonce)))
    }

    /// The one failure `actions` end with (after an optional goodbye).
    func failure(_ actions: [HandshakeMachine.Action]) -> HandshakeError? {
        guard case .close(let error)? = actions.last else { return nil }
        return error
    }

    // MARK: The good path

    @Test func twoCorrectPeersEstablishWithEachOthersHello() {
        var a = machine(us, nonce: ourNonce, epoch: 11)
        var b = machine(peer, nonce: peerNonce, epoch: 22)
        guard case .send(let helloA)? = a.started().first, case .send(let helloB)? = b.started().first else {
            Issue.record("no hello sent")
            return
        }
        let aAccepted = a.certificatePresented([certificate(of: peer)], now: Self.now)
        let bAccepted = b.certificatePresented([certificate(of: us)], now: Self.now)
        #expect(aAccepted && bAccepted)

        let proofFromB = b.messageReceived(helloA)
        let proofFromA = a.messageReceived(helloB)
        a.checkInvariants()
        b.checkInvariants()
        guard case .send(let messageFromB)? = proofFromB.first, case .send(let messageFromA)? = proofFromA.first else {
            Issue.record("no proofs: \(proofFromA) \(proofFromB)")
            return
        }
        #expect(a.messageReceived(messageFromB) == [.establish(peer: b.ourHello)])
        #expect(b.messageReceived(messageFromA) == [.establish(peer: a.ourHello)])
        a.checkInvariants()
        b.checkInvariants()
        #expect(a.state == .established(peer: b.ourHello))
        #expect(b.state == .established(peer: a.ourHello))
        #expect(a.isFinished && b.isFinished)
        // Once established, the timer no longer matters.
        #expect(a.timedOut(after: .seconds(5)) == [])
    }

    @Test func aValidHelloIsAnsweredWithAProofOverOurHelloAndThePeersNonce() {
        var m = startedMachine()
        let peerHello = hello(of: peer)
        let actions = m.messageReceived(.hello(peerHello))
        let expected = proof(by: us, over: m.ourHello, peerNonce: peerNonce)
        #expect(actions == [.send(.helloProof(expected))])
        #expect(m.state == .awaitingProof(peer: peerHello))
        m.checkInvariants()
    }

    // MARK: Faulty hellos

    enum HelloFault: String, CaseIterable, Sendable {
        case wrongNetwork, overlayNotOfKey, keyNotCertificateKey, keyTooShort, keyTooLong, nonceTooShort,
            echoedNonce, selfConnection

        var expected: HandshakeError.Code {
            switch self {
            case .wrongNetwork: return .wrongNetwork
            case .overlayNotOfKey: return .overlayMismatch
            case .keyNotCertificateKey: return .keyMismatch
            case .keyTooShort, .keyTooLong, .nonceTooShort, .echoedNonce: return .malformedHello
            case .selfConnection: return .selfConnection
            }
        }
    }

    @Test(arguments: HelloFault.allCases)
    func aFaultyHelloEndsTheHandshakeAndTellsThePeerWhy(_ fault: HelloFault) {
        let other = seededIdentity(seed: 3)
        var presented = peer
        var bad = hello(of: peer)
        switch fault {
        case .wrongNetwork:
            let foreign = seededIdentity(seed: 2, networkID: 8)
            bad = hello(of: foreign)
        case .overlayNotOfKey:
            bad.overlay = other.overlay
        case .keyNotCertificateKey:
            bad = hello(of: other)  // consistent in itself, but TLS proved `peer`'s key
        case .keyTooShort:
            bad.publicKey.removeLast()
        case .keyTooLong:
            bad.publicKey.append(0)
        case .nonceTooShort:
            bad.nonce.removeLast()
        case .echoedNonce:
            bad.nonce = ourNonce
        case .selfConnection:
            presented = us
            bad = hello(of: us)
        }
        var m = startedMachine(certificateOf: presented)
        let actions = m.messageReceived(.hello(bad))
        m.checkInvariants()

        let error = failure(actions)
        #expect(error?.code == fault.expected, "\(actions)")
        #expect(m.state == .failed(error!))
        guard case .send(.goodbye(let goodbye))? = actions.first, actions.count == 2 else {
            Issue.record("expected a goodbye before the close: \(actions)")
            return
        }
        #expect(goodbye.reason == .protocolViolation)
        #expect(goodbye.message.contains(fault.expected.rawValue))
        // A failed machine ignores whatever else arrives.
        #expect(m.messageReceived(.helloProof(HelloProof(signature: [UInt8](repeating: 0, count: 64)))) == [])
        #expect(m.timedOut(after: .seconds(1)) == [])
    }

    // MARK: Faulty proofs

    enum ProofFault: String, CaseIterable, Sendable {
        /// A signature valid on another connection, where our nonce was different: a replay.
        case overAnotherNonce
        /// Signed over our hello instead of its own.
        case overTheWrongHello
        /// Signed by a key other than the hello's.
        case byAnotherKey
        case randomBytes
        case tooShort
        case empty
    }

    @Test(arguments: ProofFault.allCases)
    func aProofThatDoesNotVerifyEndsTheHandshake(_ fault: ProofFault) {
        var m = startedMachine()
        let peerHello = hello(of: peer)
        _ = m.messageReceived(.hello(peerHello))

        let bad: HelloProof
        switch fault {
        case .overAnotherNonce:
            bad = proof(by: peer, over: peerHello, peerNonce: [UInt8](repeating: 0x77, count: 32))
        case .overTheWrongHello:
            bad = proof(by: peer, over: m.ourHello, peerNonce: ourNonce)
        case .byAnotherKey:
            bad = proof(by: seededIdentity(seed: 3), over: peerHello, peerNonce: ourNonce)
        case .randomBytes:
            var generator = SplitMix64(seed: 99)
            bad = HelloProof(signature: generator.bytes(64))
        case .tooShort:
            bad = HelloProof(signature: Array(proof(by: peer, over: peerHello, peerNonce: ourNonce).signature.dropLast()))
        case .empty:
            bad = HelloProof(signature: [])
        }
        let actions = m.messageReceived(.helloProof(bad))
        m.checkInvariants()
        #expect(failure(actions)?.code == .badSignature, "\(actions)")
        #expect(actions.count == 2, "a goodbye, then the close: \(actions)")
    }

    @Test func theCorrectProofEstablishesWithThePeersHello() {
        var m = startedMachine()
        let peerHello = hello(of: peer, epoch: 42)
        _ = m.messageReceived(.hello(peerHello))
        let actions = m.messageReceived(.helloProof(proof(by: peer, over: peerHello, peerNonce: ourNonce)))
        #expect(actions == [.establish(peer: peerHello)])
        m.checkInvariants()
    }

    // MARK: Order

    @Test func aProofBeforeTheHelloIsUnexpected() {
        var m = startedMachine()
        let actions = m.messageReceived(.helloProof(proof(by: peer, over: hello(of: peer), peerNonce: ourNonce)))
        #expect(failure(actions)?.code == .unexpectedMessage)
        #expect(failure(actions)?.message.contains("before the hello") == true)
    }

    @Test func aSecondHelloIsUnexpected() {
        var m = startedMachine()
        _ = m.messageReceived(.hello(hello(of: peer)))
        let actions = m.messageReceived(.hello(hello(of: peer)))
        #expect(failure(actions)?.code == .unexpectedMessage)
        #expect(failure(actions)?.message.contains("second hello") == true)
    }

    @Test(arguments: [Message.ping(nonce: 1), .pong(nonce: 1), .streamInfoRequest(StreamInfoRequest(bins: [0]))])
    func anyOtherMessageBeforeTheProofIsUnexpected(_ message: Message) {
        var waitingForHello = startedMachine()
        #expect(failure(waitingForHello.messageReceived(message))?.code == .unexpectedMessage)

        var waitingForProof = startedMachine()
        _ = waitingForProof.messageReceived(.hello(hello(of: peer)))
        #expect(failure(waitingForProof.messageReceived(message))?.code == .unexpectedMessage)
    }

    @Test func aGoodbyeDuringTheHandshakeIsReportedAndNotAnswered() {
        var m = startedMachine()
        let actions = m.messageReceived(.goodbye(Goodbye(reason: .protocolViolation, message: "wrong network")))
        #expect(actions.count == 1, "no goodbye back: \(actions)")
        #expect(failure(actions)?.code == .rejectedByPeer)
        #expect(failure(actions)?.message.contains("wrong network") == true)
    }

    // MARK: Time

    @Test func noHelloInTimeIsATimeout() {
        var m = startedMachine()
        let actions = m.timedOut(after: .milliseconds(300))
        #expect(failure(actions)?.code == .timeout)
        #expect(failure(actions)?.message.contains("no hello") == true)
    }

    @Test func noProofInTimeIsATimeout() {
        var m = startedMachine()
        _ = m.messageReceived(.hello(hello(of: peer)))
        let actions = m.timedOut(after: .milliseconds(300))
        #expect(failure(actions)?.code == .timeout)
        #expect(failure(actions)?.message.contains("no hello proof") == true)
    }

    @Test func aTimeoutBeforeTLSIsUpClosesWithoutAGoodbye() {
        var m = machine(us, nonce: ourNonce)
        _ = m.started()
        let actions = m.timedOut(after: .milliseconds(300))
        #expect(actions == [.close(HandshakeError(.timeout, "no hello within 0.3 seconds"))])
    }

    // MARK: Certificates and the transport below

    @Test func aRefusedCertificateIsTheReasonReportedForTheTLSFailure() {
        var m = machine(us, nonce: ourNonce)
        _ = m.started()
        let expired = try! NodeCertificate.make(
            subjectKey: peer.privateKey, commonName: "old",
            notValidBefore: Self.now - 7200, notValidAfter: Self.now - 3600)
        let accepted = m.certificatePresented([expired], now: Self.now)
        #expect(!accepted)
        let actions = m.failed(HandshakeError(.tlsFailed, "handshakeFailed(CERTIFICATE_VERIFY_FAILED)"))
        #expect(actions.count == 1)
        #expect(failure(actions)?.code == .certificateInvalid)
        #expect(failure(actions)?.message.contains("expired") == true)
    }

    @Test func aSecondCertificateIsRefused() {
        var m = startedMachine()
        let accepted = m.certificatePresented([certificate(of: peer)], now: Self.now)
        #expect(!accepted)
    }

    @Test func aHelloBeforeAnyCertificateIsRefused() {
        var m = machine(us, nonce: ourNonce)
        _ = m.started()
        let actions = m.messageReceived(.hello(hello(of: peer)))
        #expect(failure(actions)?.code == .certificateInvalid)
        #expect(actions.count == 1, "no goodbye before TLS verified the peer: \(actions)")
    }

    @Test func transportFailuresEndTheHandshakeQuietly() {
        for code in [HandshakeError.Code.connectionClosed, .malformedFrame, .tlsFailed] {
            var m = startedMachine()
            let actions = m.failed(HandshakeError(code, "test"))
            #expect(actions == [.close(HandshakeError(code, "test"))])
            #expect(m.failed(HandshakeError(.connectionClosed, "again")) == [], "only the first failure counts")
        }
    }

    @Test func goodbyeTextIsCutToTheProtocolLimitOnACharacterBoundary() {
        let long = String(repeating: "é", count: 300)  // 2 bytes each
        let cut = HandshakeMachine.truncated(long)
        #expect(cut.utf8.count <= ProtocolLimits.messageTextBytesMax)
        #expect(cut.utf8.count == ProtocolLimits.messageTextBytesMax)
        #expect(cut.allSatisfy { $0 == "é" })
    }
}
