import ArgumentParser
import ShoalAPI
import ShoalCore
import ShoalNode

/// `shoal topology`: the node's Kademlia table (GET /topology) as a table, or its JSON.
struct TopologyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topology",
        abstract: "Print a running node's Kademlia table: depth, radius, bins with peers, connected peers and the bins synced from each.",
        discussion: CLIExit.readCommandDiscussion
    )

    @OptionGroup var options: APIOptions

    @Flag(help: "Print the JSON of GET /topology as one line instead of the table.")
    var json = false

    func run() throws {
        try runClientCommand { () throws(CommandFailure) in
            let answer = try options.client(defaultTimeoutSeconds: 10).expectSuccess("GET", "/topology", statuses: [200])
            if json {
                Terminal.out(jsonLine(answer.body))
                return
            }
            for line in try TopologyTable.lines(json: answer.body) { Terminal.out(line) }
        }
    }
}

/// The text `shoal topology` prints.
enum TopologyTable {
    /// The lines for an answer of `GET /topology`.
    static func lines(json: [UInt8]) throws(CommandFailure) -> [String] {
        lines(try decodeAnswer(TopologyStatus.self, json, from: "GET /topology"))
    }

    static func lines(_ topology: TopologyStatus) -> [String] {
        var out = [
            "depth \(topology.depth), storage radius \(topology.radius)"
                + (topology.pullSync == false ? ", light node (pull sync off: no bin subscribed)" : ""),
            "peers: \(topology.connected) connected, \(topology.known) known, \(topology.dialling) dialling",
            "",
        ]
        let bins = topology.bins.filter { $0.known > 0 || $0.connected > 0 }
        if bins.isEmpty {
            out.append("no peer known")
        } else {
            out.append(row(["bin", "known", "connected", "saturated"], widths: [3, 6, 10, 0]))
            for bin in bins {
                out.append(row(["\(bin.bin)", "\(bin.known)", "\(bin.connected)", bin.saturated ? "yes" : "no"], widths: [3, 6, 10, 0]))
            }
        }
        out.append("")
        if topology.peers.isEmpty {
            out.append("no peer connected")
        } else {
            let widths = [-16, 3, -9, 0]
            out.append(row(["overlay", "po", "direction", "subscribed bins"], widths: widths))
            for peer in topology.peers {
                out.append(row([String(peer.overlay.prefix(16)), "\(peer.po)", peer.outbound ? "outbound" : "inbound",
                                ranges(peer.subscribedBins)], widths: widths))
            }
        }
        return out
    }

    /// Ascending bins as ranges: `[0, 2, 3, 4, 9]` is `0,2-4,9`; none is `none`.
    static func ranges(_ bins: [Int]) -> String {
        guard !bins.isEmpty else { return "none" }
        var parts: [String] = []
        var start = bins[0], end = bins[0]
        for bin in bins.dropFirst() {
            if bin == end + 1 {
                end = bin
                continue
            }
            parts.append(start == end ? "\(start)" : "\(start)-\(end)")
            (start, end) = (bin, bin)
        }
        parts.append(start == end ? "\(start)" : "\(start)-\(end)")
        return parts.joined(separator: ",")
    }

    /// Cells separated by two spaces: a positive width right-aligns, a negative one left-aligns,
    /// 0 leaves the cell as it is (the last column).
    private static func row(_ cells: [String], widths: [Int]) -> String {
        zip(cells, widths).map { cell, width in
            let pad = String(repeating: " ", count: max(0, abs(width) - cell.count))
            return width > 0 ? pad + cell : width < 0 ? cell + pad : cell
        }.joined(separator: "  ")
    }
}

/// `shoal peers connect|disconnect`: dial a peer (POST /peers) or end a session (DELETE /peers/{overlay}).
struct PeersCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peers",
        abstract: "Connect a running node to a peer, or disconnect one.",
        discussion: """
            Exit status: 0 done, 1 the API refused (the dial failed, or the peer is not connected; \
            its message on stderr), 2 usage, 3 the API cannot be reached. See Docs/CLI.md.
            """,
        subcommands: [Connect.self, Disconnect.self]
    )

    /// `shoal peers connect HOST:PORT`: POST /peers.
    struct Connect: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "connect",
            abstract: "Dial a peer; prints 'connected OVERLAY at HOST:PORT, po N' (or 'already connected …') once its handshake proved it."
        )

        @OptionGroup var options: APIOptions
        @Argument(help: ArgumentHelp("The peer's listen address (an IPv6 host in brackets).", valueName: "host:port"))
        var address: DialAddress

        func run() throws {
            try runClientCommand { () throws(CommandFailure) in
                let body = Array(#"{"address":"\#(address.text)"}"#.utf8)
                let answer = try options.client().expectSuccess("POST", "/peers", statuses: [200, 201], json: body)
                let peer = try decodeAnswer(ConnectedPeer.self, answer.body, from: "POST /peers")
                Terminal.out("\(peer.alreadyConnected ? "already connected" : "connected") \(peer.overlay) at \(peer.address), po \(peer.po)")
            }
        }
    }

    /// `shoal peers disconnect OVERLAY`: DELETE /peers/{overlay}.
    struct Disconnect: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "disconnect",
            abstract: "End the session with a connected peer; prints 'disconnecting OVERLAY'; exit 1 if it is not connected."
        )

        @OptionGroup var options: APIOptions
        @Argument(help: ArgumentHelp("The peer's overlay: 64 hex digits.", valueName: "overlay"))
        var overlay: Reference

        func run() throws {
            try runClientCommand { () throws(CommandFailure) in
                _ = try options.client().expectSuccess("DELETE", "/peers/\(overlay.hex)", statuses: [204])
                Terminal.out("disconnecting \(overlay.hex)")
            }
        }
    }
}

/// A peer's address on the command line, as a hello may name it (`ShoalCore.HostPort.parse`):
/// checked here, so a typo is a usage error and nothing is sent.
struct DialAddress: ExpressibleByArgument, Sendable {
    let text: String

    init?(argument: String) {
        guard let parsed = ShoalCore.HostPort.parse(argument) else { return nil }
        text = parsed.description
    }
}
