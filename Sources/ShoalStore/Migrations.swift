import LMDB
import ShoalCore

/// Schema migrations. Each runs in one write transaction together with the version bump, so a
/// crash leaves the store at the old version or the new one, never between.
enum Migrations {
    struct Migration: Sendable {
        let from: UInt64
        let run: @Sendable (Transaction, Store.Options) throws -> Void
    }

    /// Index `i` migrates version `i` to `i + 1`.
    static let all: [Migration] = [
        Migration(from: 0) { txn, options in
            // v0 → v1: an empty environment becomes a store.
            for name in Schema.Name.all where ![Schema.Name.landing, Schema.Name.pins, Schema.Name.pinned].contains(name) { _ = try txn.openDatabase(name, flags: 0x40000 /* MDB_CREATE */) }
            let meta = try txn.openDatabase(Schema.Name.meta)
            guard let overlay = options.overlay else {
                throw StoreError(.notAStore, "creating a store needs the node's overlay")
            }
            try txn.put(meta, Schema.MetaKey.overlay.lmdbBytes, overlay.bytes)
            try txn.putMeta(meta, Schema.MetaKey.epoch, UInt64.random(in: 1...UInt64.max))
            try txn.putMeta(meta, Schema.MetaKey.createdAt, options.now())
            try txn.putMeta(meta, Schema.MetaKey.slotsNext, 0)
            try txn.putMeta(meta, Schema.MetaKey.radius, 0)
            try txn.putMeta(meta, Schema.MetaKey.slotSize, UInt64(Schema.slotSize))
        },
        Migration(from: 1) { txn, _ in
            // v1 → v2: new chunks land in `landing` first (appends) and are merged into `chunks`
            // in address order later. Existing chunks stay where they are.
            _ = try txn.openDatabase(Schema.Name.landing, flags: 0x40000 /* MDB_CREATE */)
            let meta = try txn.openDatabase(Schema.Name.meta)
            try txn.putMeta(meta, Schema.MetaKey.landingNext, 1)
        },
        Migration(from: 2) { txn, _ in
            // v2 → v3: pinned files (`pins`) and the chunks they hold (`pinned`), both empty.
            _ = try txn.openDatabase(Schema.Name.pins, flags: 0x40000 /* MDB_CREATE */)
            _ = try txn.openDatabase(Schema.Name.pinned, flags: 0x40000 /* MDB_CREATE */)
        },
    ]

    /// The version recorded in `meta`, or 0 for an environment with no store in it.
    static func currentVersion(of env: Environment) throws -> UInt64 {
        try env.read { txn in
            let meta: Database
            do {
                meta = try txn.openDatabase(Schema.Name.meta)
            } catch let e as LMDBError where e.code == -30798 /* MDB_NOTFOUND */ {
                return 0
            }
            return try txn.withValue(meta, Schema.MetaKey.schemaVersion.lmdbBytes) { raw in
                try raw.map { try LEUInt64(decodingLMDB: $0).value } ?? 0
            }
        }
    }

    static func run(on env: Environment, from version: UInt64, options: Store.Options) throws {
        precondition(all.count == Int(Schema.version), "one migration per schema version")
        for migration in all[Int(version)...] {
            try env.write { txn in
                try migration.run(txn, options)
                let meta = try txn.openDatabase(Schema.Name.meta, flags: 0x40000)
                try txn.put(meta, Schema.MetaKey.schemaVersion.lmdbBytes, LEUInt64(migration.from + 1).lmdbBytes)
            }
        }
    }
}
