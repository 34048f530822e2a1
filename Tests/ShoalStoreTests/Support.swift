import Foundation
import LMDB
import ShoalCore
import ShoalStore
import Testing

/// Opens a raw LMDB environment on a closed store's directory, to damage it on purpose.
func withRawEnvironment(_ directory: String, _ body: (Environment) throws -> Void) throws {
    let env = try Environment(path: directory)
    defer { env.close() }
    try body(env)
}

func overwrite(file: String, at offset: Int, with bytes: [UInt8]) throws {
    let handle = try #require(FileHandle(forUpdatingAtPath: file))
    defer { try? handle.close() }
    try handle.seek(toOffset: UInt64(offset))
    handle.write(Data(bytes))
}

/// Expects `verify` to find nothing, and shows what it found if not.
func expectClean(_ store: Store, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let report = try store.verify()
    #expect(report.problems == [], "verify found: \(report.problems.prefix(5))", sourceLocation: sourceLocation)
}
