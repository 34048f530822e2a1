import ShoalCore
import ShoalNode
import ShoalStore
import ShoalTestSupport
import Testing

/// A light node (`pullSync` false) keeps no neighbourhood: connected to a node that holds
/// chunks it pulls none of them by sync, downloads them when asked, and still serves what it
/// stores to its peers' sync.
@Suite(.serialized)
struct NodeLightTests {
    @Test(.timeLimit(.minutes(2)))
    func aLightNodeSyncsNothingDownloadsWhatItIsAskedForAndStillServes() async throws {
        let a = try RunningNode(name: "a")
        let addressA = try await a.start()
        let chunks = SeededChunks.chunks(count: 300, seed: 71)
        for chunk in chunks { try await a.node.upload(chunk) }

        let light = try RunningNode(name: "light", peers: [addressA]) { $0.pullSync = false }
        _ = try await light.start()
        try await eventually("the light node is connected to A") { await light.node.peers().count == 1 }
        // A normal node pulls these 300 chunks in well under a second; the light node, connected
        // for three, pulls nothing and is offered nothing.
        try await Task.sleep(for: .seconds(3))
        #expect(await light.node.peers().count == 1, "still connected")
        #expect(try light.node.store.count() == 0)
        #expect(try light.node.status().chunksReceived == 0)
        #expect(await light.node.peers().allSatisfy { $0.bins.isEmpty }, "no bin is synced from A")
        let topology = await light.node.topology()
        #expect(topology.radius == SubscriptionPlan.keepsNothing && topology.pullSync == false)
        #expect(topology.peers.count == 1 && topology.peers.allSatisfy { $0.subscribedBins.isEmpty })
        let status = try light.node.status()
        #expect(status.pullSync == false && status.storageRadius == 0, "the store evicted nothing")

        // On demand: a download fetches them all from A.
        let started = try await light.node.startDownload(chunks.map(\.address))
        var report = started
        try await eventually("the download ends", within: .seconds(60)) {
            report = try #require(await light.node.download(started.id))
            return report.outcome != nil
        }
        #expect(report.outcome == .completed)
        #expect(try light.node.store.count() == chunks.count)
        for chunk in chunks { #expect(try light.node.chunk(chunk.address) == chunk) }

        // It serves: A pulls what was uploaded to the light node alone.
        let own = SeededChunks.chunks(count: 20, seed: 72)
        for chunk in own { try await light.node.upload(chunk) }
        try await eventually("A pulls the light node's own chunks", within: .seconds(30)) {
            try own.allSatisfy { try a.node.store.has($0.address) }
        }
        #expect(try a.node.status().pullSync == true)
        await light.stop()
        await a.stop()
        #expect(try verifyClean(light.directory))
    }
}
