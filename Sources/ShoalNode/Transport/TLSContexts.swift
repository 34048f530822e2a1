import Foundation
import NIOCore
import NIOSSL

/// The node's certificate loaded into NIOSSL contexts for both roles.
///
/// Both roles: TLS 1.3 only; present the node's self-signed Ed25519 certificate; demand the
/// peer's (`.noHostnameVerification` makes a server ask for a client certificate and fail
/// without one) and leave the decision on it to the connection's verification callback;
/// no trust roots (nothing chains to a CA; the default ones would only cost loading).
/// `verifySignatureAlgorithms` must list Ed25519: BoringSSL leaves it out by default, and the
/// handshake then fails with NO_COMMON_SIGNATURE_ALGORITHMS.
struct TLSContexts: Sendable {
    /// Remade after a month; the certificate is valid for a year.
    static let renewalInterval: TimeInterval = 30 * 24 * 3600

    let server: NIOSSLContext
    let client: NIOSSLContext
    let created: Date

    init(identity: NodeIdentity, now: Date, shutdownTimeout: Duration) throws {
        let certificate = try NIOSSLCertificate(bytes: NodeCertificate.make(for: identity, now: now), format: .der)
        let key = try NIOSSLPrivateKey(bytes: Array(NodeCertificate.privateKeyPEM(for: identity).utf8), format: .pem)

        func configure(_ configuration: inout TLSConfiguration) {
            configuration.certificateChain = [.certificate(certificate)]
            configuration.privateKey = .privateKey(key)
            configuration.minimumTLSVersion = .tlsv13
            configuration.maximumTLSVersion = .tlsv13
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .certificates([])
            configuration.verifySignatureAlgorithms = [.ed25519]
            configuration.signingSignatureAlgorithms = [.ed25519]
            configuration.shutdownTimeout = TimeAmount(shutdownTimeout)
        }
        var server = TLSConfiguration.makeServerConfiguration(certificateChain: [], privateKey: .privateKey(key))
        configure(&server)
        var client = TLSConfiguration.makeClientConfiguration()
        configure(&client)
        self.server = try NIOSSLContext(configuration: server)
        self.client = try NIOSSLContext(configuration: client)
        self.created = now
    }

    /// A TLS handler for a new connection; `verify` decides on the peer's certificate.
    func handler(outbound: Bool, verify: @escaping NIOSSLCustomVerificationCallback) throws -> NIOSSLHandler {
        if outbound {
            return try NIOSSLClientHandler(context: client, serverHostname: nil, customVerificationCallback: verify)
        }
        return NIOSSLServerHandler(context: server, customVerificationCallback: verify)
    }
}
