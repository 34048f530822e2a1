import Crypto

/// A content-addressed chunk: `span` (the number of payload bytes the chunk stands for) and a
/// payload of 1…4096 bytes. Its address is SHA-256(span as UInt64 little-endian ‖ payload).
public struct Chunk: Sendable, Hashable {
    public static let payloadMax = 4096
    /// span (8 bytes) ‖ payload: the form a chunk takes on the wire and in the API.
    public static let serializedMax = 8 + payloadMax

    public let span: UInt64
    public let payload: [UInt8]
    public let address: ChunkAddress

    /// Makes a chunk and computes its address.
    public init(span: UInt64, payload: [UInt8]) throws(ChunkError) {
        try Chunk.validate(payloadCount: payload.count)
        self.span = span
        self.payload = payload
        self.address = Chunk.address(span: span, payload: payload)
    }

    /// A chunk whose address the caller already knows to be right (read back from our own
    /// store); skips the hash. Not for anything that crossed a trust boundary.
    package init(unverifiedSpan span: UInt64, payload: [UInt8], address: ChunkAddress) {
        (self.span, self.payload, self.address) = (span, payload, address)
    }

    /// A chunk whose payload is its whole span (a leaf).
    public init(payload: [UInt8]) throws(ChunkError) {
        try self.init(span: UInt64(payload.count), payload: payload)
    }

    /// Re-hashes and checks the content against a claimed address: what crosses a trust
    /// boundary (peer, API, disk) goes through here.
    public init(span: UInt64, payload: [UInt8], claimedAddress: ChunkAddress) throws(ChunkError) {
        try self.init(span: span, payload: payload)
        guard address == claimedAddress else {
            throw ChunkError.addressMismatch(claimed: claimedAddress, actual: address)
        }
    }

    /// Parses span ‖ payload.
    public init(serialized bytes: some Collection<UInt8>) throws(ChunkError) {
        guard bytes.count >= 9 else { throw ChunkError.truncated(byteCount: bytes.count) }
        var span: UInt64 = 0
        for (i, byte) in bytes.prefix(8).enumerated() { span |= UInt64(byte) << (8 * UInt64(i)) }
        try self.init(span: span, payload: Array(bytes.dropFirst(8)))
    }

    /// span ‖ payload.
    public var serialized: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(8 + payload.count)
        withUnsafeBytes(of: span.littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: payload)
        return out
    }

    public static func validate(payloadCount: Int) throws(ChunkError) {
        guard payloadCount >= 1 else { throw ChunkError.emptyPayload }
        guard payloadCount <= payloadMax else { throw ChunkError.payloadTooLarge(byteCount: payloadCount) }
    }

    public static func address(span: UInt64, payload: [UInt8]) -> ChunkAddress {
        payload.withUnsafeBytes { address(span: span, payload: $0) }
    }

    public static func address(span: UInt64, payload: UnsafeRawBufferPointer) -> ChunkAddress {
        var hasher = SHA256()
        withUnsafeBytes(of: span.littleEndian) { hasher.update(bufferPointer: $0) }
        hasher.update(bufferPointer: payload)
        return hasher.finalize().withUnsafeBytes { ChunkAddress(raw: $0)! }
    }
}

public enum ChunkError: Error, Equatable, Sendable, CustomStringConvertible {
    case emptyPayload
    case payloadTooLarge(byteCount: Int)
    case truncated(byteCount: Int)
    case addressMismatch(claimed: ChunkAddress, actual: ChunkAddress)

    public var description: String {
        switch self {
        case .emptyPayload: return "chunk payload is empty (1…4096 bytes required)"
        case .payloadTooLarge(let n): return "chunk payload is \(n) bytes (at most 4096)"
        case .truncated(let n): return "chunk is \(n) bytes: span (8) and at least 1 payload byte required"
        case .addressMismatch(let claimed, let actual):
            return "chunk content hashes to \(actual), not the claimed \(claimed)"
        }
    }
}

/// Overlay addresses of nodes.
public enum Overlay {
    /// SHA-256(network id as UInt64 little-endian ‖ Ed25519 public key).
    public static func address(networkID: UInt64, publicKey: [UInt8]) -> OverlayAddress {
        var hasher = SHA256()
        withUnsafeBytes(of: networkID.littleEndian) { hasher.update(bufferPointer: $0) }
        publicKey.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        return hasher.finalize().withUnsafeBytes { OverlayAddress(raw: $0)! }
    }
}
