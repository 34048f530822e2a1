import Foundation
import Logging
import ShoalNode
import ShoalTestSupport
import Testing

/// Debian's `chromium`, headless, for the status page test: it loads a page, runs its scripts
/// for a budget of virtual time (network waits do not use it up) and prints the DOM.
///
/// Policy (decision 0017): with `SHOAL_BROWSER_TEST=required` (CI sets it) a missing browser is
/// a failure; otherwise the test is skipped with the reason. `SHOAL_CHROMIUM` names a binary.
enum Chromium {
    /// The whole run, start to exit, is bounded by this; past it the browser is killed.
    static let runSecondsMax: Double = 90

    static var required: Bool { ProcessInfo.processInfo.environment["SHOAL_BROWSER_TEST"] == "required" }

    static var path: String? {
        let environment = ProcessInfo.processInfo.environment
        if let named = environment["SHOAL_CHROMIUM"], FileManager.default.isExecutableFile(atPath: named) { return named }
        let directories = (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        for directory in directories {
            for name in ["chromium", "chromium-browser"] {
                let candidate = "\(directory)/\(name)"
                if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            }
        }
        return nil
    }

    /// Runs the test only where a browser is, or where one is required (it then fails).
    static var enabled: Bool { path != nil || required }
    static let skipReason: Comment = "no chromium on PATH (apt-get install chromium); SHOAL_BROWSER_TEST=required makes this a failure"

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// The DOM of `url` after its scripts ran for `virtualMilliseconds`, and the real seconds taken.
    static func dumpDOM(_ url: String, virtualMilliseconds: Int) async throws -> (dom: String, seconds: Double) {
        guard let binary = path else {
            throw Failure(description: "SHOAL_BROWSER_TEST=required, but no chromium was found (apt-get install chromium)")
        }
        let scratch = try TemporaryDirectory("shoal-chromium")
        defer { scratch.remove() }
        let outPath = scratch.sub("dom.html")
        let errPath = scratch.sub("stderr.txt")
        for file in [outPath, errPath] {
            guard FileManager.default.createFile(atPath: file, contents: nil) else { throw Failure(description: "cannot create \(file)") }
        }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
            "--disable-background-networking", "--disable-component-update", "--mute-audio",
            "--user-data-dir=\(scratch.sub("profile"))",
            "--virtual-time-budget=\(virtualMilliseconds)", "--dump-dom", url,
        ]
        // Files, not pipes: nothing has to drain them while the browser runs.
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        process.environment = ["PATH": "/usr/bin:/bin", "HOME": scratch.path]
        let start = ContinuousClock.now
        try process.run()
        let deadline = start + .milliseconds(Int64(runSecondsMax * 1000))
        while process.isRunning && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        let timedOut = process.isRunning
        if timedOut { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        let elapsed = (ContinuousClock.now - start).components
        let seconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
        let dom = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        guard !timedOut, process.terminationStatus == 0, dom.contains("</html>") else {
            let errors = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
            throw Failure(description: """
                chromium \(timedOut ? "ran past \(runSecondsMax) s" : "exited with \(process.terminationStatus)") \
                after \(seconds) s; DOM \(dom.utf8.count) bytes; stderr (last 2000 bytes): \(errors.suffix(2000))
                """)
        }
        return (dom, seconds)
    }
}

/// A page as chromium dumped it: the text of each element with a `data-field`, and which
/// elements carry `hidden`.
struct DumpedPage {
    let dom: String
    /// `data-field` → the element's text (entities decoded). Figures are leaf elements.
    let fields: [String: String]

    init(_ dom: String) {
        self.dom = dom
        var fields: [String: String] = [:]
        for match in dom.matches(of: /<[a-zA-Z0-9]+\s[^>]*?data-field="([^"]*)"[^>]*>([^<]*)</) {
            fields[DumpedPage.decode(String(match.1))] = DumpedPage.decode(String(match.2))
        }
        self.fields = fields
    }

    /// The figure `name` as an integer, or nil when absent or not a number.
    func int(_ name: String) -> Int? { fields[name].flatMap { Int($0) } }

    /// Whether the element with `id` carries the `hidden` attribute (nil: no such element).
    func isHidden(id: String) -> Bool? {
        guard let match = dom.firstMatch(of: try! Regex("<[a-zA-Z0-9]+\\s[^>]*\\bid=\"\(id)\"[^>]*>")) else { return nil }
        return dom[match.range].contains(/\shidden(=""|\s|>)/)
    }

    private static func decode(_ text: String) -> String {
        text.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&#39;", with: "'")
            .replacingOccurrences(of: "&nbsp;", with: "\u{a0}").replacingOccurrences(of: "&amp;", with: "&")
    }
}

/// A node running (`run()`) on 127.0.0.1, port 0, dialling `peers`, for the duration of
/// `body`, which gets the node and its "host:port". Stopped, closed and removed afterwards.
func withRunningNode<R>(peers: [String] = [], _ body: (Node, String) async throws -> R) async throws -> R {
    let directory = try TemporaryDirectory("shoal-api-run")
    var configuration = NodeConfiguration(dataDirectory: directory.path)
    configuration.listenHost = "127.0.0.1"
    configuration.listenPort = 0
    configuration.peers = peers
    configuration.redialDelayMin = .milliseconds(100)
    configuration.redialDelayMax = .seconds(1)
    configuration.drainTimeout = .seconds(2)
    var logger = Logger(label: "shoal.api.test.node")
    logger.logLevel = .critical
    let node = try Node(configuration: configuration, logger: logger)
    let task = Task { try await node.run() }
    let result: Result<R, any Error>
    do {
        try await eventually("the node listens", within: TestTimeouts.listening) { node.listeningPort != nil }
        result = .success(try await body(node, "127.0.0.1:\(node.listeningPort ?? 0)"))
    } catch {
        result = .failure(error)
    }
    task.cancel()
    _ = try? await task.value
    node.close()
    directory.remove()
    return try result.get()
}

