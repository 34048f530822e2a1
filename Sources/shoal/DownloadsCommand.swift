import ArgumentParser
import ShoalAPI

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `--policy`: what a node's download is for (the API's `eagerPin` and `onRead`).
enum DownloadPolicyName: String, CaseIterable, ExpressibleByArgument, Sendable {
    /// Fetch everything in the background; pinned when complete.
    case eager
    /// A reader waits: these chunks go before every eager download's.
    case onRead = "on-read"

    var apiName: String { self == .eager ? "eagerPin" : "onRead" }
}

/// The options of a download the node does (`shoal download --fetch`).
struct FetchOptions: ParsableArguments {
    @Flag(help: "First have the node download the whole file into its store (POST /downloads), following it to the end.")
    var fetch = false

    @Flag(help: "With --fetch: the tree's parity chunks too (default: root, intermediates and data leaves only).")
    var parity = false

    @Option(name: .customLong("hint"), help: ArgumentHelp("With --fetch: the overlay of a peer that may have the chunks; repeat for more.", valueName: "overlay"))
    var hints: [Reference] = []

    @Option(help: ArgumentHelp("With --fetch: eager (default; pinned when complete) or on-read.", valueName: "policy"))
    var policy: DownloadPolicyName?

    @Flag(help: "With --fetch: Ctrl-C cancels the node's download too (default: it goes on on the node).")
    var cancelOnInterrupt = false
}

/// `POST /downloads` with `body`; the node's view of the download it started.
func postDownload(_ body: DownloadRequest, client: HTTPClient) throws(CommandFailure) -> DownloadView {
    let json: [UInt8]
    do {
        json = Array(try JSONEncoder().encode(body))
    } catch {
        throw CommandFailure(CLIExit.usage, "cannot encode the request: \(error)")
    }
    let answer = try client.expectSuccess("POST", "/downloads", statuses: [201], json: json)
    return try decodeAnswer(DownloadView.self, answer.body, from: "POST /downloads")
}

/// `shoal downloads list|show|cancel|start`: the node's downloads (/downloads).
struct DownloadsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "downloads",
        abstract: "List, show, cancel and start the downloads a running node does.",
        discussion: """
            Exit status: 0 done, 1 the API refused (an unknown id, a bad address; its message on \
            stderr) or a followed download was cancelled, 2 usage, 3 the API cannot be reached, 4 \
            the address list cannot be read, 5 a followed download failed, 130 interrupted while \
            following. See Docs/CLI.md.
            """,
        subcommands: [List.self, Show.self, Cancel.self, Start.self]
    )

    /// `shoal downloads list`: GET /downloads.
    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "One line per download: id, state, chunks done of total, the file's root if any."
        )

        @OptionGroup var options: APIOptions

        @Flag(help: "Print the JSON of GET /downloads as one line instead.")
        var json = false

        func run() throws {
            try runClientCommand { () throws(CommandFailure) in
                let answer = try options.client(defaultTimeoutSeconds: 10).expectSuccess("GET", "/downloads", statuses: [200])
                if json {
                    Terminal.out(jsonLine(answer.body))
                    return
                }
                for view in try decodeAnswer([DownloadView].self, answer.body, from: "GET /downloads") {
                    Terminal.out(DownloadsCommand.line(view))
                }
            }
        }
    }

    /// `shoal downloads show ID`: GET /downloads/{id}.
    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "show",
            abstract: "Print a download's JSON (GET /downloads/{id}): state, done, total, missing, errors, root."
        )

        @OptionGroup var target: DownloadTarget

        func run() throws {
            try runClientCommand { () throws(CommandFailure) in
                let answer = try target.options.client(defaultTimeoutSeconds: 10).expectSuccess("GET", "/downloads/\(target.id.hex)", statuses: [200])
                Terminal.out(jsonLine(answer.body))
            }
        }
    }

    /// `shoal downloads cancel ID`: DELETE /downloads/{id}.
    struct Cancel: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cancel",
            abstract: "Cancel a running download. Prints 'cancelled ID'; exit 1 if none runs under ID."
        )

        @OptionGroup var target: DownloadTarget

        func run() throws {
            try runClientCommand { () throws(CommandFailure) in
                _ = try target.options.client(defaultTimeoutSeconds: 10).expectSuccess("DELETE", "/downloads/\(target.id.hex)", statuses: [204])
                Terminal.out("cancelled \(target.id.hex)")
            }
        }
    }

    /// `shoal downloads start --addresses FILE`: POST /downloads with a list of addresses.
    struct Start: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "start",
            abstract: "Start a download of chunk addresses; print its id. With --wait, follow it to its end.",
            discussion: """
                FILE has one address (64 hex digits) per line; blank lines and lines starting \
                with # are skipped; - reads stdin. At most 65,536 addresses (one download's \
                limit). Ctrl-C while waiting stops the watching, not the node's download, unless \
                --cancel-on-interrupt.
                """
        )

        @OptionGroup var options: APIOptions

        @Option(help: ArgumentHelp("The file of addresses, one per line; - reads stdin.", valueName: "file"))
        var addresses: String

        @Option(name: .customLong("hint"), help: ArgumentHelp("The overlay of a peer that may have the chunks; repeat for more.", valueName: "overlay"))
        var hints: [Reference] = []

        @Option(help: ArgumentHelp("eager (default; pinned when complete) or on-read.", valueName: "policy"))
        var policy: DownloadPolicyName = .eager

        @Flag(help: "Follow the download until it ends, with progress on stderr.")
        var wait = false

        @Option(help: ArgumentHelp("While waiting: auto (a bar on a terminal, else plain), plain, json or none.", valueName: "mode"))
        var progress: ProgressMode = .auto

        @Flag(help: "While waiting: Ctrl-C cancels the node's download too (default: it goes on on the node).")
        var cancelOnInterrupt = false

        func run() throws {
            try runClientCommand { () throws(CommandFailure) in
                let client = try options.client()
                let list = try AddressList.read(addresses, max: DownloadRouteLimits().addressesMax)
                let body = DownloadRequest(addresses: list, policy: policy.apiName, hints: hints.isEmpty ? nil : hints.map(\.hex))
                let started = try postDownload(body, client: client)
                Terminal.out(started.id)
                guard wait else { return }
                var follower = DownloadFollower(client: client, progress: progress, cancelOnInterrupt: cancelOnInterrupt)
                follower.label = "download"
                _ = try follower.follow(started)
            }
        }
    }

    /// "ID  state  done/total  root" (the figures a running download has; "-" otherwise).
    static func line(_ view: DownloadView) -> String {
        let figures = view.total.map { "\(view.done ?? 0)/\($0)" + ((view.failed ?? 0) > 0 ? " (\(view.failed ?? 0) failed)" : "") } ?? "-"
        let state = view.state.padding(toLength: 9, withPad: " ", startingAt: 0)
        return "\(view.id)  \(state)  \(figures)" + (view.root.map { "  root \($0)" } ?? "")
    }
}

/// The API and the download a subcommand acts on.
struct DownloadTarget: ParsableArguments {
    @OptionGroup var options: APIOptions
    @Argument(help: ArgumentHelp("The download's id: 64 hex digits.", valueName: "id"))
    var id: Reference
}

/// The addresses of `shoal downloads start --addresses FILE`.
enum AddressList {
    /// Lines are at most 64 hex digits and a few spaces: a file this large is not an address list.
    static func bytesMax(_ max: Int) -> Int { max * 80 + 4096 }

    /// The addresses in `path` (- for stdin), checked: 1…`max` of them, each 64 hex digits.
    /// Unreadable input and bad lines are `CLIExit.localIO`.
    static func read(_ path: String, max: Int) throws(CommandFailure) -> [String] {
        let text = try String(decoding: readAll(path, bytesMax: bytesMax(max)), as: UTF8.self)
        return try parse(text, source: path == "-" ? "stdin" : path, max: max)
    }

    static func parse(_ text: String, source: String, max: Int) throws(CommandFailure) -> [String] {
        var out: [String] = []
        for (n, raw) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let line = raw.trimmingCharacters(in: " \t\r")
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let reference = Reference(argument: line) else {
                throw CommandFailure(CLIExit.localIO, "\(source):\(n + 1): '\(line.prefix(80))' is not an address of 64 hex digits")
            }
            guard out.count < max else {
                throw CommandFailure(CLIExit.localIO, "\(source): more than \(max) addresses; a download names at most \(max)")
            }
            out.append(reference.hex)
        }
        guard !out.isEmpty else { throw CommandFailure(CLIExit.localIO, "\(source): no addresses") }
        return out
    }

    private static func readAll(_ path: String, bytesMax: Int) throws(CommandFailure) -> [UInt8] {
        let fd = path == "-" ? 0 : open(path, O_RDONLY)
        guard fd >= 0 else { throw CommandFailure(CLIExit.localIO, "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { if fd != 0 { close(fd) } }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            #if canImport(Glibc)
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            #else
            let n = buffer.withUnsafeMutableBytes { Darwin.read(fd, $0.baseAddress, $0.count) }
            #endif
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw CommandFailure(CLIExit.localIO, "cannot read \(path): \(String(cString: strerror(errno)))") }
            if n == 0 { return bytes }
            bytes += buffer[..<n]
            if bytes.count > bytesMax {
                throw CommandFailure(CLIExit.localIO, "\(path) is larger than \(bytesMax) bytes: not a list of at most \(bytesMax / 80) addresses")
            }
        }
    }
}
