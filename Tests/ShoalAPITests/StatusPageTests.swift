import Foundation
import Hummingbird
import HummingbirdTesting
import ShoalAPI
import ShoalCore
import ShoalNode
import ShoalStore
import ShoalTestSupport
import Testing

/// `GET /`: the page itself, as the router serves it.
struct StatusPageTests {
    @Test func thePageIsOneSelfContainedHTMLDocument() async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                let response = try await client.get("/")
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "text/html; charset=utf-8")
                let csp = try #require(response.headers[.contentSecurityPolicy])
                #expect(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"))
                let html = String(decoding: response.body.bytes, as: UTF8.self)
                #expect(html.hasPrefix("<!doctype html>"))
                #expect(html.contains("<style>") && html.contains("<script>"))
                // Nothing from elsewhere: no absolute URL, no external script or stylesheet.
                #expect(!html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"))
                #expect(html.firstMatch(of: /<script[^>]*\ssrc=/) == nil)
                #expect(html.firstMatch(of: /<link[^>]*rel="stylesheet"/) == nil)
                for name in StatusPageTests.fixedFields {
                    #expect(html.contains(#"data-field="\#(name)""#), "no element for \(name)")
                }
                let head = try await client.execute(uri: "/", method: .head)
                #expect(head.status == .ok)
                #expect(head.body.readableBytes == 0)
            }
        }
    }

    /// The figures the page always has an element for (rows of bins, peers and tags are made
    /// by its script).
    static let fixedFields = [
        "overlay", "networkID", "listenAddress", "depth", "storageRadius", "epoch", "chunks", "bytes",
        "chunksReceived", "chunksServed", "chunksDuplicate", "peers", "connections.outbound",
        "connections.inbound.open.inbound", "connections.inbound.open.handshaking",
        "connections.inbound.counters.admitted", "connections.inbound.counters.refused.total",
        "peers.count", "topology.connected", "topology.known", "topology.dialling", "tags.inProgress", "page.state", "page.polls", "page.failures", "page.updated", "page.error",
    ]
}

/// The status page in a real browser (Debian's chromium, headless) against a running node
/// with a peer: the figures it shows are those of `/status` and `/peers`.
@Suite(.enabled(if: Chromium.enabled, Chromium.skipReason))
struct StatusPageBrowserTests {
    @Test(.timeLimit(.minutes(4)))
    func thePageShowsTheFiguresOfStatusAndPeers() async throws {
        var source = SeededChunks(seed: 95)
        let uploaded = (0..<40).map { _ in source.chunk(size: 500) }
        let fromPeer = (0..<12).map { _ in source.chunk(size: 300) }
        try await withRunningNode { a, addressA in
            try await withLiveAPI(a) { port in
                for chunk in uploaded {
                    let response = try await RawHTTP.post(port: port, path: "/chunks", chunkedBody: chunk.serialized)
                    #expect(response.status == 201)
                }
                try await withRunningNode(peers: [addressA]) { b, _ in
                    for chunk in fromPeer { try await b.upload(chunk) }
                    let total = uploaded.count + fromPeer.count
                    try await eventually("both nodes hold every chunk and their history streams are done", within: .seconds(90)) {
                        guard try a.status().chunks == total, try b.status().chunks == total else { return false }
                        guard await a.historySynced() else { return false }
                        return await b.historySynced()
                    }

                    try await eventually("A's table has B with its bins") {
                        try await Self.json(TopologyStatus.self, port, "/topology").peers.first?.subscribedBins.isEmpty == false
                    }
                    let before = try await Self.json(NodeStatus.self, port, "/status")
                    let topologyBefore = try await Self.json(TopologyStatus.self, port, "/topology")
                    let (dom, seconds) = try await Chromium.dumpDOM("http://127.0.0.1:\(port)/", virtualMilliseconds: 5000)
                    print("status page in chromium: \(String(format: "%.2f", seconds)) s for 5 s of virtual time")
                    let status = try await Self.json(NodeStatus.self, port, "/status")
                    let peers = try await Self.json([PeerStatus].self, port, "/peers")
                    let topology = try await Self.json(TopologyStatus.self, port, "/topology")
                    #expect(before == status, "the node's figures moved while the page loaded")
                    #expect(topologyBefore == topology, "the node's table moved while the page loaded")
                    let page = DumpedPage(dom)

                    #expect(page.fields["page.state"] == "live", "page says \(page.fields["page.error"] ?? "?")")
                    #expect((page.int("page.polls") ?? 0) >= 2, "the page refreshed at least twice")
                    #expect(page.fields["overlay"] == status.overlay)
                    #expect(page.int("networkID") == Int(status.networkID))
                    #expect(page.int("chunks") == status.chunks)
                    #expect(status.chunks == total)
                    #expect(page.int("storageRadius") == status.storageRadius)
                    #expect(page.isHidden(id: "row-depth") == false, "the page shows depth")
                    #expect(page.int("depth") == status.depth)
                    #expect(page.int("chunksReceived") == status.chunksReceived)
                    #expect(status.chunksReceived == fromPeer.count)
                    #expect(page.int("chunksServed") == status.chunksServed)
                    #expect(page.int("chunksDuplicate") == status.chunksDuplicate)
                    #expect(page.int("peers") == status.peers)
                    #expect(status.peers == 1)
                    #expect(page.int("connections.outbound") == status.connections.outbound)
                    #expect(page.int("connections.inbound.open.inbound") == status.connections.inbound?.open.inbound)
                    #expect(page.int("connections.inbound.counters.admitted") == status.connections.inbound?.counters.admitted)
                    for bin in status.bins {
                        #expect(page.int("bins.\(bin.bin).chunks") == bin.chunks, "bin \(bin.bin)")
                    }
                    #expect(status.bins.filter { $0.chunks > 0 }.count >= 2, "chunks spread over several bins")

                    #expect(page.int("peers.count") == peers.count)
                    for peer in peers {
                        #expect(peer.overlay == b.overlay.hex)
                        #expect(page.fields["peer.\(peer.overlay).address"] == peer.address)
                        #expect(page.fields["peer.\(peer.overlay).direction"] == (peer.outbound ? "outbound" : "inbound"))
                        let done = peer.bins.filter(\.historyDone).count
                        #expect(page.fields["peer.\(peer.overlay).historySynced"] == "\(done)/\(peer.bins.count)")
                        #expect(page.int("peer.\(peer.overlay).delivered") == peer.bins.reduce(0) { $0 + $1.delivered })
                        #expect(page.int("peer.\(peer.overlay).sealed") == Int(peer.bins.reduce(0) { $0 + $1.sealed }))
                    }

                    // The table: its counts, and a row for every bin with a known peer, none for the others.
                    #expect(page.int("topology.connected") == topology.connected)
                    #expect(topology.connected == 1)
                    #expect(page.int("topology.known") == topology.known)
                    #expect(page.int("topology.dialling") == topology.dialling)
                    for bin in topology.bins {
                        let shown = page.int("topology.bins.\(bin.bin).known")
                        if bin.known == 0 && bin.connected == 0 {
                            #expect(shown == nil, "bin \(bin.bin) has no peer, so no row")
                            continue
                        }
                        #expect(shown == bin.known, "bin \(bin.bin)")
                        #expect(page.int("topology.bins.\(bin.bin).connected") == bin.connected, "bin \(bin.bin)")
                        #expect(page.fields["topology.bins.\(bin.bin).saturated"] == (bin.saturated ? "yes" : "no"), "bin \(bin.bin)")
                    }
                    let po = Proximity.bin(of: b.overlay, relativeTo: a.overlay)
                    #expect(page.int("topology.bins.\(po).connected") == 1, "B's bin")

                    // Upload progress shows only where `/tags` answers.
                    let tags = try await RawHTTP.get(port: port, path: "/tags")
                    #expect(page.isHidden(id: "uploads") == (tags.status == 404))
                }
            }
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func aNodeThatCannotAnswerLeavesThePageSayingSoAndBackingOff() async throws {
        try await withLiveAPI(FailingNode(failure: "no store")) { port in
            let (dom, _) = try await Chromium.dumpDOM("http://127.0.0.1:\(port)/", virtualMilliseconds: 5000)
            let page = DumpedPage(dom)
            #expect(page.fields["page.state"] == "unreachable")
            #expect(page.fields["page.error"]?.contains("/status: HTTP 500") == true, "error shown: \(page.fields["page.error"] ?? "none")")
            #expect(page.int("page.polls") == 0)
            // Tries at 0 s and, backing off, at 4 s: without the back-off it would be 0, 2 and 4 s.
            let failures = try #require(page.int("page.failures"))
            #expect((1...2).contains(failures), "\(failures) failed polls in 5 s")
        }
    }

    static func json<T: Decodable>(_ type: T.Type, _ port: Int, _ path: String) async throws -> T {
        let response = try await RawHTTP.get(port: port, path: path)
        #expect(response.status == 200, "\(path): \(response.status)")
        return try JSONDecoder().decode(T.self, from: Data(response.body))
    }
}

