/// The key `Address32._rawHashValue(seed:)` mixes in: drawn once per process, as `Hasher`'s is.
private let addressHashKey = UInt64.random(in: .min ... .max)

/// 32 bytes naming something in the address space: a chunk or a node.
///
/// Stored inline (four words), so addresses are cheap to hash, compare and copy.
public struct Address32: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64  // big-endian words, w0 first

    public static let byteCount = 32
    public static let zero = Address32(w0: 0, w1: 0, w2: 0, w3: 0)

    public init(w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64) {
        (self.w0, self.w1, self.w2, self.w3) = (w0, w1, w2, w3)
    }

    /// Addresses are SHA-256 outputs, so the first word is already uniform; hashing it alone
    /// is a quarter of the work. (Sets and dictionaries of addresses sit on the sync path.)
    /// Equal addresses have equal first words, and `Hasher` is seeded per process, so a peer
    /// would need 2⁶⁴ work to make its addresses collide in our tables.
    public func hash(into hasher: inout Hasher) { hasher.combine(w0) }

    /// What sets and dictionaries use: the first word mixed with a per-process random key and
    /// the table's seed by two multiply–xorshift rounds, instead of a whole `Hasher` (SipHash's
    /// set-up and finalisation were 3% of a syncing node's samples). Offered addresses are the
    /// peer's choice, not yet hashes of anything, so the mix must keep a peer from choosing
    /// addresses that share buckets: the key (secret, drawn at start) and the seed (which
    /// tables pass; it is the storage's address, not a secret) enter before the non-linear
    /// rounds, so which addresses collide depends on the key.
    public func _rawHashValue(seed: Int) -> Int {
        var x = w0 ^ addressHashKey ^ UInt64(bitPattern: Int64(seed))
        x = (x ^ (x >> 32)) &* 0xD6E8_FEB8_6659_FD93
        x = (x ^ (x >> 32)) &* 0xD6E8_FEB8_6659_FD93
        return Int(truncatingIfNeeded: x ^ (x >> 32))
    }

    /// Reads 32 bytes; nil when `bytes` is not exactly 32 long.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 32 else { return nil }
        var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        var i = 0
        for byte in bytes {
            let shift = UInt64(56 - 8 * (i % 8))
            switch i / 8 {
            case 0: words.0 |= UInt64(byte) << shift
            case 1: words.1 |= UInt64(byte) << shift
            case 2: words.2 |= UInt64(byte) << shift
            default: words.3 |= UInt64(byte) << shift
            }
            i += 1
        }
        (w0, w1, w2, w3) = words
    }

    public init?(raw: UnsafeRawBufferPointer) {
        guard raw.count == 32 else { return nil }
        w0 = raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self).bigEndian
        w1 = raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self).bigEndian
        w2 = raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self).bigEndian
        w3 = raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self).bigEndian
    }

    /// Parses 64 hex digits (either case); nil for anything else.
    public init?(hex: some StringProtocol) {
        let utf8 = Array(hex.utf8)
        guard utf8.count == 64 else { return nil }
        var bytes = [UInt8](repeating: 0, count: 32)
        for i in 0..<32 {
            guard let hi = Address32.nibble(utf8[2 * i]), let lo = Address32.nibble(utf8[2 * i + 1]) else {
                return nil
            }
            bytes[i] = hi << 4 | lo
        }
        self.init(bytes: bytes)
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(32)
        append(to: &out)
        return out
    }

    public func append(to out: inout [UInt8]) {
        withUnsafeBytes(of: (w0.bigEndian, w1.bigEndian, w2.bigEndian, w3.bigEndian)) { out.append(contentsOf: $0) }
    }

    public var hex: String { bytes.hexEncoded }

    public var description: String { hex }

    /// The number of leading bits `self` and `other` share (0…256).
    public func proximity(to other: Address32) -> Int {
        let x = (w0 ^ other.w0, w1 ^ other.w1, w2 ^ other.w2, w3 ^ other.w3)
        if x.0 != 0 { return x.0.leadingZeroBitCount }
        if x.1 != 0 { return 64 + x.1.leadingZeroBitCount }
        if x.2 != 0 { return 128 + x.2.leadingZeroBitCount }
        if x.3 != 0 { return 192 + x.3.leadingZeroBitCount }
        return 256
    }

    public static func < (a: Address32, b: Address32) -> Bool {
        (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3)
    }
}

/// Proximity order and bins.
public enum Proximity {
    /// Bins 0…31; bin 31 holds every proximity of 31 or more.
    public static let binCount = 32
    public static let maxBin = binCount - 1

    /// The bin that an address with proximity `po` to the node falls in.
    public static func bin(forProximity po: Int) -> Int { min(po, maxBin) }

    public static func bin(of address: Address32, relativeTo overlay: Address32) -> Int {
        bin(forProximity: address.proximity(to: overlay))
    }
}

/// The address of a chunk: SHA-256(span ‖ payload).
public typealias ChunkAddress = Address32

/// A node's address in the overlay: SHA-256(network id ‖ Ed25519 public key).
public typealias OverlayAddress = Address32

extension Sequence where Element == UInt8 {
    /// Lower-case hex, two digits a byte.
    public var hexEncoded: String {
        var out = [UInt8]()
        out.reserveCapacity(underestimatedCount * 2)
        for byte in self {
            out.append(hexDigits[Int(byte >> 4)])
            out.append(hexDigits[Int(byte & 0xf)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

private let hexDigits = Array("0123456789abcdef".utf8)
