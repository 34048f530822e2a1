import Crypto
import Foundation
import ShoalCore
import Testing

@testable import ShoalNode

/// The node's identity key on disk: made once, private to its owner, loaded the same every time,
/// and refused when it is exposed or damaged.
struct TransportIdentityTests {
    func mode(_ path: String) throws -> Int {
        try #require(FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
    }

    @Test func theFirstStartCreatesAPrivateKeyFileAndLaterStartsLoadItAgain() throws {
        try withTemporaryIdentityDirectory { directory in
            let first = try NodeIdentity.loadOrCreate(directory: directory, networkID: 7)
            let path = directory + "/identity.key"
            #expect(try mode(path) == 0o600)
            let text = try String(contentsOfFile: path, encoding: .utf8)
            #expect(text.hasPrefix("-----BEGIN PRIVATE KEY-----\n"))

            let second = try NodeIdentity.loadOrCreate(directory: directory, networkID: 7)
            #expect(second.publicKey == first.publicKey)
            #expect(second.overlay == first.overlay)
            #expect(second.overlay == Overlay.address(networkID: 7, publicKey: first.publicKey))
            #expect(first.publicKey.count == 32)
            // Nothing else is left behind (no temporary file).
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["identity.key"])
        }
    }

    @Test func theSameKeyOnAnotherNetworkHasAnotherOverlay() throws {
        try withTemporaryIdentityDirectory { directory in
            let a = try NodeIdentity.loadOrCreate(directory: directory, networkID: 1)
            let b = try NodeIdentity.loadOrCreate(directory: directory, networkID: 2)
            #expect(a.publicKey == b.publicKey)
            #expect(a.overlay != b.overlay)
        }
    }

    @Test func aMissingDataDirectoryIsCreated() throws {
        try withTemporaryIdentityDirectory { directory in
            let nested = directory + "/data/node"
            let identity = try NodeIdentity.loadOrCreate(directory: nested, networkID: 7)
            #expect(FileManager.default.fileExists(atPath: nested + "/identity.key"))
            #expect(try NodeIdentity.loadOrCreate(directory: nested, networkID: 7).publicKey == identity.publicKey)
        }
    }

    @Test(arguments: [0o644, 0o640, 0o604, 0o660, 0o606])
    func aKeyFileOthersCanReadOrWriteIsRefused(permissions: Int) throws {
        try withTemporaryIdentityDirectory { directory in
            _ = try NodeIdentity.loadOrCreate(directory: directory, networkID: 7)
            let path = directory + "/identity.key"
            try FileManager.default.setAttributes([.posixPermissions: permissions], ofItemAtPath: path)
            let error = #expect(throws: IdentityError.self) {
                try NodeIdentity.loadOrCreate(directory: directory, networkID: 7)
            }
            #expect(error?.code == .insecurePermissions)
            #expect(error?.description.contains("chmod 600") == true)
        }
    }

    @Test func aTruncatedKeyFileIsRefused() throws {
        try withTemporaryIdentityDirectory { directory in
            _ = try NodeIdentity.loadOrCreate(directory: directory, networkID: 7)
            let path = directory + "/identity.key"
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: path))
            let error = #expect(throws: IdentityError.self) {
                try NodeIdentity.loadOrCreate(directory: directory, networkID: 7)
            }
            #expect(error?.code == .malformed)
        }
    }

    @Test(arguments: [
        "",
        "hello",
        "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
        // A PKCS#8 document, but for an X25519 key (OID 1.3.101.110), not Ed25519.
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VuBCIEIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n-----END PRIVATE KEY-----\n",
    ])
    func aKeyFileThatIsNotAnEd25519KeyIsRefused(contents: String) throws {
        try withTemporaryIdentityDirectory { directory in
            let path = directory + "/identity.key"
            #expect(FileManager.default.createFile(
                atPath: path, contents: Data(contents.utf8), attributes: [.posixPermissions: 0o600]))
            let error = #expect(throws: IdentityError.self) {
                try NodeIdentity.loadOrCreate(directory: directory, networkID: 7)
            }
            #expect(error?.code == .malformed)
        }
    }

    @Test func theKeyFileIsTheStandardPKCS8Form() throws {
        // RFC 8410 §10.3's example key, as `openssl genpkey -algorithm ed25519` writes keys.
        let rfcExample = """
            -----BEGIN PRIVATE KEY-----
            MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC
            -----END PRIVATE KEY-----

            """
        let key = try IdentityKeyFile.parse(Array(rfcExample.utf8))
        #expect(IdentityKeyFile.pem(for: key) == rfcExample)
    }
}
