import CLMDB

/// A type stored as an LMDB key or value: encoded to bytes, decoded from bytes in the map.
///
/// Decoding is handed bytes that came from disk, which may be truncated or damaged: it throws
/// `LMDBDecodingError` rather than trapping.
public protocol LMDBCodable {
    func encodeLMDB(into bytes: inout [UInt8])
    init(decodingLMDB bytes: UnsafeRawBufferPointer) throws
}

extension LMDBCodable {
    public var lmdbBytes: [UInt8] {
        var bytes: [UInt8] = []
        encodeLMDB(into: &bytes)
        return bytes
    }
}

/// Stored bytes that do not decode as the expected type.
public struct LMDBDecodingError: Error, CustomStringConvertible, Equatable, Sendable {
    public let type: String
    public let message: String

    public init(_ type: Any.Type, _ message: String) {
        self.type = String(describing: type)
        self.message = message
    }

    public var description: String { "cannot decode \(type): \(message)" }
}

extension Array: LMDBCodable where Element == UInt8 {
    public func encodeLMDB(into bytes: inout [UInt8]) { bytes.append(contentsOf: self) }
    public init(decodingLMDB bytes: UnsafeRawBufferPointer) { self.init(bytes) }
}

/// UInt64 keys are big-endian so that LMDB's byte order is numeric order.
extension UInt64: LMDBCodable {
    public func encodeLMDB(into bytes: inout [UInt8]) {
        withUnsafeBytes(of: self.bigEndian) { bytes.append(contentsOf: $0) }
    }

    public init(decodingLMDB bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count == 8 else { throw LMDBDecodingError(UInt64.self, "\(bytes.count) bytes, want 8") }
        self = bytes.loadUnaligned(as: UInt64.self).bigEndian
    }
}

extension String: LMDBCodable {
    public func encodeLMDB(into bytes: inout [UInt8]) { bytes.append(contentsOf: utf8) }
    public init(decodingLMDB bytes: UnsafeRawBufferPointer) throws {
        guard let s = String(validating: bytes.bindMemory(to: UInt8.self), as: UTF8.self) else {
            throw LMDBDecodingError(String.self, "not UTF-8")
        }
        self = s
    }
}

/// A named database whose keys and values have Swift types.
public struct Table<Key: LMDBCodable, Value: LMDBCodable>: Sendable {
    public let database: Database

    public init(_ database: Database) { self.database = database }

    public var name: String { database.name }
}

extension Transaction {
    public func get<K, V>(_ table: Table<K, V>, _ key: K) throws -> V? {
        try withValue(table.database, key.lmdbBytes) { raw in try raw.map { try V(decodingLMDB: $0) } }
    }

    public func contains<K, V>(_ table: Table<K, V>, _ key: K) throws -> Bool {
        try contains(table.database, key.lmdbBytes)
    }

    public func put<K, V>(_ table: Table<K, V>, _ key: K, _ value: V) throws {
        try put(table.database, key.lmdbBytes, value.lmdbBytes)
    }

    @discardableResult
    public func delete<K, V>(_ table: Table<K, V>, _ key: K) throws -> Bool {
        try delete(table.database, key.lmdbBytes)
    }

    public func count<K, V>(_ table: Table<K, V>) throws -> Int {
        try stat(table.database).entries
    }

    /// Visits decoded entries in key order from the first key ≥ `start`, until `body` returns false.
    public func scan<K, V>(_ table: Table<K, V>, from start: K? = nil,
                           _ body: (K, V) throws -> Bool) throws {
        try scan(table.database, from: start?.lmdbBytes) { k, v in
            try body(try K(decodingLMDB: k), try V(decodingLMDB: v))
        }
    }
}
