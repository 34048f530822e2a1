import LMDB
import ShoalCore

/// Little-endian writer for stored values (keys use big-endian so they sort numerically).
struct ByteWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    mutating func address(_ a: Address32) { a.append(to: &bytes) }
    mutating func raw(_ b: some Sequence<UInt8>) { bytes.append(contentsOf: b) }
}

/// Reads what `ByteWriter` wrote; every read is bounds-checked and throws on truncation.
struct ByteReader {
    let buffer: UnsafeRawBufferPointer
    let type: Any.Type
    var offset = 0

    init(_ buffer: UnsafeRawBufferPointer, for type: Any.Type) {
        self.buffer = buffer
        self.type = type
    }

    var remaining: Int { buffer.count - offset }

    private mutating func take(_ n: Int) throws -> Int {
        guard n <= remaining else {
            throw LMDBDecodingError(type, "truncated: need \(n) bytes at offset \(offset) of \(buffer.count)")
        }
        defer { offset += n }
        return offset
    }

    mutating func u8() throws -> UInt8 { buffer[try take(1)] }
    mutating func u16() throws -> UInt16 {
        UInt16(littleEndian: buffer.loadUnaligned(fromByteOffset: try take(2), as: UInt16.self))
    }
    mutating func u32() throws -> UInt32 {
        UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: try take(4), as: UInt32.self))
    }
    mutating func u64() throws -> UInt64 {
        UInt64(littleEndian: buffer.loadUnaligned(fromByteOffset: try take(8), as: UInt64.self))
    }
    mutating func i64() throws -> Int64 { Int64(bitPattern: try u64()) }
    mutating func address() throws -> Address32 {
        let at = try take(32)
        return Address32(raw: UnsafeRawBufferPointer(rebasing: buffer[at..<at + 32]))!
    }
    mutating func bytes(_ n: Int) throws -> [UInt8] {
        let at = try take(n)
        return Array(buffer[at..<at + n])
    }

    /// Stored values have exact lengths: trailing bytes mean the value is not what we think.
    func finish() throws {
        guard remaining == 0 else { throw LMDBDecodingError(type, "\(remaining) unexpected trailing bytes") }
    }
}

extension Address32: LMDBCodable {
    public func encodeLMDB(into bytes: inout [UInt8]) { append(to: &bytes) }
    public init(decodingLMDB bytes: UnsafeRawBufferPointer) throws {
        guard let a = Address32(raw: bytes) else {
            throw LMDBDecodingError(Address32.self, "\(bytes.count) bytes, want 32")
        }
        self = a
    }
}

extension Transaction {
    /// A UInt64 (little-endian) under a `meta` key, or nil.
    func metaUInt64(_ meta: Database, _ key: String) throws -> UInt64? {
        try withValue(meta, key.lmdbBytes) { raw in try raw.map { try LEUInt64(decodingLMDB: $0).value } }
    }

    func putMeta(_ meta: Database, _ key: String, _ value: UInt64) throws {
        try put(meta, key.lmdbBytes, LEUInt64(value).lmdbBytes)
    }
}
