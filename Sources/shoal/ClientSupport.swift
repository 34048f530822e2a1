import ArgumentParser
import ShoalAPI
import ShoalCore

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

/// Exit statuses of the commands that talk to a node's API (`status`, `upload`, `download`,
/// `downloads`, `pin`, `topology`, `peers`): what a script can rely on (Docs/CLI.md, decision 0018).
enum CLIExit {
    static let success: Int32 = 0
    /// The API answered with an error (its message is on stderr).
    static let apiError: Int32 = 1
    /// Bad flags, arguments or SHOAL_API: nothing was sent.
    static let usage: Int32 = 2
    /// The API could not be reached, stopped answering, or broke the protocol (a cut-short body).
    static let unreachable: Int32 = 3
    /// The local input could not be read or the output could not be written.
    static let localIO: Int32 = 4
    /// `shoal pin check`: the API answered, and not every chunk of the file is retrievable;
    /// `shoal download --fetch`, `shoal downloads start --wait`: the download failed (chunks
    /// nobody could give).
    static let notRetrievable: Int32 = 5

    /// The commands whose usage errors exit with `usage` rather than ArgumentParser's 64
    /// (`shoal start` keeps 64, as its supervisors expect).
    static let clientCommands: Set<String> = ["status", "upload", "download", "downloads", "pin", "topology", "peers"]

    /// The `--help` text of a command that prints one answer: what its statuses mean.
    static let readCommandDiscussion = """
        Exit status: 0 on HTTP 200, 1 the API answered an error (its message on stderr), 2 \
        usage, 3 the API cannot be reached or stopped answering. See Docs/CLI.md.
        """
}

/// A command ends with `status` after printing `message` (if any) on stderr as "shoal: …".
struct CommandFailure: Error {
    var status: Int32
    var message: String?

    init(_ status: Int32, _ message: String?) {
        self.status = status
        self.message = message
    }

    /// A failed exchange: the client's own words, and the status its kind calls for.
    init(_ error: HTTPClientError) {
        self.init(error.exitCode, error.description)
    }

    /// A non-2xx answer: the API's `error.message` (and code), else the start of the body.
    init(_ request: String, _ head: HTTPResponseHead, body: [UInt8]) {
        self.init(CLIExit.apiError, "\(request) answered \(head.status): \(apiErrorText(body))")
    }
}

/// What an error body says: "message (code)" from the API's JSON error, else its first 200
/// characters as text.
func apiErrorText(_ body: [UInt8]) -> String {
    if let decoded = try? JSONDecoder().decode(APIError.Body.self, from: Data(body)) {
        return "\(decoded.error.message) (\(decoded.error.code))"
    }
    let text = String(decoding: body.prefix(200), as: UTF8.self).trimmingCharacters(in: " \t\r\n")
    return text.isEmpty ? "(no body)" : text
}

/// `--api` and `--timeout`, shared by the client commands.
struct APIOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The node's API address (default: SHOAL_API, else 127.0.0.1:1633).", valueName: "host:port"))
    var api: String?

    @Option(name: .customLong("timeout"),
            help: ArgumentHelp("Fail (exit 3) when nothing moves for this many seconds (default 60; status 10).", valueName: "seconds"))
    var timeoutSeconds: Int?

    static let timeoutSecondsMax = 24 * 3600

    func validate() throws {
        if let api, ShoalAPI.HostPort(parsing: api, allowPortZero: false) == nil {
            throw ValidationError("--api: '\(api)' is not HOST:PORT")
        }
        if let timeoutSeconds, !(1...APIOptions.timeoutSecondsMax).contains(timeoutSeconds) {
            throw ValidationError("--timeout: \(timeoutSeconds) is outside 1…\(APIOptions.timeoutSecondsMax) seconds")
        }
    }

    /// The address from `--api`, else SHOAL_API, else the default; a bad SHOAL_API is a usage error.
    func address() throws(CommandFailure) -> ShoalAPI.HostPort {
        let text = api ?? getenv(DaemonSettings.EnvironmentKey.api).map { String(cString: $0) }
        guard let text, !text.isEmpty else { return DaemonSettings.defaults.api }
        guard let parsed = ShoalAPI.HostPort(parsing: text, allowPortZero: false) else {
            throw CommandFailure(CLIExit.usage, "\(DaemonSettings.EnvironmentKey.api): '\(text)' is not HOST:PORT")
        }
        return parsed
    }

    /// A client for the address, waiting at most `--timeout`, else `defaultTimeoutSeconds`.
    func client(defaultTimeoutSeconds: Int = 60) throws(CommandFailure) -> HTTPClient {
        HTTPClient(address: try address(), idleTimeoutSeconds: timeoutSeconds ?? defaultTimeoutSeconds)
    }
}

/// A file's reference (or a peer's overlay) on the command line: 64 hex digits (either case),
/// as the API names it.
struct Reference: ExpressibleByArgument, Sendable, CustomStringConvertible {
    let hex: String

    init?(argument: String) {
        guard let address = ChunkAddress(hex: argument) else { return nil }
        hex = address.hex
    }

    var description: String { hex }

    static var defaultCompletionKind: CompletionKind { .default }
}

extension HTTPClient {
    /// Sends a request (no body, or `json`) and returns the 2xx body; anything else is a `CommandFailure`.
    func expectSuccess(_ method: String, _ target: String, statuses: Set<Int> = [200, 201],
                       json: [UInt8]? = nil) throws(CommandFailure) -> (status: Int, body: [UInt8]) {
        let answer: (head: HTTPResponseHead, body: [UInt8])
        var request = HTTPRequest(method: method, target: target, headers: [("Accept", "application/json")])
        if let json {
            request.headers.append(("Content-Type", "application/json"))
            request.body = .bytes(json)
        }
        do {
            answer = try fetch(request)
        } catch {
            throw CommandFailure(error)
        }
        guard statuses.contains(answer.head.status) else {
            throw CommandFailure("\(method) \(target)", answer.head, body: answer.body)
        }
        return (answer.head.status, answer.body)
    }
}

/// Decodes an API answer; one that does not decode means the API broke its contract (exit 3).
func decodeAnswer<T: Decodable>(_ type: T.Type, _ body: [UInt8], from request: String) throws(CommandFailure) -> T {
    do {
        return try JSONDecoder().decode(T.self, from: Data(body))
    } catch {
        throw CommandFailure(CLIExit.unreachable,
                             "\(request): unexpected answer '\(String(decoding: body.prefix(200), as: UTF8.self))'")
    }
}

/// Runs a command body, turning a `CommandFailure` into its message and exit status.
func runClientCommand(_ body: () throws(CommandFailure) -> Void) throws {
    do {
        try body()
    } catch {
        if let message = error.message { Terminal.err("shoal: \(message)") }
        throw ExitCode(error.status)
    }
}
