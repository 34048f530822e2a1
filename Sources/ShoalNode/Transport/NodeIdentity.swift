import Crypto
import Foundation
import ShoalCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The node's Ed25519 identity. Its public key is what the node's TLS certificate carries and
/// what the hello proves; its overlay address is SHA-256(network id ‖ public key).
///
/// Kept in `DATA/identity.key` as an unencrypted PKCS#8 PEM document (RFC 8410, the form
/// `openssl genpkey -algorithm ed25519` writes), mode 0600.
public struct NodeIdentity: Sendable {
    public let privateKey: Curve25519.Signing.PrivateKey
    public let networkID: UInt64
    /// The raw 32-byte Ed25519 public key.
    public let publicKey: [UInt8]
    /// `Overlay.address(networkID:publicKey:)`.
    public let overlay: OverlayAddress

    /// The file `loadOrCreate` keeps the key in, inside the data directory.
    public static let fileName = "identity.key"
    /// A key file is one PEM document of about 120 bytes; anything far larger is not one.
    static let fileBytesMax = 4096

    public init(privateKey: Curve25519.Signing.PrivateKey, networkID: UInt64) {
        self.privateKey = privateKey
        self.networkID = networkID
        self.publicKey = Array(privateKey.publicKey.rawRepresentation)
        self.overlay = Overlay.address(networkID: networkID, publicKey: publicKey)
    }

    /// A fresh random identity (not persisted).
    public static func generate(networkID: UInt64) -> NodeIdentity {
        NodeIdentity(privateKey: Curve25519.Signing.PrivateKey(), networkID: networkID)
    }

    /// Loads `directory/identity.key`, or creates it with a new key when it does not exist.
    ///
    /// Refuses (with an `IdentityError`) a key file that is not a regular file, that group or
    /// others may read or write (mode & 0o077 ≠ 0: the key is the node's identity, and a copy
    /// of it lets anyone impersonate the node), or that does not hold one Ed25519 PKCS#8 key.
    /// A new key is written to a temporary file, synced, and linked into place, so a crash
    /// never leaves a half-written key, and two processes starting at once end up with the same one.
    public static func loadOrCreate(directory: String, networkID: UInt64) throws(IdentityError) -> NodeIdentity {
        let path = directory.hasSuffix("/") ? directory + fileName : directory + "/" + fileName
        if let key = try readKeyFile(path: path) {
            return NodeIdentity(privateKey: key, networkID: networkID)
        }
        try makeDirectory(directory)
        let key = Curve25519.Signing.PrivateKey()
        if try writeKeyFileExclusively(path: path, contents: Array(IdentityKeyFile.pem(for: key).utf8)) {
            return NodeIdentity(privateKey: key, networkID: networkID)
        }
        // Another process created the file between our read and our link: use its key.
        guard let existing = try readKeyFile(path: path) else {
            throw IdentityError(.io, path: path, "the key file vanished while it was being created")
        }
        return NodeIdentity(privateKey: existing, networkID: networkID)
    }

    /// An Ed25519 signature over `bytes`.
    func sign(_ bytes: [UInt8]) -> [UInt8] {
        // swift-crypto's Ed25519 signing only fails when the system RNG or BoringSSL do, which
        // leaves the process unable to do anything safely.
        do { return Array(try privateKey.signature(for: bytes)) } catch { fatalError("Ed25519 signing failed: \(error)") }
    }

    // MARK: Files

    /// The key in `path`; nil when no such file exists.
    private static func readKeyFile(path: String) throws(IdentityError) -> Curve25519.Signing.PrivateKey? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let code = errno
            if code == ENOENT { return nil }
            throw IdentityError(.io, path: path, "cannot open: \(errnoText(code))")
        }
        defer { close(fd) }

        // Checked on the open descriptor, so the file checked is the file read.
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw IdentityError(.io, path: path, "cannot stat: \(errnoText(errno))") }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw IdentityError(.malformed, path: path, "not a regular file")
        }
        let permissions = info.st_mode & 0o777
        guard permissions & 0o077 == 0 else {
            throw IdentityError(
                .insecurePermissions, path: path,
                "mode \(octal(permissions)) lets group or others read or change the node's private key; "
                    + "run `chmod 600 \(path)` if the key has not leaked, or remove it to make a new identity")
        }

        var bytes = [UInt8](repeating: 0, count: fileBytesMax + 1)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw IdentityError(.io, path: path, "cannot read: \(errnoText(errno))")
            }
            if n == 0 { break }
            count += n
        }
        guard count <= fileBytesMax else {
            throw IdentityError(.malformed, path: path, "more than \(fileBytesMax) bytes: not a key file")
        }
        do {
            return try IdentityKeyFile.parse(Array(bytes.prefix(count)))
        } catch {
            throw IdentityError(.malformed, path: path, error.message)
        }
    }

    /// Writes `contents` to a temporary file (0600), syncs it and links it to `path`.
    /// Returns false when `path` already exists (nothing is replaced).
    private static func writeKeyFileExclusively(path: String, contents: [UInt8]) throws(IdentityError) -> Bool {
        let temporary = "\(path).tmp-\(getpid())"
        unlink(temporary)  // a leftover from a crash of an earlier process with our pid
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw IdentityError(.io, path: temporary, "cannot create: \(errnoText(errno))") }
        var closed = false
        defer {
            if !closed { close(fd) }
            unlink(temporary)
        }
        var written = 0
        while written < contents.count {
            let n = contents.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                throw IdentityError(.io, path: temporary, "cannot write: \(errnoText(errno))")
            }
            written += n
        }
        guard fsync(fd) == 0 else { throw IdentityError(.io, path: temporary, "cannot sync: \(errnoText(errno))") }
        closed = true
        close(fd)

        // link(2) fails with EEXIST instead of replacing a key another process just made.
        if link(temporary, path) != 0 {
            let code = errno
            if code == EEXIST { return false }
            throw IdentityError(.io, path: path, "cannot link the new key into place: \(errnoText(code))")
        }
        syncDirectory(of: path)
        return true
    }

    private static func makeDirectory(_ directory: String) throws(IdentityError) {
        do {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw IdentityError(.io, path: directory, "cannot create the directory: \(error)")
        }
    }

    private static func syncDirectory(of path: String) {
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let fd = open(directory.isEmpty ? (path.hasPrefix("/") ? "/" : ".") : directory, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }

    private static func errnoText(_ code: Int32) -> String {
        "\(String(cString: strerror(code))) (errno \(code))"
    }

    private static func octal(_ mode: mode_t) -> String {
        let digits = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}

/// Why the identity key could not be loaded or created.
public struct IdentityError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// Group or others may read or write the key file.
        case insecurePermissions
        /// The file is not one Ed25519 private key in PKCS#8 PEM form.
        case malformed
        /// A system call failed (the message names it and the errno).
        case io
    }

    public let code: Code
    public let path: String
    public let message: String

    public init(_ code: Code, path: String, _ message: String) {
        self.code = code
        self.path = path
        self.message = message
    }

    public var description: String { "identity key \(path): \(message) [\(code.rawValue)]" }
}

/// The PEM form of an Ed25519 private key: PKCS#8 `PrivateKeyInfo` (RFC 5958) with the
/// id-Ed25519 algorithm and a 32-byte `CurvePrivateKey` (RFC 8410 §7). Its DER is always the
/// same 16-byte prefix followed by the key, so it is written and checked byte for byte.
enum IdentityKeyFile {
    struct ParseError: Error {
        let message: String
    }

    /// SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }
    static let derPrefix: [UInt8] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ]
    static let begin = "-----BEGIN PRIVATE KEY-----"
    static let end = "-----END PRIVATE KEY-----"

    static func der(for key: Curve25519.Signing.PrivateKey) -> [UInt8] {
        derPrefix + Array(key.rawRepresentation)
    }

    static func pem(for key: Curve25519.Signing.PrivateKey) -> String {
        "\(begin)\n\(Data(der(for: key)).base64EncodedString())\n\(end)\n"
    }

    static func parse(_ bytes: [UInt8]) throws(ParseError) -> Curve25519.Signing.PrivateKey {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ParseError(message: "not text: expected a PEM \"PRIVATE KEY\" document")
        }
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard lines.count >= 3, lines.first == begin, lines.last == end else {
            throw ParseError(message: "expected one PEM document from \(begin) to \(end)")
        }
        guard let der = Data(base64Encoded: lines.dropFirst().dropLast().joined()).map(Array.init) else {
            throw ParseError(message: "the PEM body is not valid base64")
        }
        guard der.count == derPrefix.count + 32, Array(der.prefix(derPrefix.count)) == derPrefix else {
            throw ParseError(message: "the PEM body (\(der.count) bytes) is not an Ed25519 PKCS#8 private key")
        }
        do {
            return try Curve25519.Signing.PrivateKey(rawRepresentation: der.suffix(32))
        } catch {
            throw ParseError(message: "the Ed25519 key bytes are rejected: \(error)")
        }
    }
}

