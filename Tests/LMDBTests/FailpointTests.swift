import Foundation
@testable import LMDB
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `_Failpoints.commit` fails a commit as LMDB does: the transaction is gone, none of it is
/// visible, the errno is LMDB's error, and the environment goes on.
@Suite(.serialized) struct FailpointTests {
    @Test func aFailedCommitLeavesNothingOfItsTransactionVisible() throws {
        let t = try TestEnvironment()
        let table = try t.env.openDatabase("t", create: true)
        let one: [UInt8] = [1], two: [UInt8] = [2], three: [UInt8] = [3]
        try t.env.write { try $0.put(table, one, one) }
        _Failpoints.arm(.commit, after: 0, errno: EIO, under: t.path)
        defer { _Failpoints.disarm(under: t.path) }
        let error = #expect(throws: LMDBError.self) {
            try t.env.write { txn in
                try txn.put(table, one, three)
                try txn.put(table, two, two)
            }
        }
        #expect(error?.code == EIO)
        #expect(error?.operation == "mdb_txn_commit")
        #expect(try t.env.read { try $0.get(table, one) } == one)
        #expect(try t.env.read { try $0.get(table, two) } == nil)
        // One-shot: the next commit is real.
        try t.env.write { try $0.put(table, three, three) }
        #expect(try t.env.read { try $0.get(table, three) } == three)
        t.expectNoReaderHeld()
    }

    @Test func countsOnlyCallsUnderItsDirectory() throws {
        let armed = try TestEnvironment()
        let other = try TestEnvironment()
        _Failpoints.arm(.commit, after: 1, errno: ENOSPC, under: armed.path)
        defer { _Failpoints.disarm(under: armed.path) }
        for _ in 0..<3 { try other.env.write { _ in } }
        try armed.env.write { _ in }
        let error = #expect(throws: LMDBError.self) { try armed.env.write { _ in } }
        #expect(error?.name == "ENOSPC")
    }

    @Test func theEnvironmentVariableParses() throws {
        let parsed = try _Failpoints.parse("fdatasync:3:EIO,commit:0:ENOSPC:2,pwrite:1:28")
        #expect(parsed.map(\.site) == [.fdatasync, .commit, .pwrite])
        #expect(parsed.map(\.passesLeft) == [3, 0, 1])
        #expect(parsed.map(\.errno) == [EIO, ENOSPC, ENOSPC])
        #expect(parsed.map(\.failuresLeft) == [1, 2, 1])
        for bad in ["fsync:1:EIO", "pwrite:x:EIO", "pwrite:1:EWHAT", "pwrite:1", "commit:0:EIO:0"] {
            #expect(throws: _Failpoints.ParseError.self, "\(bad)") { try _Failpoints.parse(bad) }
        }
    }
}
