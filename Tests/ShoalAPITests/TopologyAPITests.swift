import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
@testable import ShoalAPI
import ShoalCore
import ShoalNode
import ShoalStore
import ShoalTestSupport
import Testing

/// `GET /topology`, `POST /peers` and `DELETE /peers/{overlay}` over real nodes on 127.0.0.1.
struct TopologyAPITests {
    @Test(.timeLimit(.minutes(3)))
    func twoConnectedNodesSeeEachOtherAtTheirProximityWithTheBinsTheySync() async throws {
        try await withRunningNode { a, addressA in
            try await withRunningNode(peers: [addressA]) { b, _ in
                try await withAPI(a) { client in
                    let po = Proximity.bin(of: b.overlay, relativeTo: a.overlay)
                    var topology = TopologyStatus.empty
                    try await eventually("A's table has B connected, with its bins subscribed") {
                        topology = try decode(TopologyStatus.self, try await client.get("/topology"))
                        return topology.peers.first?.subscribedBins.isEmpty == false
                    }
                    #expect(topology.connected == 1)
                    #expect(topology.known >= 1)
                    #expect(topology.peers.map(\.overlay) == [b.overlay.hex])
                    let peer = try #require(topology.peers.first)
                    #expect(peer.po == po)
                    #expect(peer.outbound == false, "B dialled A")
                    // Fewer than 4 peers: depth 0, so the one peer is a neighbour and gives every bin.
                    #expect(topology.depth == 0)
                    #expect(topology.radius == 0)
                    #expect(peer.subscribedBins == SubscriptionPlan.bins(peerBin: po, depth: 0, radius: 0).map(Int.init))
                    #expect(peer.subscribedBins == Array(0..<Proximity.binCount))
                    #expect(topology.bins.map(\.bin) == Array(0..<Proximity.binCount))
                    #expect(topology.bins[po].connected == 1)
                    #expect(topology.bins.map(\.connected).reduce(0, +) == 1)
                    #expect(topology.bins.allSatisfy { !$0.saturated })
                    let status = try decode(NodeStatus.self, try await client.get("/status"))
                    #expect(status.depth == topology.depth)
                    #expect(status.storageRadius == topology.radius)
                    let metrics = try PrometheusText(String(decoding: try await client.get("/metrics").body.bytes, as: UTF8.self))
                    #expect(metrics.value("shoal_topology_depth") == Double(topology.depth))
                    #expect(metrics.value("shoal_topology_radius") == Double(topology.radius))
                    #expect(metrics.value("shoal_peers_connected") == 1)
                    #expect(metrics.value("shoal_peers_known") == Double(topology.known))
                }
                // And from B's side: A, at the same PO, which B dialled.
                try await withAPI(b) { client in
                    try await eventually("B's table has A connected") {
                        try decode(TopologyStatus.self, try await client.get("/topology")).peers.map(\.overlay) == [a.overlay.hex]
                    }
                    let peer = try #require(try decode(TopologyStatus.self, try await client.get("/topology")).peers.first)
                    #expect(peer.po == Proximity.bin(of: a.overlay, relativeTo: b.overlay))
                    #expect(peer.outbound)
                }
            }
        }
    }

    @Test(.timeLimit(.minutes(3)))
    func anOperatorConnectsAThirdNodeAndDisconnectsIt() async throws {
        try await withRunningNode { a, addressA in
            try await withRunningNode(peers: [addressA]) { b, _ in
                try await withRunningNode { c, addressC in
                    try await withAPI(a) { client in
                        try await eventually("B is connected to A") { await a.peers().map(\.overlay) == [b.overlay.hex] }

                        let started = ContinuousClock.now
                        let posted = try await client.postPeer(#"{"address": "\#(addressC)"}"#)
                        #expect(posted.status == .created)
                        let answer = try decode(ConnectedPeer.self, posted)
                        #expect(answer.overlay == c.overlay.hex)
                        #expect(answer.address == addressC)
                        #expect(answer.po == Proximity.bin(of: c.overlay, relativeTo: a.overlay))
                        #expect(answer.listenAddresses == [addressC])
                        #expect(!answer.alreadyConnected)
                        #expect(ContinuousClock.now - started < .seconds(15))

                        // Answered once the session is in the table: no wait needed.
                        let topology = try decode(TopologyStatus.self, try await client.get("/topology"))
                        #expect(Set(topology.peers.map(\.overlay)) == [b.overlay.hex, c.overlay.hex])
                        let peer = try #require(topology.peers.first { $0.overlay == c.overlay.hex })
                        #expect(peer.po == answer.po)
                        #expect(peer.outbound)
                        try await eventually("C's bins are subscribed") {
                            try decode(TopologyStatus.self, try await client.get("/topology"))
                                .peers.first { $0.overlay == c.overlay.hex }?.subscribedBins.isEmpty == false
                        }

                        // Dialling it again finds the session that is up.
                        let again = try await client.postPeer(#"{"address": "\#(addressC)"}"#)
                        #expect(again.status == .ok)
                        #expect(try decode(ConnectedPeer.self, again).alreadyConnected)

                        let deleted = try await client.execute(uri: "/peers/\(c.overlay.hex)", method: .delete)
                        #expect(deleted.status == .noContent)
                        #expect(deleted.body.readableBytes == 0)
                        try await eventually("C is gone from A's peers", pollMs: 5) {
                            let peers = try decode([PeerStatus].self, try await client.get("/peers"))
                            return !peers.contains { $0.overlay == c.overlay.hex }
                        }
                        #expect(await a.peers().contains { $0.overlay == b.overlay.hex }, "B stays connected")
                        // Disconnected by the operator: a second DELETE finds nothing to end,
                        // and C (which knows A and redials after a second) stays away.
                        let second = try await client.execute(uri: "/peers/\(c.overlay.hex)", method: .delete)
                        #expect(second.status == .notFound)
                        try await Task.sleep(for: .seconds(3))
                        let peers = try decode([PeerStatus].self, try await client.get("/peers"))
                        #expect(!peers.contains { $0.overlay == c.overlay.hex }, "C came back after the operator disconnected it")
                    }
                }
            }
        }
    }

    @Test(arguments: [
        "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", ":1634", "::1:1634", "[::1]", "host name:1634",
        "http://127.0.0.1:1634", "127.0.0.1:1634/x", "", String(repeating: "a", count: 300) + ":1",
    ])
    func anAddressThatIsNotHostPortIs400(address: String) async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                let body = String(decoding: try JSONEncoder().encode(ConnectRequest(address: address)), as: UTF8.self)
                try expectError(try await client.postPeer(body), .badRequest, .invalidAddress)
            }
        }
    }

    @Test(arguments: [
        "", "not json", "[]", #"{"address": 1634}"#, #"{"peer": "127.0.0.1:1634"}"#, #"{"address": "127.0.0.1:1634""#,
    ])
    func aBodyThatIsNotTheJSONObjectIs400(body: String) async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                try expectError(try await client.postPeer(body), .badRequest, .badRequest)
            }
        }
    }

    @Test func aBodyOverTheLimitIs413UnreadWithOrWithoutALength() async throws {
        let body = #"{"address": "127.0.0.1:1634", "padding": "\#(String(repeating: "x", count: 5000))"}"#
        try await withTestNode { node in
            try await withAPI(node) { client in
                try expectError(try await client.postPeer(body), .contentTooLarge, .badRequest)
            }
            try await withLiveAPI(node) { port in
                let response = try await RawHTTP.post(port: port, path: "/peers", chunkedBody: Array(body.utf8))
                #expect(response.status == 413)
                #expect(try JSONDecoder().decode(APIError.Body.self, from: Data(response.body)).error.code == "badRequest")
            }
        }
    }

    @Test func aNodeThatIsNotRunningDialsNothing() async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                try expectError(try await client.postPeer(#"{"address": "127.0.0.1:1634"}"#), .serviceUnavailable, .unavailable)
            }
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func anAddressNothingListensOnIs502DialFailedAtOnce() async throws {
        let port = try closedPort()
        try await withRunningNode { node, _ in
            try await withAPI(node) { client in
                let started = ContinuousClock.now
                let response = try await client.postPeer(#"{"address": "127.0.0.1:\#(port)"}"#)
                try expectError(response, .badGateway, .dialFailed)
                #expect(ContinuousClock.now - started < .seconds(10))
                let error = try decode(APIError.Body.self, response)
                #expect(error.error.message.contains("127.0.0.1:\(port)"), "\(error.error.message)")
                #expect(await node.peers().isEmpty)
            }
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func aServerThatIsNotAShoalNodeFailsTheHandshakeWith502() async throws {
        try await withRunningNode { node, _ in
            try await withLiveAPI(node) { port in
                // The API's own port speaks HTTP, not TLS and the hello.
                let started = ContinuousClock.now
                let body = Array(#"{"address": "127.0.0.1:\#(port)"}"#.utf8)
                let response = try await RawHTTP.post(port: port, path: "/peers", chunkedBody: body)
                #expect(response.status == 502)
                #expect(try JSONDecoder().decode(APIError.Body.self, from: Data(response.body)).error.code == "dialFailed")
                #expect(ContinuousClock.now - started < .seconds(15))
                #expect(await node.peers().isEmpty)
            }
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func aDialThatTakesTooLongIs504AtTheTimeout() async throws {
        var limits = PeerRouteLimits()
        limits.dialTimeout = .milliseconds(300)
        let router = makeRouter(node: FailingNode(failure: "no store", isReady: true, dial: { _ in
            // An address that swallows packets: the dial never finishes in time.
            try await Task.sleep(for: .seconds(5))
            throw StoreError(.system, "never connects")
        }), peerLimits: limits)
        let app = Application(router: router, logger: Logger(label: "shoal.api.test", factory: { _ in SwiftLogNoOpLogHandler() }))
        try await app.test(.router) { client in
            let started = ContinuousClock.now
            try expectError(try await client.postPeer(#"{"address": "192.0.2.1:1634"}"#), .gatewayTimeout, .dialFailed)
            let waited = ContinuousClock.now - started
            #expect(waited >= .milliseconds(300) && waited < .seconds(10), "answered after \(waited)")
        }
    }

    @Test func aDialThatEndsBeforeTheTimeoutIsNeverTakenForATimeout() async throws {
        for round in 0..<200 {
            let value = try await firstOrTimeout(.seconds(10)) { round }
            #expect(value == round)
        }
        let late = try await firstOrTimeout(.milliseconds(10)) { () async throws -> Int in
            try await Task.sleep(for: .seconds(2))
            return 1
        }
        #expect(late == nil)
    }

    @Test(arguments: ["abc", String(repeating: "a", count: 63), String(repeating: "a", count: 65), String(repeating: "a", count: 63) + "g"])
    func deletingAMalformedOverlayIs400(overlay: String) async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                try expectError(try await client.execute(uri: "/peers/\(overlay)", method: .delete), .badRequest, .invalidAddress)
            }
        }
    }

    @Test func deletingAPeerThatIsNotConnectedIs404() async throws {
        try await withRunningNode { node, _ in
            try await withAPI(node) { client in
                let response = try await client.execute(uri: "/peers/\(String(repeating: "ab", count: 32))", method: .delete)
                try expectError(response, .notFound, .unknownPeer)
            }
        }
    }

    @Test func aLoneNodesTopologyIsEmptyButHasEveryBin() async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                let response = try await client.get("/topology")
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/json; charset=utf-8")
                #expect(try decode(TopologyStatus.self, response) == .empty)
            }
        }
    }
}

extension TestClientProtocol {
    func postPeer(_ json: String) async throws -> TestResponse {
        try await execute(uri: "/peers", method: .post, headers: [.contentType: "application/json"], body: ByteBuffer(string: json))
    }
}

