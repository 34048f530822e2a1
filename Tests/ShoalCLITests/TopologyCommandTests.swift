import Foundation
@testable import shoal
import ShoalTestSupport
import Testing

/// `shoal topology` and `shoal peers`: the table's text, and the commands against real nodes.
struct TopologyTableTests {
    @Test(arguments: [
        ([], "none"), ([4], "4"), ([3, 4], "3-4"), (Array(0...31), "0-31"), ([0, 2, 3, 4, 9], "0,2-4,9"),
        ([1, 3, 5], "1,3,5"), ([2, 3, 30, 31], "2-3,30-31"),
    ])
    func subscribedBinsAreShownAsRanges(_ bins: [Int], _ shown: String) {
        #expect(TopologyTable.ranges(bins) == shown)
    }

    @Test func theTableShowsDepthBinsWithPeersAndEachConnectedPeer() throws {
        let bins = (0..<32).map { bin in
            let (known, connected) = bin == 0 ? (3, 1) : bin == 2 ? (9, 8) : (0, 0)
            return #"{"bin":\#(bin),"known":\#(known),"connected":\#(connected),"saturated":\#(bin == 2)}"#
        }
        let a = String(repeating: "3f", count: 32), b = String(repeating: "7a", count: 32)
        let json = #"{"depth":2,"radius":1,"connected":9,"known":12,"dialling":1,"bins":[\#(bins.joined(separator: ","))],"#
            + #""peers":[{"overlay":"\#(a)","po":0,"subscribedBins":[0],"outbound":true},"#
            + #"{"overlay":"\#(b)","po":2,"subscribedBins":[2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31],"outbound":false}]}"#
        #expect(try TopologyTable.lines(json: Array(json.utf8)) == [
            "depth 2, storage radius 1",
            "peers: 9 connected, 12 known, 1 dialling",
            "",
            "bin   known   connected  saturated",
            "  0       3           1  no",
            "  2       9           8  yes",
            "",
            "overlay            po  direction  subscribed bins",
            "3f3f3f3f3f3f3f3f    0  outbound   0",
            "7a7a7a7a7a7a7a7a    2  inbound    2-31",
        ])
    }

    @Test func aLoneNodeSaysSo() throws {
        let bins = (0..<32).map { #"{"bin":\#($0),"known":0,"connected":0,"saturated":false}"# }
        let json = #"{"depth":0,"radius":0,"connected":0,"known":0,"dialling":0,"bins":[\#(bins.joined(separator: ","))],"peers":[]}"#
        #expect(try TopologyTable.lines(json: Array(json.utf8)).suffix(3) == ["no peer known", "", "no peer connected"])
    }

    @Test func aLightNodeSaysItPullsNothing() throws {
        let bins = (0..<32).map { #"{"bin":\#($0),"known":0,"connected":\#($0 == 1 ? 1 : 0),"saturated":false}"# }
        let a = String(repeating: "3f", count: 32)
        let json = #"{"depth":0,"radius":32,"connected":1,"known":1,"dialling":0,"bins":[\#(bins.joined(separator: ","))],"#
            + #""peers":[{"overlay":"\#(a)","po":1,"subscribedBins":[],"outbound":true}],"pullSync":false}"#
        let lines = try TopologyTable.lines(json: Array(json.utf8))
        #expect(lines.first == "depth 0, storage radius 32, light node (pull sync off: no bin subscribed)")
        #expect(lines.last == "3f3f3f3f3f3f3f3f    1  outbound   none")
    }

    @Test func anAnswerThatIsNotATopologyIsExit3() {
        let error = #expect(throws: CommandFailure.self) { try TopologyTable.lines(json: Array(#"{"depth":1}"#.utf8)) }
        #expect(error?.status == CLIExit.unreachable)
    }
}

@Suite(.enabled(if: CLI.binaryExists, "the shoal executable is not built beside the tests"))
struct PeerCommandTests {
    @Test(.timeLimit(.minutes(4)))
    func anOperatorConnectsTwoNodesSeesTheTableAndDisconnects() async throws {
        let directory = try TemporaryDirectory("shoal-cli")
        let a = try await RunningNode.start(in: directory.path + "/a")
        defer { a.stop() }
        let b = try await RunningNode.start(in: directory.path + "/b")
        defer { b.stop() }
        let api = ["--api", b.api]

        let connect = try await CLI.run(["peers", "connect", a.listen] + api)
        #expect(connect.status == 0, "\(connect.stderr)")
        let po = try #require(connect.stdoutText.firstMatch(of: /, po (\d+)\n$/).flatMap { Int($0.1) })
        #expect(connect.stdoutText == "connected \(a.overlay) at \(a.listen), po \(po)\n")
        let again = try await CLI.run(["peers", "connect", a.listen] + api)
        #expect(again.stdoutText == "already connected \(a.overlay) at \(a.listen), po \(po)\n")

        // The table: A in its bin, dialled by B, every bin subscribed (depth 0).
        var table = ""
        try await eventually("B's table shows A with its bins") {
            table = try await CLI.run(["topology"] + api).stdoutText
            return table.contains("\(a.overlay.prefix(16))  ")  && table.hasSuffix("outbound   0-31\n")
        }
        let lines = table.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.first == "depth 0, storage radius 0")
        #expect(lines.contains("peers: 1 connected, 1 known, 0 dialling"))
        #expect(lines.contains { $0.hasPrefix(String(repeating: " ", count: 3 - "\(po)".count) + "\(po)       1           1  no") })
        let json = try await CLI.run(["topology", "--json"] + api)
        #expect(json.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout)) as? [String: Any])
        let peers = try #require(object["peers"] as? [[String: Any]])
        #expect(peers.map { $0["overlay"] as? String } == [a.overlay])
        #expect(peers.first?["po"] as? Int == po)
        #expect(json.stdoutText.hasSuffix("}\n") && json.stdoutText.filter { $0 == "\n" }.count == 1)

        let disconnect = try await CLI.run(["peers", "disconnect", a.overlay.uppercased()] + api)
        #expect(disconnect.status == 0, "\(disconnect.stderr)")
        #expect(disconnect.stdoutText == "disconnecting \(a.overlay)\n")
        let unknown = try await CLI.run(["peers", "disconnect", String(repeating: "0", count: 64)] + api)
        #expect(unknown.status == 1)
        #expect(unknown.stderr.hasPrefix("shoal: DELETE /peers/") && unknown.stderr.hasSuffix("(unknownPeer)\n"), "\(unknown.stderr)")

        // A dial that fails is the API's refusal: exit 1 with its reason.
        let port = try closedPort()
        let failed = try await CLI.run(["peers", "connect", "127.0.0.1:\(port)"] + api)
        #expect(failed.status == 1)
        #expect(failed.stderr.hasPrefix("shoal: POST /peers answered 502: ") && failed.stderr.hasSuffix("(dialFailed)\n"), "\(failed.stderr)")
        #expect(failed.stdout.isEmpty)
        let itself = try await CLI.run(["peers", "connect", b.listen] + api)
        #expect(itself.status == 1)
        #expect(itself.stderr.contains("selfConnection"), "\(itself.stderr)")

        #expect(try await a.finish() == 0)
        #expect(try await b.finish() == 0)
    }
}
