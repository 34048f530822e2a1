import Crypto
import Foundation
import ShoalCore
import Testing

@testable import ShoalNode

/// What TLS accepts from a peer: only a currently valid certificate for an Ed25519 key, signed
/// by that key itself.
struct TransportCertificateTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)
    let peer = seededIdentity(seed: 2)

    func expectRefused(_ chain: [[UInt8]], because reason: String) {
        do {
            let key = try NodeCertificate.verifyPeer(chain: chain, now: Self.now)
            Issue.record("accepted, key \(key)")
        } catch {
            #expect(error.code == .certificateInvalid)
            #expect(error.message.contains(reason), "\(error)")
        }
    }

    @Test func aNodesOwnCertificateYieldsItsIdentityKey() throws {
        let certificate = try NodeCertificate.make(for: peer, now: Self.now)
        #expect(try NodeCertificate.verifyPeer(chain: [certificate], now: Self.now) == peer.publicKey)
        // Valid from an hour before it was made (clock skew) for a year.
        #expect(try NodeCertificate.verifyPeer(chain: [certificate], now: Self.now - 3000) == peer.publicKey)
        #expect(try NodeCertificate.verifyPeer(chain: [certificate], now: Self.now + 364 * 86400) == peer.publicKey)
    }

    @Test func onlyTheLeafCounts() throws {
        let leaf = try NodeCertificate.make(for: peer, now: Self.now)
        let other = try NodeCertificate.make(for: seededIdentity(seed: 3), now: Self.now)
        #expect(try NodeCertificate.verifyPeer(chain: [leaf, other], now: Self.now) == peer.publicKey)
    }

    @Test func anExpiredCertificateIsRefused() throws {
        let certificate = try NodeCertificate.make(
            subjectKey: peer.privateKey, commonName: "old", notValidBefore: Self.now - 7200, notValidAfter: Self.now - 1)
        expectRefused([certificate], because: "expired")
    }

    @Test func aCertificateNotYetValidIsRefused() throws {
        let certificate = try NodeCertificate.make(
            subjectKey: peer.privateKey, commonName: "future", notValidBefore: Self.now + 60, notValidAfter: Self.now + 7200)
        expectRefused([certificate], because: "not valid before")
    }

    @Test func aCertificateSignedByAnotherKeyIsRefused() throws {
        let certificate = try NodeCertificate.make(
            subjectKey: peer.privateKey, issuerKey: seededIdentity(seed: 3).privateKey, commonName: "forged",
            notValidBefore: Self.now - 60, notValidAfter: Self.now + 60)
        expectRefused([certificate], because: "not self-signed")
    }

    @Test func aCertificateWithAnAlteredSignatureIsRefused() throws {
        var certificate = try NodeCertificate.make(for: peer, now: Self.now)
        certificate[certificate.count - 1] ^= 0x01  // the last byte of the signature
        expectRefused([certificate], because: "not self-signed")
    }

    @Test func aP256CertificateIsRefused() throws {
        // openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 36500 -nodes -subj /CN=p256-fixture
        // (valid 2026-11-21 … 2126-10-28)
        let der = try #require(Data(base64Encoded: Self.p256Fixture.filter { !$0.isWhitespace }))
        expectRefused([Array(der)], because: "not Ed25519")
    }

    @Test func garbageAndNothingAreRefused() {
        expectRefused([Array("not a certificate".utf8)], because: "does not parse")
        expectRefused([[]], because: "does not parse")
        expectRefused([], because: "no certificate")
    }

    static let p256Fixture = """
        MIIBhDCCASugAwIBAgIURxITSc3FK6lt/eNdcdBnX3mFgIswCgYIKoZIzj0EAwIwFzEVMBMGA1UE
        AwwMcDI1Ni1maXh0dXJlMCAXDTI2MTEyMTA4MjcwM1oYDzIxMjYxMDI4MDgyNzAzWjAXMRUwEwYD
        VQQDDAxwMjU2LWZpeHR1cmUwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQtEOfDH0cwospmaTCA
        5LN8RPMY/AkHN/tJH22PnvizPDzWBic3NJehy4IOq1TVckkCDUucq4Ko0xoSiXF75scfo1MwUTAd
        BgNVHQ4EFgQUgHtWRRkNEVcrD3uDl2Z29y+zERwwHwYDVR0jBBgwFoAUgHtWRRkNEVcrD3uDl2Z2
        9y+zERwwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiAZM8fHRXvbeS5ZVSjcm1/1
        HYKUFuZP/eNerNxMeStJgwIgUoVhA4KHiyj4t+KRHFJM/p+m2/v4NaHxMn44awaPYW0=
        """
}
