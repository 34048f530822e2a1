import Foundation
import Locking
import NIOCore
import ShoalCore
import ShoalNode
import ShoalStore
import ShoalTestSupport
import Testing

/// The downloader in a real node: B downloads chunks from a peer C that holds them (played
/// through the transport, so it syncs nothing and answers only retrieval requests), stores
/// them, and ends the download; a chunk nobody has fails the download, naming it; the store
/// keeps the download's record (done or failed) and no fetch entry once it ended.
@Suite(.serialized)
struct NodeDownloadTests {
    /// Answers every retrieval request from `held`, and "not found" for the rest, until the
    /// connection ends; returns the requests it saw.
    static func serve(_ connection: EstablishedConnection, held: [ChunkAddress: Chunk]) -> Task<[RetrieveRequest], Error> {
        Task {
            try await connection.channel.executeThenClose { inbound, outbound in
                var seen: [RetrieveRequest] = []
                for try await message in inbound {
                    guard case .retrieveRequest(let request) = message else { continue }
                    seen.append(request)
                    let outcome: RetrieveDelivery.Outcome = held[request.address].map { .chunk(DeliveredChunk($0)) }
                        ?? .refused(Refusal(code: .notFound, message: "not here"))
                    try await outbound.write(.retrieveDelivery(RetrieveDelivery(ruid: request.ruid, outcome: outcome)))
                }
                return seen
            }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aDownloadFetchesFromThePeerThatHasTheChunksAndEnds() async throws {
        let b = try RunningNode(name: "b")
        let port = try await b.startedPort()
        let (c, connection) = try await b.dialAsRogue(seed: 101, port: port)
        let chunks = SeededChunks.chunks(count: 40, size: 512, seed: 41)
        let script = Self.serve(connection, held: Dictionary(uniqueKeysWithValues: chunks.map { ($0.address, $0) }))
        try await eventually("B may ask C") { await b.node.retrievalStatus().peers == 1 }

        let started = try await b.node.startDownload(chunks.map(\.address), hints: [c.identity.overlay])
        var report = started
        try await eventually("the download ends") {
            report = try #require(await b.node.download(started.id))
            return report.outcome != nil
        }
        #expect(report.outcome == .completed)
        for chunk in chunks { #expect(try b.node.chunk(chunk.address) == chunk) }
        // Ended: its record says done, with every chunk counted, and no fetch entry is left.
        let records = try b.node.store.read { try $0.downloads() }
        #expect(records.map(\.root) == [started.id.key])
        let record = try #require(records.first?.record)
        #expect(record.state == .done && record.chunksDone == 40 && record.chunksTotal == 40)
        #expect(try b.node.store.read { try $0.fetchSet().count } == 0)
        await b.stop()
        let requests = try await script.value
        #expect(requests.count >= chunks.count)
        #expect(requests.allSatisfy { $0.hopsLeft == 0 && $0.ruid & (1 << 31) != 0 }, "the downloader asks the peer itself, in its own request IDs")
    }

    /// A restart in the middle: the download is rebuilt from the store with what it had, and
    /// asks for none of the chunks it stored before.
    @Test(.timeLimit(.minutes(1)))
    func aDownloadInterruptedByARestartGoesOnAndFetchesNothingStoredAgain() async throws {
        let b = try RunningNode(name: "b")
        let port = try await b.startedPort()
        let chunks = SeededChunks.chunks(count: 20, size: 256, seed: 44)
        let first = Array(chunks.prefix(8))
        let (_, before) = try await b.dialAsRogue(seed: 103, port: port)
        let script1 = Self.serve(before, held: Dictionary(uniqueKeysWithValues: first.map { ($0.address, $0) }))
        try await eventually("B may ask C") { await b.node.retrievalStatus().peers == 1 }
        let started = try await b.node.startDownload(chunks.map(\.address))
        try await eventually("the first 8 are stored") { try first.allSatisfy { try b.node.chunk($0.address) != nil } }

        let address = try await b.restart(peers: [])
        // The restart closed C's connection, perhaps under an answer it was writing.
        _ = try? await script1.value
        let resumed = try #require(await b.node.download(started.id), "the download is known after the restart")
        #expect(resumed.outcome == nil, "it runs again")
        #expect(resumed.status?.progress.done == 8 && resumed.status?.progress.total == 20)

        let (_, after) = try await b.dialAsRogue(seed: 104, port: try #require(Int(address.split(separator: ":").last!)))
        let script2 = Self.serve(after, held: Dictionary(uniqueKeysWithValues: chunks.map { ($0.address, $0) }))
        try await eventually("the download ends") { await b.node.download(started.id)?.outcome != nil }
        #expect(await b.node.download(started.id)?.outcome == .completed)
        for chunk in chunks { #expect(try b.node.chunk(chunk.address) == chunk) }
        await b.stop()
        let asked = Set(try await script2.value.map(\.address))
        #expect(asked.isDisjoint(with: first.map(\.address)), "nothing stored before the restart is asked for again")
        #expect(asked == Set(chunks.dropFirst(8).map(\.address)))
    }

    @Test(.timeLimit(.minutes(1)))
    func aChunkNobodyHasFailsTheDownloadAndSaysWhich() async throws {
        let b = try RunningNode(name: "b") { configuration in
            configuration.downloads.attemptsPerPeerMax = 2
            configuration.downloads.retryDelayMinMs = 20
            configuration.downloads.providerWaitMaxMs = 2_000
        }
        let port = try await b.startedPort()
        let (_, connection) = try await b.dialAsRogue(seed: 102, port: port)
        let held = SeededChunks.chunks(count: 5, size: 300, seed: 42)
        let nowhere = SeededChunks.chunks(count: 1, size: 300, seed: 43)[0]
        let script = Self.serve(connection, held: Dictionary(uniqueKeysWithValues: held.map { ($0.address, $0) }))
        try await eventually("B may ask C") { await b.node.retrievalStatus().peers == 1 }

        let started = try await b.node.startDownload(held.map(\.address) + [nowhere.address])
        #expect(try b.node.store.read { try $0.downloads().count } <= 1)
        var report = started
        try await eventually("the download ends", within: .seconds(30)) {
            report = try #require(await b.node.download(started.id))
            return report.outcome != nil
        }
        guard case .failed(let missing, let count)? = report.outcome else {
            Issue.record("expected a failed download, got \(String(describing: report.outcome))")
            return
        }
        #expect(count == 1)
        #expect(missing.map(\.address) == [nowhere.address])
        for chunk in held { #expect(try b.node.chunk(chunk.address) == chunk, "what could be fetched is kept") }
        await b.stop()
        _ = try await script.value
    }

    /// A peer's session reads on while the answers it delivered wait for their commit, and those
    /// answers keep their requests' slots meanwhile. The test holds the store's write
    /// transaction, so nothing commits: C is asked for one window of 8 chunks and no more (8 of
    /// its chunks at most are lost in a crash), and B's session still answers C's ping (it used
    /// to wait inside the downloader for each answer's two commits, reading nothing else).
    /// Released, everything commits and the download completes.
    @Test(.timeLimit(.minutes(1)))
    func aPeersSessionReadsOnWhileItsAnswersWaitForTheirCommit() async throws {
        let b = try RunningNode(name: "b")
        let port = try await b.startedPort()
        let (c, connection) = try await b.dialAsRogue(seed: 103, port: port)
        let window = DownloadLimits().requestsPerPeerMax
        let chunks = SeededChunks.chunks(count: 40, size: 64, seed: 44)
        let held = Dictionary(uniqueKeysWithValues: chunks.map { ($0.address, $0) })
        let asked = Locked(0), ponged = Locked(false)
        let script = Task {
            try await connection.channel.executeThenClose { inbound, outbound in
                for try await message in inbound {
                    switch message {
                    case .retrieveRequest(let request):
                        let n = asked.withLock { count -> Int in
                            count += 1
                            return count
                        }
                        let outcome: RetrieveDelivery.Outcome = held[request.address].map { .chunk(DeliveredChunk($0)) }
                            ?? .refused(Refusal(code: .notFound, message: "not here"))
                        try await outbound.write(.retrieveDelivery(RetrieveDelivery(ruid: request.ruid, outcome: outcome)))
                        if n == window { try await outbound.write(.ping(nonce: 77)) }
                    case .pong(let nonce) where nonce == 77:
                        ponged.withLock { $0 = true }
                    default:
                        continue
                    }
                }
            }
        }
        try await eventually("B may ask C") { await b.node.retrievalStatus().peers == 1 }

        let release = Locked(false)
        let environment = b.node.store.environment
        let holder = Task {
            try? await onOwnThread {
                try environment.write { _ in
                    let until = ContinuousClock.now + .seconds(40)
                    while !release.withLock({ $0 }) && ContinuousClock.now < until { usleep(1_000) }
                    throw CancellationError()  // aborts: nothing of it is kept
                }
            }
        }
        try await eventually("the test holds the write transaction") { environment.openTransactions.writes == 1 }
        let node = b.node
        let download = Task { try await node.startDownload(chunks.map(\.address), hints: [c.identity.overlay]) }
        try await eventually("C is asked for one window") { asked.withLock { $0 } == window }
        try await eventually("B's session answers C's ping sent after the window's answers", within: .seconds(10)) {
            ponged.withLock { $0 }
        }
        try await Task.sleep(for: .milliseconds(500))
        #expect(asked.withLock { $0 } == window, "answers waiting for their commit keep their slots")
        #expect(try b.node.store.count() == 0, "nothing committed meanwhile")
        release.withLock { $0 = true }
        _ = await holder.value
        let started = try await download.value
        var report = started
        try await eventually("the download ends", within: .seconds(30)) {
            report = try #require(await b.node.download(started.id))
            return report.outcome != nil
        }
        #expect(report.outcome == .completed)
        for chunk in chunks { #expect(try b.node.chunk(chunk.address) == chunk) }
        #expect(try b.node.store.read { try $0.fetchSet().count } == 0)
        await b.stop()
        _ = try await script.value
    }
}
