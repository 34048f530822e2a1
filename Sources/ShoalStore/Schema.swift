import LMDB
import ShoalCore

/// The store's layout: named databases and the byte form of every record. `Docs/Storage.md`
/// describes the same bytes for outside tools.
public enum Schema {
    /// The schema version this build writes. A store with a larger one is refused.
    public static let version: UInt64 = 3

    /// Database names; outside tools (`mdb_stat -a`, `mdb_dump -s NAME`) rely on them.
    public enum Name {
        public static let meta = "meta"
        public static let chunks = "chunks"
        public static let pull = "pull"
        public static let intervals = "intervals"
        public static let fetch = "fetch"
        public static let peers = "peers"
        public static let downloads = "downloads"
        public static let journal = "journal"
        /// Free payload slots: slot → ID of the transaction that freed it.
        public static let slots = "slots"
        /// Chunks stored recently, in arrival order: sequence → address ‖ ChunkRecord. Merged
        /// into `chunks` in address order from time to time (schema v2; see Docs/Storage.md).
        public static let landing = "landing"
        /// Pinned files: root address → `PinRecord` (schema v3).
        public static let pins = "pins"
        /// Chunks held by pins: address → how many pinned roots hold it (`LEUInt64`). Eviction
        /// skips every chunk listed here (schema v3).
        public static let pinned = "pinned"

        public static let all = [meta, chunks, pull, intervals, fetch, peers, downloads, journal, slots, landing, pins, pinned]
    }

    /// Keys of `meta` (UTF-8). Values are UInt64 little-endian unless noted.
    public enum MetaKey {
        public static let schemaVersion = "schema_version"
        public static let epoch = "epoch"
        /// Creation time, milliseconds since 1970.
        public static let createdAt = "created_at_ms"
        /// The node overlay bins are computed against (32 bytes).
        public static let overlay = "overlay"
        /// Slots [0, slots_next) have been handed out: each is either used by a chunk or free.
        public static let slotsNext = "slots_next"
        /// Bins below the radius were evicted for capacity.
        public static let radius = "storage_radius"
        /// The capacity in chunks last configured (0: unbounded).
        public static let capacity = "capacity_chunks"
        /// Payload slot size in bytes.
        public static let slotSize = "slot_size"
        /// The sequence the next `landing` entry gets; sequences are never reused.
        public static let landingNext = "landing_next"
    }

    public static let slotSize = 4096
    public static let slotFileName = "chunks.slots"
    /// The journal keeps this many newest entries.
    public static let journalEntriesMax = 10_000
}

// MARK: landing: sequence → address ‖ ChunkRecord

/// A `landing` entry: a chunk stored since the last merge, with its address (the key is the
/// arrival sequence, 8 bytes big-endian).
public struct LandingEntry: Equatable, Sendable, LMDBCodable {
    public var address: ChunkAddress
    public var record: ChunkRecord

    public static let encodedSize = Address32.byteCount + ChunkRecord.encodedSize

    public init(address: ChunkAddress, record: ChunkRecord) {
        (self.address, self.record) = (address, record)
    }

    public func encodeLMDB(into bytes: inout [UInt8]) {
        bytes.append(contentsOf: address.bytes)
        record.encodeLMDB(into: &bytes)
    }

    public init(decodingLMDB bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count == Self.encodedSize, let address = Address32(raw: UnsafeRawBufferPointer(rebasing: bytes[0..<32])) else {
            throw LMDBDecodingError(LandingEntry.self, "\(bytes.count) bytes, want \(Self.encodedSize)")
        }
        self.address = address
        record = try ChunkRecord(decodingLMDB: UnsafeRawBufferPointer(rebasing: bytes[32...]))
    }
}

// MARK: chunks: address → ChunkRecord

/// Where a stored chunk lives: its span and length, its bin and bin ID, and its payload slot.
public struct ChunkRecord: Equatable, Sendable, LMDBCodable {
    public var span: UInt64
    public var slot: UInt64
    public var binID: UInt64
    public var length: UInt16
    public var bin: UInt8

    public static let encodedSize = 27

    public init(span: UInt64, slot: UInt64, binID: UInt64, length: UInt16, bin: UInt8) {
        (self.span, self.slot, self.binID, self.length, self.bin) = (span, slot, binID, length, bin)
    }

    public func encodeLMDB(into bytes: inout [UInt8]) {
        var w = ByteWriter(capacity: Self.encodedSize)
        w.u64(span); w.u64(slot); w.u64(binID); w.u16(length); w.u8(bin)
        bytes.append(contentsOf: w.bytes)
    }

    public init(decodingLMDB bytes: UnsafeRawBufferPointer) throws {
        var r = ByteReader(bytes, for: ChunkRecord.self)
        span = try r.u64(); slot = try r.u64(); binID = try r.u64(); length = try r.u16(); bin = try r.u8()
        try r.finish()
        guard length >= 1 && Int(length) <= Chunk.payloadMax else {
            throw LMDBDecodingError(ChunkRecord.self, "payload length \(length) outside 1…4096")
        }
        guard Int(bin) < Proximity.binCount else {
            throw LMDBDecodingError(ChunkRecord.self, "bin \(bin) outside 0…31")
        }
    }
}

// MARK: pull: (bin, bin ID) → address; (bin) → cursor

/// A key of `pull`: one byte of bin then the bin ID big-endian (9 bytes), or the bin alone
/// (1 byte) for the bin's cursor, which sorts first in its bin.
public struct PullKey: Hashable, Sendable, LMDBCodable {
    public var bin: UInt8
    /// nil for the cursor key.
    public var binID: UInt64?

    public init(bin: UInt8, binID: UInt64?) { (self.bin, self.binID) = (bin, binID) }
    public static func cursor(_ bin: UInt8) -> PullKey { PullKey(bin: bin, binID: nil) }

    public func encodeLMDB(into bytes: inout [UInt8]) {
        bytes.append(bin)
        if let binID { binID.encodeLMDB(into: &bytes) }
    }

    public init(decodingLMDB bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count == 1 || bytes.count == 9 else {
            throw LMDBDecodingError(PullKey.self, "\(bytes.count) bytes, want 1 or 9")
        }
        bin = bytes[0]
        binID = bytes.count == 9 ? try UInt64(decodingLMDB: UnsafeRawBufferPointer(rebasing: bytes[1...])) : nil
    }
}

// MARK: intervals: (peer, bin) → IntervalRecord

public struct IntervalKey: Hashable, Sendable, LMDBCodable {
    public var peer: OverlayAddress
    public var bin: UInt8

    public init(peer: OverlayAddress, bin: UInt8) { (self.peer, self.bin) = (peer, bin) }

    public func encodeLMDB(into bytes: inout [UInt8]) {
        peer.append(to: &bytes)
        bytes.append(bin)
    }

    public init(decodingLMDB bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count == 33 else { throw LMDBDecodingError(IntervalKey.self, "\(bytes.count) bytes, want 33") }
        peer = Address32(raw: UnsafeRawBufferPointer(rebasing: bytes[0..<32]))!
        bin = bytes[32]
    }
}

/// The peer's store epoch when these ranges were synced, and the ranges.
///
/// Decoding keeps the ranges as stored (`IntervalSet(canonical:)` is nil for a damaged set),
/// so `verify` can report a set that is not sorted and disjoint instead of silently fixing it.
public struct IntervalRecord: Equatable, Sendable, LMDBCodable {
    public var epoch: UInt64
    public var ranges: [ClosedRange<UInt64>]

    public init(epoch: UInt64, set: IntervalSet) { (self.epoch, self.ranges) = (epoch, set.ranges) }

    public var set: IntervalSet { IntervalSet(ranges) }

    public func encodeLMDB(into bytes: inout [UInt8]) {
        var w = ByteWriter(capacity: 12 + 16 * ranges.count)
        w.u64(epoch)
        w.u32(UInt32(ranges.count))
        for r in ranges { w.u64(r.lowerBound); w.u64(r.upperBound) }
        bytes.append(contentsOf: w.bytes)
    }

    public init(decodingLMDB bytes: UnsafeRawBufferPointer) throws {
        var r = ByteReader(bytes, for: IntervalRecord.self)
        epoch = try r.u64()
        let count = Int(try r.u32())
        guard count * 16 == r.remaining else {
            throw LMDBDecodingError(IntervalRecord.self, "\(count) ranges do not fill \(r.remaining) bytes")
        }
        ranges = []
        ranges.reserveCapacity(count)
        for _ in 0..<count {
            let from = try r.u64(), to = try r.u64()
            guard from <= to else { throw LMDBDecodingError(IntervalRecord.self, "range \(from)-\(to) is inverted") }
            ranges.append(from...to)
        }
    }
}

// MARK: fetch: address → FetchRecord

/// A chunk this node still has to fetch.
public struct FetchRecord: Equatable, Sendable, LMDBCodable {
    public var attempts: UInt32
    /// Not before this time (milliseconds since 1970).
    public var nextAttemptMs: UInt64
    /// The download (root address) this fetch belongs to; nil for none.
    public var group: ChunkAddress?
    /// Peers that may have the chunk, best first (at most `hintsMax`).
    public var hints: [OverlayAddress]

    public static let hintsMax = 16

    public init(attempts: UInt32 = 0, nextAttemptMs: UInt64 = 0, group: ChunkAddress? = nil, hints: [OverlayAddress] = []) {
        self.attempts = attempts
        self.nextAttemptMs = nextAttemptMs
        self.group = group
        self.hints = Array(hints.prefix(Self.hintsMax))
    }

    public func encodeLMDB(into bytes: inout [UInt8]) {
        var w = ByteWriter(capacity: 46 + 32 * hints.count)
        w.u32(attempts); w.u64(nextAttemptMs)
        w.address(group ?? .zero)
        w.u8(UInt8(hints.count))
        for h in hints { w.address(h) }
        bytes.append(contentsOf: w.bytes)
    }

    public init(decodingLMDB bytes: UnsafeRawBufferPointer) throws {
        var r = ByteReader(bytes, for: FetchRecord.self)
        attempts = try r.u32(); nextAttemptMs = try r.u64()
        let g = try r.address()
        group = g == .zero ? nil : g
        let n = Int(try r.u8())
        guard n <= Self.hintsMax else { throw LMDBDecodingError(FetchRecord.self, "\(n) hints (max \(Self.hintsMax))") }
        hints = try (0..<n).map { _ in try r.address() }
        try r.finish()
    }
}

// MARK: peers: overlay → PeerRecord

public struct PeerRecord: Equatable, Sendable, LMDBCodable {
    /// Network addresses ("host:port"), at most `addressesMax`, each at most 255 bytes.
    public var addresses: [String]
    public var lastSeenMs: UInt64
    public var score: Int64
    /// Banned until this time (milliseconds since 1970); 0 for not banned.
    public var banUntilMs: UInt64

    public static let addressesMax = 8

    public init(addresses: [String], lastSeenMs: UInt64 = 0, score: Int64 = 0, banUntilMs: UInt64 = 0) {
        self.addresses = Array(addresses.filter { $0.utf8.count <= 255 }.prefix(Self.addressesMax))
        (self.lastSeenMs, self.score, self.banUntilMs) = (lastSeenMs, score, banUntilMs)
    }

    public func encodeLMDB(into bytes: inout [UInt8]) {
        var w = ByteWriter()
        w.u64(lastSeenMs); w.i64(score); w.u64(banUntilMs)
        w.u8(UInt8(addresses.count))
        for a in addresses { w.u8(UInt8(a.utf8.count)); w.raw(a.utf8) }
        bytes.append(contentsOf: w.bytes)
    }

    public init(decodingLMDB bytes: UnsafeRawBufferPointer) throws {
        var r = ByteReader(bytes, for: PeerRecord.self)
        lastSeenMs = try r.u64(); score = try r.i64(); banUntilMs = try r.u64()
        let n = Int(try r.u8())
        guard n <= Self.addressesMax else { throw LMDBDecodingError(PeerRecord.self, "\(n) addresses") }
        addresses = try (0..<n).map { _ in
            let raw = try r.bytes(Int(try r.u8()))
            guard let s = String(validating: raw, as: UTF8.self) else {
                throw LMDBDecodingError(PeerRecord.self, "address is not UTF-8")
            }
            return s
        }
        try r.finish()
    }
}

// MARK: downloads: root → DownloadRecord

public struct DownloadRecord: Equatable, Sendable, LMDBCodable {
    public enum Policy: UInt8, Sendable { case eagerPin = 0, onRead = 1 }
    public enum State: UInt8, Sendable { case active = 0, paused = 1, done = 2, failed = 3 }

    public var policy: Policy
    public var state: State
    public var chunksDone: UInt64
    public var chunksTotal: UInt64
    public var createdMs: UInt64

    public init(policy: Policy, state: State, chunksDone: UInt64, chunksTotal: UInt64, createdMs: UInt64) {
        (self.policy, self.state, self.chunksDone, self.chunksTotal, self.createdMs) =
            (policy, state, chunksDone, chunksTotal, createdMs)
    }

    public func encodeLMDB(into bytes: inout [UInt8]) {
        var w = ByteWriter(capacity: 26)
        w.u8(policy.rawValue); w.u8(state.rawValue); w.u64(chunksDone); w.u64(chunksTotal); w.u64(createdMs)
        bytes.append(contentsOf: w.bytes)
    }

    public init(decodingLMDB bytes: UnsafeRawBufferPointer) throws {
        var r = ByteReader(bytes, for: DownloadRecord.self)
        guard let p = Policy(rawValue: try r.u8()), let s = State(rawValue: try r.u8()) else {
            throw LMDBDecodingError(DownloadRecord.self, "unknown policy or state")
        }
        policy = p; state = s
        chunksDone = try r.u64(); chunksTotal = try r.u64(); createdMs = try r.u64()
        try r.finish()
    }
}

// MARK: pins: root → PinRecord

/// A pinned file: its root is in `pins`, and each of its chunks (root, intermediates, leaves,
/// parities) counts it once in `pinned`, so none of them is evicted while the pin stands.
public struct PinRecord: Equatable, Sendable, LMDBCodable {
    /// Distinct chunks of the tree the pin holds.
    public var chunks: UInt64
    /// The file's size in bytes (its root span).
    public var bytes: UInt64
    /// When it was pinned, milliseconds since 1970.
    public var pinnedMs: UInt64

    public static let encodedSize = 24

    public init(chunks: UInt64, bytes: UInt64, pinnedMs: UInt64) {
        (self.chunks, self.bytes, self.pinnedMs) = (chunks, bytes, pinnedMs)
    }

    public func encodeLMDB(into bytes: inout [UInt8]) {
        var w = ByteWriter(capacity: Self.encodedSize)
        w.u64(chunks); w.u64(self.bytes); w.u64(pinnedMs)
        bytes.append(contentsOf: w.bytes)
    }

    public init(decodingLMDB bytes: UnsafeRawBufferPointer) throws {
        var r = ByteReader(bytes, for: PinRecord.self)
        chunks = try r.u64(); self.bytes = try r.u64(); pinnedMs = try r.u64()
        try r.finish()
    }
}

// MARK: journal: sequence → JournalEntry

/// One supervisor decision: when, and what (one line of text, typically JSON).
public struct JournalEntry: Equatable, Sendable, LMDBCodable {
    public var timeMs: UInt64
    public var text: String

    public init(timeMs: UInt64, text: String) { (self.timeMs, self.text) = (timeMs, text) }

    public func encodeLMDB(into bytes: inout [UInt8]) {
        var w = ByteWriter(capacity: 8 + text.utf8.count)
        w.u64(timeMs); w.raw(text.utf8)
        bytes.append(contentsOf: w.bytes)
    }

    public init(decodingLMDB bytes: UnsafeRawBufferPointer) throws {
        var r = ByteReader(bytes, for: JournalEntry.self)
        timeMs = try r.u64()
        let raw = try r.bytes(r.remaining)
        guard let s = String(validating: raw, as: UTF8.self) else {
            throw LMDBDecodingError(JournalEntry.self, "text is not UTF-8")
        }
        text = s
    }
}

/// A UInt64 stored little-endian as a value (keys use the big-endian `UInt64` conformance).
public struct LEUInt64: Equatable, Sendable, LMDBCodable {
    public var value: UInt64
    public init(_ value: UInt64) { self.value = value }
    public func encodeLMDB(into bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }
    public init(decodingLMDB bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count == 8 else { throw LMDBDecodingError(LEUInt64.self, "\(bytes.count) bytes, want 8") }
        value = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
    }
}
