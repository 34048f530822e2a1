import CLMDB
import Foundation
import LMDB
import Testing

/// A fresh environment in its own temporary directory, closed and removed at the end.
final class TestEnvironment {
    let path: String
    let env: Environment

    init(mapSize: Int = 1 << 26, mapSizeMax: Int = 1 << 30) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("lmdb-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        var options = Environment.Options()
        options.mapSize = mapSize
        options.mapSizeMax = mapSizeMax
        env = try Environment(path: path, options: options)
    }

    deinit {
        env.close()
        try? FileManager.default.removeItem(atPath: path)
    }

    /// No reader slot may be left holding a snapshot after a test's transactions ended.
    func expectNoReaderHeld(sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(env.readers().allSatisfy { $0.transactionID == nil }, sourceLocation: sourceLocation)
    }
}

struct EnvironmentTests {
    @Test func writeCommitsOnReturnAndAbortsOnThrow() throws {
        let t = try TestEnvironment()
        let db = try t.env.openDatabase("things", create: true)
        try t.env.write { txn in try txn.put(db, Array("a".utf8), [1]) }
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try t.env.write { txn in
                try txn.put(db, Array("b".utf8), [2])
                throw Boom()
            }
        }
        let (a, b) = try t.env.read { txn in (try txn.get(db, Array("a".utf8)), try txn.get(db, Array("b".utf8))) }
        #expect(a == [1])
        #expect(b == nil)
        t.expectNoReaderHeld()
    }

    @Test func aReadSeesOneSnapshot() throws {
        let t = try TestEnvironment()
        let db = try t.env.openDatabase("n", create: true)
        try t.env.write { try $0.put(db, [0], [1]) }
        let (finished, seen) = try t.env.read { before throws -> (Bool, [UInt8]?) in
            // A write from another thread commits while this snapshot is open.
            let done = DispatchSemaphore(value: 0)
            nonisolated(unsafe) let env = t.env
            DispatchQueue.global().async {
                try! env.write { try $0.put(db, [0], [2]) }
                done.signal()
            }
            let finished = done.wait(timeout: .now() + 10) == .success
            return (finished, try before.get(db, [0]))
        }
        #expect(finished)
        #expect(seen == [1])
        #expect(try t.env.read { try $0.get(db, [0]) } == [2])
    }

    @Test func cursorsScanInKeyOrderFromASeekPoint() throws {
        let t = try TestEnvironment()
        let table = Table<UInt64, [UInt8]>(try t.env.openDatabase("ordered", create: true))
        try t.env.write { txn in
            for k in [UInt64(300), 2, 70_000, 1, 256] { try txn.put(table, k, [UInt8(k & 0xff)]) }
        }
        var keys: [UInt64] = []
        try t.env.read { txn in try txn.scan(table) { k, _ in keys.append(k); return true } }
        #expect(keys == [1, 2, 256, 300, 70_000], "big-endian keys sort numerically")
        keys = []
        try t.env.read { txn in try txn.scan(table, from: 3) { k, _ in keys.append(k); return k < 300 } }
        #expect(keys == [256, 300])
        try t.env.write { txn in
            try txn.withCursor(table.database) { c in
                #expect(try c.seek(atOrAfter: UInt64(2).lmdbBytes))
                try c.deleteCurrent()
            }
        }
        #expect(try t.env.read { try $0.count(table) } == 4)
    }

    @Test func zeroCopyReadsSeeTheMappedBytes() throws {
        let t = try TestEnvironment()
        let db = try t.env.openDatabase("z", create: true)
        let value = [UInt8](repeating: 0xab, count: 10_000)
        try t.env.write { try $0.put(db, [1], value) }
        let sum = try t.env.read { txn in
            try txn.withValue(db, [UInt8]([1])) { raw in raw.map { $0.reduce(0) { $0 + Int($1) } } }
        }
        #expect(sum == 0xab * 10_000)
        let absent = try t.env.read { txn in try txn.withValue(db, [UInt8]([2])) { $0 == nil } }
        #expect(absent)
    }

    @Test func mapGrowsFromOneMebibyteWhenFull() throws {
        let t = try TestEnvironment(mapSize: 1 << 20)
        let table = Table<UInt64, [UInt8]>(try t.env.openDatabase("big", create: true))
        let value = [UInt8](repeating: 7, count: 3000)
        for batch in 0..<20 {
            try t.env.write { txn in
                for i in 0..<200 { try txn.put(table, UInt64(batch * 200 + i), value) }
            }
        }
        #expect(t.env.mapSize > 1 << 20)
        #expect(try t.env.read { try $0.count(table) } == 4000)
        #expect(try t.env.read { try $0.get(table, 3999) } == value)
    }

    @Test func mapFullBeyondTheLimitFailsCleanlyAndKeepsWhatWasCommitted() throws {
        let t = try TestEnvironment(mapSize: 1 << 20, mapSizeMax: 1 << 20)
        let table = Table<UInt64, [UInt8]>(try t.env.openDatabase("capped", create: true))
        try t.env.write { try $0.put(table, 0, [1]) }
        let error = #expect(throws: LMDBError.self) {
            try t.env.write { txn in
                for i in 1...2000 { try txn.put(table, UInt64(i), [UInt8](repeating: 1, count: 3000)) }
            }
        }
        #expect(error?.name == "MDB_MAP_FULL")
        #expect(error?.operation.hasPrefix("mdb_put") == true)
        #expect(try t.env.read { try $0.count(table) } == 1)
        #expect(try t.env.read { try $0.get(table, 0) } == [1])
    }

    @Test func theSameEnvironmentIsNeverOpenedTwiceInOneProcess() throws {
        let t = try TestEnvironment()
        let error = #expect(throws: LMDBError.self) { try Environment(path: t.path) }
        #expect(error?.name == "EBUSY")
        var readOnly = Environment.Options()
        readOnly.readOnly = true
        #expect(throws: LMDBError.self) { try Environment(path: t.path + "/.", options: readOnly) }
    }

    @Test func aClosedEnvironmentCanBeOpenedAgainAndKeepsItsData() throws {
        let t = try TestEnvironment()
        let db = try t.env.openDatabase("keep", create: true)
        try t.env.write { try $0.put(db, [1], [42]) }
        t.env.close()
        var readOnly = Environment.Options()
        readOnly.readOnly = true
        let again = try Environment(path: t.path, options: readOnly)
        defer { again.close() }
        let db2 = try again.openDatabase("keep")
        #expect(try again.read { try $0.get(db2, [1]) } == [42])
        let error = #expect(throws: LMDBError.self) { try again.write { _ in } }
        #expect(error?.name == "EACCES")
    }

    @Test func missingNamedDatabaseKeepsLMDBsName() throws {
        let t = try TestEnvironment()
        let error = #expect(throws: LMDBError.self) { try t.env.openDatabase("absent") }
        #expect(error?.name == "MDB_NOTFOUND")
        #expect(error?.description.contains("mdb_dbi_open(absent)") == true)
    }

    @Test func noReaderSlotLeaksAfterManyReads() throws {
        let t = try TestEnvironment()
        let db = try t.env.openDatabase("r", create: true)
        for _ in 0..<1000 { _ = try t.env.read { try $0.get(db, [1]) } }
        t.expectNoReaderHeld()
        // More reads than reader slots would have failed with MDB_READERS_FULL if slots leaked.
        #expect(t.env.readers().count <= Int(t.env.options.maxReaders))
    }

    @Test func openTransactionsCountsEachTransactionUntilItEnds() throws {
        let t = try TestEnvironment()
        let none = Environment.OpenTransactions(reads: 0, writes: 0)
        let db = try t.env.openDatabase("c", create: true)
        #expect(t.env.openTransactions == none)
        try t.env.write { txn in
            #expect(t.env.openTransactions == .init(reads: 0, writes: 1))
            try txn.put(db, [1], [1])
        }
        struct Boom: Error {}
        #expect(throws: Boom.self) { try t.env.write { _ in throw Boom() } }
        try t.env.read { _ in
            try t.env.read { _ in #expect(t.env.openTransactions == .init(reads: 2, writes: 0)) }
            #expect(t.env.openTransactions == .init(reads: 1, writes: 0))
        }
        #expect(throws: Boom.self) { try t.env.read { _ in throw Boom() } }
        _ = try t.env.openDatabase("c")
        #expect(t.env.openTransactions == none)
        // With MDB_NOTLS an ended read gives its reader slot back: none is left to this process.
        #expect(t.env.readers().filter { $0.pid == Int(getpid()) } == [])
    }

    @Test func openingAMissingDirectoryFailsWithENOENT() {
        let error = #expect(throws: LMDBError.self) { try Environment(path: "/nonexistent/shoal/\(UUID())") }
        #expect(error?.name == "ENOENT")
    }
}
