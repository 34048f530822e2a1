import Crypto
import Foundation
import ShoalCore
import X509

/// The self-signed X.509 certificate a node presents in TLS: its subject key *is* the node's
/// Ed25519 identity key, so completing the TLS handshake proves possession of that key
/// (Docs/Decisions/0007-tls-identity-and-hello.md).
enum NodeCertificate {
    /// Certificates are made when the transport starts and renewed long before they expire;
    /// the validity window is not what secures anything (the key is), it only has to hold.
    static let validity: TimeInterval = 365 * 24 * 3600
    /// Peers' clocks may be behind ours.
    static let backdating: TimeInterval = 3600

    /// A certificate for `subjectKey`, signed by `issuerKey` (the same key in production: that
    /// is what makes it self-signed). DER bytes.
    static func make(
        subjectKey: Curve25519.Signing.PrivateKey,
        issuerKey: Curve25519.Signing.PrivateKey? = nil,
        commonName: String,
        notValidBefore: Date,
        notValidAfter: Date
    ) throws -> [UInt8] {
        let name = try DistinguishedName { CommonName(commonName) }
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: Certificate.PublicKey(subjectKey.publicKey),
            notValidBefore: notValidBefore,
            notValidAfter: notValidAfter,
            issuer: name,
            subject: name,
            signatureAlgorithm: .ed25519,
            extensions: Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
            },
            issuerPrivateKey: Certificate.PrivateKey(issuerKey ?? subjectKey)
        )
        return try certificate.serializeAsPEM().derBytes
    }

    /// The certificate a node presents now: valid from an hour ago for a year, CN = overlay (hex).
    static func make(for identity: NodeIdentity, now: Date) throws -> [UInt8] {
        try make(
            subjectKey: identity.privateKey,
            commonName: identity.overlay.hex,
            notValidBefore: now - backdating,
            notValidAfter: now + validity
        )
    }

    /// The PEM form of the identity key, which is how NIOSSL loads an Ed25519 key.
    static func privateKeyPEM(for identity: NodeIdentity) throws -> String {
        try Certificate.PrivateKey(identity.privateKey).serializeAsPEM().pemString
    }

    /// Checks the certificate chain a peer presented in TLS and returns the peer's raw Ed25519
    /// public key. Pure: the time is passed in.
    ///
    /// Only the leaf counts: it must parse, carry an Ed25519 key, be signed with Ed25519 by
    /// that same key (self-signed, issuer = subject) and be valid at `now`. Nothing chains to
    /// a CA: who the peer is follows from the key, and the hello then proves the key again.
    static func verifyPeer(chain: [[UInt8]], now: Date) throws(HandshakeError) -> [UInt8] {
        guard let leaf = chain.first else {
            throw HandshakeError(.certificateInvalid, "the peer presented no certificate")
        }
        let certificate: Certificate
        do {
            certificate = try Certificate(derEncoded: leaf)
        } catch {
            throw HandshakeError(.certificateInvalid, "the peer's certificate does not parse: \(error)")
        }
        guard let key = Curve25519.Signing.PublicKey(certificate.publicKey) else {
            throw HandshakeError(.certificateInvalid, "the peer's certificate key is not Ed25519 (\(certificate.publicKey))")
        }
        guard certificate.signatureAlgorithm == .ed25519 else {
            throw HandshakeError(.certificateInvalid, "the peer's certificate is signed with \(certificate.signatureAlgorithm), not Ed25519")
        }
        guard certificate.issuer == certificate.subject,
            certificate.publicKey.isValidSignature(certificate.signature, for: certificate)
        else {
            throw HandshakeError(.certificateInvalid, "the peer's certificate is not self-signed by its own key")
        }
        guard certificate.notValidBefore <= now else {
            throw HandshakeError(.certificateInvalid, "the peer's certificate is not valid before \(certificate.notValidBefore) (now \(now))")
        }
        guard now <= certificate.notValidAfter else {
            throw HandshakeError(.certificateInvalid, "the peer's certificate expired at \(certificate.notValidAfter) (now \(now))")
        }
        return Array(key.rawRepresentation)
    }
}
