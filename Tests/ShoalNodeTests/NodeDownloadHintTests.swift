import Foundation
import NIOCore
import ShoalCore
import ShoalNode
import ShoalStore
import ShoalTestSupport
import Testing

/// How a downloading node finds holders it was not told about: it asks its peers which chunks
/// they store (`wantHave → presence`), and it takes a peer's pull-sync offer as a sign that
/// the peer has them. In both tests the downloader asks no peer for a chunk unless it is a hint
/// (`closestPeersPerChunk` 0), so the download completes only if the hint was found.
@Suite(.serialized)
struct NodeDownloadHintTests {
    /// A light node (no pull sync, so no offers) connected to A, which holds the chunks; it
    /// starts a download with no hints. It asks A about them, A answers from its store, and the
    /// light node fetches them from A. With presence queries off, the same download fails.
    @Test(.timeLimit(.minutes(2)))
    func aDownloadWithNoHintsFindsTheHolderByAskingPresence() async throws {
        let a = try RunningNode(name: "a")
        let addressA = try await a.start()
        let chunks = SeededChunks.chunks(count: 40, size: 512, seed: 81)
        for chunk in chunks { try await a.node.upload(chunk) }

        let light = try RunningNode(name: "light", peers: [addressA]) { c in
            c.pullSync = false
            c.downloads.closestPeersPerChunk = 0
        }
        _ = try await light.start()
        try await eventually("the light node is connected to A") { await light.node.peers().count == 1 }
        let started = try await light.node.startDownload(chunks.map(\.address))
        var report = started
        try await eventually("the download ends", within: .seconds(60)) {
            report = try #require(await light.node.download(started.id))
            return report.outcome != nil
        }
        #expect(report.outcome == .completed)
        for chunk in chunks { #expect(try light.node.chunk(chunk.address) == chunk) }
        await light.stop()

        // The same without presence queries: nobody to ask, and the chunks give up.
        let blind = try RunningNode(name: "blind", peers: [addressA]) { c in
            c.pullSync = false
            c.downloads.closestPeersPerChunk = 0
            c.downloads.presenceQueriesInFlightMax = 0
            c.downloads.providerWaitMaxMs = 1_000
        }
        _ = try await blind.start()
        try await eventually("the blind node is connected to A") { await blind.node.peers().count == 1 }
        let unfound = try await blind.node.startDownload(chunks.prefix(3).map(\.address))
        var ending = unfound
        try await eventually("the blind download ends", within: .seconds(30)) {
            ending = try #require(await blind.node.download(unfound.id))
            return ending.outcome != nil
        }
        guard case .failed(_, let count)? = ending.outcome else {
            Issue.record("expected a failed download, got \(String(describing: ending.outcome))")
            return
        }
        #expect(count == 3)
        await blind.stop()
        await a.stop()
        #expect(try verifyClean(light.directory))
    }

    /// B downloads chunks before anyone is connected. C, which B was not told about, dials in
    /// and offers the chunks in pull sync but never delivers what B's sync wants; it answers
    /// retrieval requests. The offer makes C a hint, and the downloader fetches from C.
    @Test(.timeLimit(.minutes(1)))
    func aPullSyncOfferMakesThePeerAHintForTheDownloader() async throws {
        let b = try RunningNode(name: "b") { c in
            c.downloads.closestPeersPerChunk = 0
            c.downloads.presenceQueriesInFlightMax = 0
        }
        let port = try await b.startedPort()
        let chunks = SeededChunks.chunks(count: 20, size: 300, seed: 82)
        let started = try await b.node.startDownload(chunks.map(\.address))
        #expect(started.outcome == nil)

        let (_, connection) = try await b.dialAsRogue(seed: 105, port: port)
        let script = Self.offerAndServe(connection, chunks: chunks)
        var report = started
        try await eventually("the download ends", within: .seconds(30)) {
            report = try #require(await b.node.download(started.id))
            return report.outcome != nil
        }
        #expect(report.outcome == .completed)
        for chunk in chunks { #expect(try b.node.chunk(chunk.address) == chunk) }
        await b.stop()
        let seen = try await script.value
        #expect(seen.offered, "C offered the chunks")
        #expect(seen.retrieved.count >= chunks.count && seen.retrieved.allSatisfy { $0.ruid & (1 << 31) != 0 },
                "the downloader asked C for them")
    }

    enum Liar: String, CaseIterable, Sendable {
        /// Says yes to every address asked, and then answers not-found.
        case claimsEverything
        /// Answers with one byte more than the addresses asked take.
        case malformed
    }

    /// A peer's presence answers are bad input (issue 8): one that claims chunks it does not
    /// have, or answers malformed bitvectors, is connected beside A, the real holder. The
    /// download completes from A all the same; the malformed answer costs the liar its
    /// connection.
    @Test(.timeLimit(.minutes(1)), arguments: Liar.allCases)
    func aPeerLyingInPresenceAnswersDoesNotStopADownload(_ liar: Liar) async throws {
        let a = try RunningNode(name: "a")
        let addressA = try await a.start()
        let chunks = SeededChunks.chunks(count: 30, size: 256, seed: 83)
        for chunk in chunks { try await a.node.upload(chunk) }
        let light = try RunningNode(name: "light", peers: [addressA]) { c in
            c.pullSync = false
            c.downloads.closestPeersPerChunk = 0
            // Small queries, one at a time per peer: the liar is asked however the two
            // connections and the download's start interleave.
            c.downloads.presenceBatchMax = 4
        }
        let port = try await light.startedPort()
        let (_, connection) = try await light.dialAsRogue(seed: 106, port: port)
        let script = Self.lie(connection, liar)
        try await eventually("the light node may ask both peers") { await light.node.retrievalStatus().peers == 2 }

        let started = try await light.node.startDownload(chunks.map(\.address))
        var report = started
        try await eventually("the download ends", within: .seconds(40)) {
            report = try #require(await light.node.download(started.id))
            return report.outcome != nil
        }
        #expect(report.outcome == .completed)
        for chunk in chunks { #expect(try light.node.chunk(chunk.address) == chunk) }
        if liar == .malformed {
            try await eventually("the liar is dropped") { await light.node.peers().count == 1 }
        }
        await light.stop()
        await a.stop()
        let seen = try await script.value
        #expect(seen.asked > 0, "the liar was asked about chunks")
        #expect(try verifyClean(light.directory))
    }

    /// Plays `liar`: answers presence queries as it says, every retrieval request with
    /// not-found, and pings; returns the presence queries it was sent.
    static func lie(_ connection: EstablishedConnection, _ liar: Liar) -> Task<(asked: Int, retrieved: Int), Error> {
        Task {
            try await connection.channel.executeThenClose { inbound, outbound in
                var (asked, retrieved) = (0, 0)
                for try await message in inbound {
                    switch message {
                    case .wantHave(let want):
                        asked += 1
                        let answer = switch liar {
                        case .claimsEverything: Presence(ruid: want.ruid, present: want.addresses.map { _ in true })
                        case .malformed: Presence(ruid: want.ruid, bitvector: [UInt8](repeating: 0xFF, count: (want.addresses.count + 7) / 8 + 1))
                        }
                        try await outbound.write(.presence(answer))
                    case .retrieveRequest(let request):
                        retrieved += 1
                        try await outbound.write(.retrieveDelivery(RetrieveDelivery(
                            ruid: request.ruid, outcome: .refused(Refusal(code: .notFound, message: "not here")))))
                    case .ping(let nonce):
                        try await outbound.write(.pong(nonce: nonce))
                    default:
                        continue
                    }
                }
                return (asked, retrieved)
            }
        }
    }

    /// Plays a sync server that has `chunks` in bin 0: it answers B's stream info and its first
    /// history range with an offer of them, never delivers, and answers retrieval requests.
    static func offerAndServe(_ connection: EstablishedConnection, chunks: [Chunk])
        -> Task<(offered: Bool, retrieved: [RetrieveRequest]), Error> {
        let held = Dictionary(uniqueKeysWithValues: chunks.map { ($0.address, $0) })
        return Task {
            try await connection.channel.executeThenClose { inbound, outbound in
                var offered = false
                var retrieved: [RetrieveRequest] = []
                for try await message in inbound {
                    switch message {
                    case .streamInfoRequest(let request):
                        let cursors = request.bins.map { StreamInfoResponse.BinCursor(bin: $0, cursor: $0 == 0 ? UInt64(chunks.count) : 0) }
                        try await outbound.write(.streamInfoResponse(StreamInfoResponse(epoch: 1, cursors: cursors)))
                    case .getRange(let range) where range.bin == 0 && !offered:
                        guard let to = range.to, to >= range.from else { continue }
                        let count = Int(min(to - range.from + 1, UInt64(chunks.count), UInt64(range.limit)))
                        offered = true
                        try await outbound.write(.offeredHashes(OfferedHashes(
                            ruid: range.ruid, from: range.from, lastIndex: range.from + UInt64(count) - 1,
                            addresses: chunks.prefix(count).map(\.address))))
                    case .retrieveRequest(let request):
                        retrieved.append(request)
                        let outcome: RetrieveDelivery.Outcome = held[request.address].map { .chunk(DeliveredChunk($0)) }
                            ?? .refused(Refusal(code: .notFound, message: "not here"))
                        try await outbound.write(.retrieveDelivery(RetrieveDelivery(ruid: request.ruid, outcome: outcome)))
                    case .ping(let nonce):
                        try await outbound.write(.pong(nonce: nonce))
                    default:
                        continue
                    }
                }
                return (offered, retrieved)
            }
        }
    }
}
