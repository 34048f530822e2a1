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

    /// With a capacity, a node keeps only what is within its storage radius, and sync stops
    /// bringing what eviction removed: offers below the radius are not wanted, live or after
    /// a restart (when the reset intervals of evicted bins are offered again).
    @Test(.timeLimit(.minutes(3)))
    func aNodeWithACapacitySyncsOnlyWhatItKeeps() async throws {
        let a = try RunningNode(name: "a")
        let addressA = try await a.start()
        for chunk in SeededChunks.chunks(count: 1500, seed: 7) { try await a.node.upload(chunk) }
        // B at PO 0 from A: once B's radius is 2 or more, A's bin 0 (the one bin B then syncs
        // from it) holds chunks at B's PO 1, below the radius, which B must not want.
        var made = try RunningNode(name: "b", peers: [addressA]) { $0.capacityChunks = 500 }
        for _ in 0..<64 where made.node.overlay.proximity(to: a.node.overlay) != 0 {
            made = try RunningNode(name: "b", peers: [addressA]) { $0.capacityChunks = 500 }
        }
        let b = made
        try #require(b.node.overlay.proximity(to: a.node.overlay) == 0)
        _ = try await b.start()
        try await eventually("B evicts and has a radius of 2 or more", within: .seconds(60)) { try b.node.status().storageRadius >= 2 }
        try await eventually("B's history streams finish", within: .seconds(60)) { await b.node.historySynced() }
        // Settled: what B received no longer moves.
        var received = try b.node.status().chunksReceived
        try await eventually("B stops receiving", within: .seconds(30)) {
            try await Task.sleep(for: .milliseconds(1500))
            let now = try b.node.status().chunksReceived
            defer { received = now }
            return now == received
        }
        let radius = try b.node.status().storageRadius
        let live = SeededChunks.chunks(count: 300, seed: 8)
        let kept = live.filter { $0.address.proximity(to: b.node.overlay) >= radius }
        for chunk in live { try await a.node.upload(chunk) }
        try await eventually("B gets the new chunks within its radius", within: .seconds(30)) {
            let radiusNow = try b.node.status().storageRadius
            return try kept.filter { $0.address.proximity(to: b.node.overlay) >= radiusNow }.allSatisfy { try b.node.store.has($0.address) }
        }
        try await Task.sleep(for: .seconds(3))
        let delta = try b.node.status().chunksReceived - received
        #expect(delta <= kept.count, "B fetched \(delta) of 300 new chunks; \(kept.count) are within radius \(radius)")
        #expect(try b.node.store.count() <= 500 + 256, "the store stays near its capacity")

        // After a restart the evicted bins (their intervals reset) are offered again and not fetched.
        _ = try await b.restart(peers: [addressA])
        try await eventually("B's history streams finish after the restart", within: .seconds(60)) { await b.node.historySynced() }
        try await Task.sleep(for: .seconds(2))
        let delivered = await b.node.peers().flatMap(\.bins).map(\.delivered).reduce(0, +)
        #expect(delivered == 0, "nothing evicted was fetched again (\(delivered) delivered)")
        await b.stop()
        await a.stop()
        #expect(try verifyClean(b.directory))
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
