import Foundation
import LMDB
import ShoalCore
import ShoalStore
import Testing

/// A store in a fresh temporary directory; closed and removed at the end.
final class TestStore {
    let directory: String
    let overlay: OverlayAddress
    private(set) var store: Store
    var chunks: ChunkSource

    init(capacity: UInt64? = nil, seed: UInt64 = 1, mapSize: Int = 1 << 26, mapSizeMax: Int = 1 << 34) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("store-\(UUID().uuidString)").path
        overlay = Address32(w0: 0xF0F0_F0F0_0000_0000, w1: 1, w2: 2, w3: 3)
        var options = Store.Options(overlay: overlay, capacityChunks: capacity)
        options.mapSize = mapSize
        options.mapSizeMax = mapSizeMax
        store = try Store(directory: directory, options: options)
        chunks = ChunkSource(seed: seed)
    }

    deinit {
        store.close()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Closes and opens the store again (as after a restart).
    func reopen(readOnly: Bool = false, capacity: UInt64? = nil) throws {
        store.close()
        store = try Store(directory: directory, options: Store.Options(overlay: readOnly ? nil : overlay,
                                                                        capacityChunks: capacity, readOnly: readOnly))
    }

    /// Runs `body` with the store closed (for tampering with its files), then reopens it.
    func whileClosed(_ body: (String) throws -> Void) throws {
        store.close()
        try body(directory)
        store = try Store(directory: directory, options: Store.Options(overlay: overlay))
    }

    var slotFilePath: String { directory + "/" + Schema.slotFileName }
}

/// Seeded random chunks, so a failing test replays.
struct ChunkSource {
    var rng: SplitMix64
    init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    mutating func next(size: Int = 4096) -> Chunk { try! Chunk(payload: rng.bytes(size)) }
    mutating func next(_ n: Int, size: Int = 4096) -> [Chunk] { (0..<n).map { _ in next(size: size) } }

    /// A chunk whose address falls in `bin` relative to `overlay` (by trying; bins ≤ 8 are quick).
    mutating func next(inBin bin: Int, of overlay: OverlayAddress) -> Chunk {
        while true {
            let c = next(size: 64)
            if Proximity.bin(of: c.address, relativeTo: overlay) == bin { return c }
        }
    }
}

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
