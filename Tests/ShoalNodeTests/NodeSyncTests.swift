import Foundation
import ShoalCore
import ShoalNode
import ShoalStore
import ShoalTestSupport
import Testing

@Suite(.serialized)
struct NodeSyncTests {
    @Test(.timeLimit(.minutes(2)))
    func chunksPostedToOneNodeAppearInItsPeerAndLiveOnesFollow() async throws {
        let a = try RunningNode(name: "a")
        let addressA = try await a.start()
        let history = SeededChunks.chunks(count: 500, seed: 1)
        for chunk in history { try await a.node.upload(chunk) }

        let b = try RunningNode(name: "b", peers: [addressA])
        _ = try await b.start()
        try await eventually("B holds A's chunks", within: .seconds(60)) { try b.node.store.count() == history.count }
        try await eventually("B's history streams finish", within: .seconds(10)) { await b.node.historySynced() }

        // B is synced; new chunks at A arrive through the live streams.
        let live = SeededChunks.chunks(count: 50, seed: 2)
        for chunk in live { try await a.node.upload(chunk) }
        try await eventually("live chunks reach B", within: .seconds(30)) { try b.node.store.count() == history.count + live.count }
        for chunk in history + live {
            #expect(try b.node.chunk(chunk.address) == chunk)
        }
        // And the other way: A syncs from B too (every peer is a neighbour at depth 0).
        let fromB = SeededChunks.chunks(count: 20, seed: 3)
        for chunk in fromB { try await b.node.upload(chunk) }
        try await eventually("B's chunks reach A", within: .seconds(30)) { try a.node.store.count() == history.count + live.count + fromB.count }

        let peers = await b.node.peers()
        #expect(peers.count == 1)
        #expect(peers.first?.bins.allSatisfy { $0.invalid == 0 } == true)
        await b.stop()
        await a.stop()
        #expect(try verifyClean(a.directory))
        #expect(try verifyClean(b.directory))
    }

    @Test(.timeLimit(.minutes(2)))
    func threeNodesInALineCarryChunksFromEndToEnd() async throws {
        let a = try RunningNode(name: "a")
        let addressA = try await a.start()
        let b = try RunningNode(name: "b", peers: [addressA])
        let addressB = try await b.start()
        let c = try RunningNode(name: "c", peers: [addressB])
        _ = try await c.start()
        let chunks = SeededChunks.chunks(count: 200, seed: 4)
        for chunk in chunks { try await a.node.upload(chunk) }
        try await eventually("C holds A's chunks via B", within: .seconds(60)) { try c.node.store.count() == chunks.count }
        #expect(try a.node.store.count() == chunks.count)
        for chunk in chunks { #expect(try c.node.chunk(chunk.address) == chunk) }
        await c.stop()
        await b.stop()
        await a.stop()
    }

    @Test(.timeLimit(.minutes(2)))
    func aCleanlyRestartedNodeResumesWithoutFetchingAgain() async throws {
        let a = try RunningNode(name: "a")
        let addressA = try await a.start()
        let first = SeededChunks.chunks(count: 300, seed: 5)
        for chunk in first { try await a.node.upload(chunk) }
        let b = try RunningNode(name: "b", peers: [addressA])
        _ = try await b.start()
        try await eventually("B holds the first chunks", within: .seconds(60)) { try b.node.store.count() == first.count }
        try await eventually("B's history streams finish", within: .seconds(10)) { await b.node.historySynced() }

        _ = try await b.restart(peers: [addressA])
        let more = SeededChunks.chunks(count: 100, seed: 6)
        for chunk in more { try await a.node.upload(chunk) }
        try await eventually("B holds all chunks after the restart", within: .seconds(60)) { try b.node.store.count() == first.count + more.count }
        try await eventually("B's history streams finish again", within: .seconds(10)) { await b.node.historySynced() }
        let peers = await b.node.peers()
        let delivered = peers.flatMap(\.bins).map(\.delivered).reduce(0, +)
        let duplicates = peers.flatMap(\.bins).map(\.duplicates).reduce(0, +)
        #expect(delivered == more.count, "after the restart only the new chunks were delivered")
        #expect(duplicates == 0)
        await b.stop()
        await a.stop()
    }
}

/// Opens a stopped node's store read-only and verifies it.
func verifyClean(_ dataDirectory: String) throws -> Bool {
    let store = try Store(directory: dataDirectory + "/store", options: Store.Options(readOnly: true))
    defer { store.close() }
    let report = try store.verify()
    if !report.isClean { print("verify \(dataDirectory): \(report.problems.prefix(5))") }
    return report.isClean
}
