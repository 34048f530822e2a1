import Locking
import LMDB
import ShoalCore

/// Where a chunk's record lives.
enum ChunkLocation: Equatable {
    /// In `chunks`, keyed by address.
    case chunks
    /// In `landing`, under this sequence.
    case landing(UInt64)
}

/// The writing process's map from address to `landing` sequence, so that a lookup of a chunk
/// not yet merged is one B-tree descent, not a scan.
///
/// It runs ahead of older snapshots, never behind the writer: entries are added right after
/// the commit that wrote them, and a reader checks the entry against its own snapshot
/// (`landing[seq]` must hold that address), so an entry its snapshot lacks reads as absent.
/// Entries that leave `landing` (merged or evicted) stay until no reader can hold a snapshot
/// from before their removal, so such a reader still finds them.
final class LandingIndex: Sendable {
    private struct State {
        var sequences: [ChunkAddress: UInt64] = [:]
        /// Removed entries, by the transaction that removed them.
        var retired: [(transactionID: Int, entries: [(ChunkAddress, UInt64)])] = []
        /// `meta.landing_next` as of this process's last commit: a different value at the
        /// start of a write means another process wrote, and the map is rebuilt.
        var landingNext: UInt64 = 0
    }

    private let state = Locked(State())

    func sequence(of address: ChunkAddress) -> UInt64? {
        state.withLock { $0.sequences[address] }
    }

    var landingNext: UInt64 { state.withLock { $0.landingNext } }

    /// Replaces the map with every entry of `landing` in `txn`'s snapshot.
    func rebuild(from txn: Transaction, tables: Store.Tables) throws {
        var sequences: [ChunkAddress: UInt64] = [:]
        sequences.reserveCapacity(try txn.count(tables.landing) * 2)
        try txn.scan(tables.landing) { seq, entry in
            sequences[entry.address] = seq
            return true
        }
        let next = try txn.metaUInt64(tables.meta, Schema.MetaKey.landingNext) ?? 1
        state.withLock {
            $0.sequences = sequences
            $0.retired = []
            $0.landingNext = next
        }
    }

    /// A write transaction committed: what it added, what it removed, and `landing_next` after.
    func committed(_ changes: LandingChanges, transactionID: Int) {
        state.withLock { s in
            s.sequences.reserveCapacity(s.sequences.count + changes.added.count)
            for (address, seq) in changes.added { s.sequences[address] = seq }
            if !changes.removed.isEmpty { s.retired.append((transactionID, changes.removed)) }
            s.landingNext = changes.landingNext
        }
    }

    /// Forgets removed entries that no live reader can still see (`oldestReader`: the oldest
    /// snapshot any reader holds, nil when none does).
    func purge(oldestReader: () -> Int?) {
        guard state.withLock({ !$0.retired.isEmpty }) else { return }
        let oldest = oldestReader()
        state.withLock { s in
            while let first = s.retired.first, oldest.map({ $0 >= first.transactionID }) ?? true {
                for (address, seq) in first.entries where s.sequences[address] == seq {
                    s.sequences[address] = nil
                }
                s.retired.removeFirst()
            }
        }
    }
}

/// What one write transaction did to `landing`: entries it added (and left there), entries it
/// removed, and `landing_next` after.
struct LandingChanges {
    var added: [(ChunkAddress, UInt64)]
    var removed: [(ChunkAddress, UInt64)]
    var landingNext: UInt64
}

/// The `landing` entries of one read snapshot, scanned on first need: how a process without a
/// `LandingIndex` (a read-only open) finds chunks not yet merged. The last scan is kept by
/// snapshot (transaction ID), so reads between the same two commits scan once.
final class LandingSnapshot: Sendable {
    private let last = Locked<(transactionID: Int, sequences: [ChunkAddress: UInt64])?>(nil)

    func sequence(of address: ChunkAddress, txn: Transaction, tables: Store.Tables) throws -> UInt64? {
        if let hit = last.withLock({ $0?.transactionID == txn.id ? $0?.sequences[address] : nil }) { return hit }
        if last.withLock({ $0?.transactionID == txn.id }) { return nil }
        var map: [ChunkAddress: UInt64] = [:]
        try txn.scan(tables.landing) { seq, entry in
            map[entry.address] = seq
            return true
        }
        last.withLock { $0 = (txn.id, map) }
        return map[address]
    }
}

extension Store {
    /// The record of `address` in `txn`'s snapshot, and where it lives: `chunks` first, then
    /// `landing` through the index (writable) or `snapshot` (read-only).
    func locate(_ address: ChunkAddress, txn: Transaction, snapshot: LandingSnapshot?,
                pending: [ChunkAddress: UInt64] = [:]) throws -> (record: ChunkRecord, location: ChunkLocation)? {
        if let record = try txn.get(tables.chunks, address) { return (record, .chunks) }
        let seq: UInt64?
        if let own = pending[address] {
            seq = own
        } else if let landingIndex {
            seq = landingIndex.sequence(of: address)
        } else {
            seq = try snapshot?.sequence(of: address, txn: txn, tables: tables)
        }
        guard let seq, let entry = try txn.get(tables.landing, seq), entry.address == address else { return nil }
        return (entry.record, .landing(seq))
    }

    /// Moves every `landing` entry into `chunks`, in address order, so that each `chunks` leaf
    /// is written once for the lot instead of once per commit. Runs in the caller's write
    /// transaction. An entry whose address `chunks` already holds (damage: verify reports it)
    /// is dropped and its slot freed.
    static func mergeLanding(txn: Transaction, tables: Store.Tables, removed: inout [(ChunkAddress, UInt64)]) throws {
        var entries: [(seq: UInt64, entry: LandingEntry)] = []
        try txn.scan(tables.landing) { seq, entry in
            entries.append((seq, entry))
            return true
        }
        guard !entries.isEmpty else { return }
        entries.sort { $0.entry.address < $1.entry.address }
        let freedIn = UInt64(txn.id)
        for (seq, entry) in entries {
            if try !txn.insert(tables.chunks.database, entry.address.bytes, entry.record.lmdbBytes),
               try txn.get(tables.chunks, entry.address)?.slot != entry.record.slot {
                try txn.put(tables.freeSlots, FreeSlotKey(freedIn: freedIn, slot: entry.record.slot).bytes, [UInt8]())
            }
            removed.append((entry.address, seq))
        }
        try txn.clear(tables.landing.database)
    }
}

extension Store {
    /// Every decodable chunk record in `txn`'s snapshot in address order: a walk of `chunks`
    /// merged with the sorted entries of `landing`. Stops when `body` returns false.
    static func forEachRecord(txn: Transaction, tables: Tables, _ body: (ChunkAddress, ChunkRecord) throws -> Bool) throws {
        var landed: [LandingEntry] = []
        try txn.scan(tables.landing) { _, entry in
            landed.append(entry)
            return true
        }
        landed.sort { $0.address < $1.address }
        var next = 0
        var going = true
        try txn.scan(tables.chunks) { address, record in
            while next < landed.count && landed[next].address < address {
                going = try body(landed[next].address, landed[next].record)
                next += 1
                if !going { return false }
            }
            going = try body(address, record)
            return going
        }
        while going && next < landed.count {
            going = try body(landed[next].address, landed[next].record)
            next += 1
        }
    }
}
