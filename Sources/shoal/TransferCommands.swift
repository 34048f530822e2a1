import ArgumentParser
import ShoalAPI

/// `--redundancy`: the erasure-coding level of an upload (the API's `Shoal-Redundancy-Level`).
enum RedundancyName: String, CaseIterable, ExpressibleByArgument, Sendable {
    case none, medium, strong, insane, paranoid
}

/// `shoal upload FILE|-`: POST /bytes, the reference alone on stdout.
struct UploadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "upload",
        abstract: "Upload a file (or stdin) to a running node; print its reference.",
        discussion: """
            Sends the file with POST /bytes and prints the file's reference (64 hex digits) alone \
            on stdout. Progress goes to stderr. A regular file is sent with its length; stdin \
            from a pipe is sent chunked. Exit status: 0 stored, 1 the API refused (its message on \
            stderr), 2 usage, 3 the API cannot be reached or stopped answering, 4 the input \
            cannot be read. See Docs/CLI.md.
            """
    )

    @OptionGroup var options: APIOptions

    @Argument(help: ArgumentHelp("The file to upload; - reads stdin.", valueName: "file"))
    var file: String

    @Flag(help: "Pin the file: its chunks are never evicted.")
    var pin = false

    @Option(help: ArgumentHelp("Erasure coding: none, medium, strong, insane or paranoid (default none).", valueName: "level"))
    var redundancy: RedundancyName = .none

    @Option(help: ArgumentHelp("Count the upload under this tag (POST /tags made it).", valueName: "uid"))
    var tag: UInt64?

    @Option(help: ArgumentHelp("auto (a bar on a terminal, else plain), plain, json or none.", valueName: "mode"))
    var progress: ProgressMode = .auto

    /// The answer of POST /bytes (the fields the command uses).
    struct Answer: Decodable {
        var reference: String
    }

    func run() throws {
        try runClientCommand { () throws(CommandFailure) in
            let client = try options.client()
            let input = try UploadInput.open(file)
            defer { input.close() }
            var headers = [("Content-Type", "application/octet-stream"), ("Accept", "application/json"),
                           ("Shoal-Redundancy-Level", redundancy.rawValue)]
            if pin { headers.append(("Shoal-Pin", "true")) }
            if let tag { headers.append(("Shoal-Tag", "\(tag)")) }
            let request = HTTPRequest(method: "POST", target: "/bytes", headers: headers,
                                      body: .stream(fd: input.fd, length: input.length))

            let reporter = ProgressReporter(mode: progress, label: "upload", total: input.length)
            let head: HTTPResponseHead
            let body: [UInt8]
            do throws(HTTPClientError) {
                let response = try client.send(request) { reporter.update($0) }
                head = response.head
                body = try response.collect(bytesMax: 1 << 20)
            } catch {
                reporter.abandon()
                throw CommandFailure(error)
            }
            guard head.status == 201 || head.status == 200 else {
                reporter.abandon()
                throw CommandFailure("POST /bytes", head, body: body)
            }
            reporter.finish()
            let answer = try decodeAnswer(Answer.self, body, from: "POST /bytes")
            guard let reference = Reference(argument: answer.reference) else {
                throw CommandFailure(CLIExit.unreachable, "POST /bytes: the reference '\(answer.reference.prefix(80))' is not 64 hex digits")
            }
            Terminal.out(reference.hex)
        }
    }
}

/// `--range a-b`: bytes a through b of the file, inclusive (HTTP's form); `a-` to the end,
/// `-n` the last n bytes.
struct ByteRange: ExpressibleByArgument, Sendable, Equatable {
    var first: UInt64?
    var last: UInt64?

    init?(argument: String) {
        let parts = argument.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count <= 20, parts[1].count <= 20,
              parts.allSatisfy({ $0.allSatisfy { $0 >= "0" && $0 <= "9" } }) else { return nil }
        first = parts[0].isEmpty ? nil : UInt64(parts[0])
        last = parts[1].isEmpty ? nil : UInt64(parts[1])
        if !parts[0].isEmpty && first == nil || !parts[1].isEmpty && last == nil { return nil }
        switch (first, last) {
        case (nil, nil): return nil
        case (nil, let suffix?): if suffix == 0 { return nil }
        case (let a?, let b?): if b < a { return nil }
        case (_?, nil): break
        }
    }

    /// The `Range` header's value.
    var header: String { "bytes=\(first.map(String.init) ?? "")-\(last.map(String.init) ?? "")" }

    static var defaultCompletionKind: CompletionKind { .default }
}

/// `shoal download REF`: GET /bytes/{ref} into a file (whole or not at all) or stdout; with
/// `--fetch`, first the node's downloader fetches the whole file into its store.
struct DownloadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "download",
        abstract: "Download a file by its reference from a running node.",
        discussion: """
            Writes the file (or --range of it) to -o FILE, else stdout. FILE appears only when \
            every byte has arrived: the bytes go to a temporary file beside it, renamed at the \
            end and removed on any failure. Progress goes to stderr.

            With --fetch, the node first downloads every chunk of the file into its own store \
            (POST /downloads with the root; durable, resumed after a restart), and the command \
            follows it (GET /downloads/{id}, five times a second) until it ends; then -o FILE \
            (or -o - for stdout) writes the file from the node as without --fetch. Without -o \
            nothing is written: the file stays on the node. Ctrl-C stops the watching, not the \
            node's download, unless --cancel-on-interrupt.

            Exit status: 0 complete, 1 the API refused (not found, range past the end; its \
            message on stderr) or the download was cancelled, 2 usage, 3 the API cannot be \
            reached, stopped answering or cut the body short, 4 the output cannot be written, 5 \
            (--fetch) chunks of the file could not be fetched, 130 interrupted. See Docs/CLI.md.
            """
    )

    @OptionGroup var options: APIOptions

    @Argument(help: ArgumentHelp("The file's reference: 64 hex digits.", valueName: "ref"))
    var reference: Reference

    @Option(name: [.customShort("o"), .customLong("output")], help: ArgumentHelp("Write to this file (- or none: stdout; with --fetch, none writes nothing).", valueName: "file"))
    var output: String?

    /// `.unconditional`: `--range -100` (the last 100 bytes) is a value, not an unknown flag.
    @Option(parsing: .unconditional,
            help: ArgumentHelp("Only bytes a to b, inclusive: a-b, a- (to the end) or -n (the last n).", valueName: "a-b"))
    var range: ByteRange?

    @Flag(help: "Only what the node holds itself: fail at once on a missing chunk instead of waiting for it.")
    var local = false

    @Option(help: ArgumentHelp("auto (a bar on a terminal, else plain), plain, json or none.", valueName: "mode"))
    var progress: ProgressMode = .auto

    @OptionGroup var fetching: FetchOptions

    func validate() throws {
        if !fetching.fetch && (fetching.parity || !fetching.hints.isEmpty || fetching.policy != nil || fetching.cancelOnInterrupt) {
            throw ValidationError("--parity, --hint, --policy and --cancel-on-interrupt go with --fetch")
        }
    }

    func run() throws {
        try runClientCommand { () throws(CommandFailure) in
            let client = try options.client()
            if fetching.fetch {
                var body = DownloadRequest(root: reference.hex, parity: fetching.parity ? true : nil,
                                           policy: (fetching.policy ?? .eager).apiName, hints: fetching.hints.map(\.hex))
                if body.hints?.isEmpty == true { body.hints = nil }
                let started = try postDownload(body, client: client)
                _ = try DownloadFollower(client: client, progress: progress, cancelOnInterrupt: fetching.cancelOnInterrupt).follow(started)
                guard output != nil else { return }
            }
            let target = "/bytes/\(reference.hex)" + (local ? "?local=true" : "")
            var headers = [("Accept", "application/octet-stream")]
            if let range { headers.append(("Range", range.header)) }

            let response: HTTPResponse
            do throws(HTTPClientError) {
                response = try client.send(HTTPRequest(method: "GET", target: target, headers: headers))
            } catch {
                throw CommandFailure(error)
            }
            let request = "GET /bytes/\(reference.hex)"
            guard response.status == 200 || response.status == 206 else {
                let body = (try? response.collect(bytesMax: 1 << 20)) ?? []
                throw CommandFailure(request, response.head, body: body)
            }
            if let range, response.status != 206 {
                throw CommandFailure(CLIExit.unreachable, "\(request): asked for \(range.header), the API sent the whole file (200)")
            }
            if let first = range?.first, let contentRange = response.head.header("Content-Range"),
               !contentRange.hasPrefix("bytes \(first)-") {
                throw CommandFailure(CLIExit.unreachable, "\(request): asked for bytes from \(first), the API sent '\(contentRange.prefix(80))'")
            }
            if range == nil, response.status == 206 {
                throw CommandFailure(CLIExit.unreachable, "\(request): the API sent part of the file (206) unasked")
            }
            let total: UInt64?
            switch response.framing {
            case .length(let length): total = length
            case .chunked: total = nil
            case .none, .untilClose:
                throw CommandFailure(CLIExit.unreachable, "\(request): the answer has no Content-Length, so a cut could not be told from the end")
            }

            let sink: DownloadOutput
            if let output, output != "-" {
                sink = try DownloadOutput(path: output)
            } else {
                sink = DownloadOutput()
            }
            let reporter = ProgressReporter(mode: progress, label: "download", total: total)
            do throws(HTTPClientError) {
                try response.stream(into: { (piece: UnsafeRawBufferPointer) throws(HTTPClientError) in try sink.write(piece) },
                                    received: { reporter.update($0) })
            } catch {
                reporter.abandon()
                sink.discard()
                throw CommandFailure(error)
            }
            do throws(CommandFailure) {
                try sink.commit()
            } catch {
                reporter.abandon()
                throw error
            }
            reporter.finish()
        }
    }
}
