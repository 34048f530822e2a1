import Foundation
import ShoalTestSupport
import Testing

/// The client commands against a real node (`shoal start` as a process): a file goes up and
/// comes back byte for byte, whole and in ranges, from a file and from a pipe; pins come and go.
@Suite(.enabled(if: CLI.binaryExists, "the shoal executable is not built beside the tests"))
struct EndToEndTests {
    @Test func aFileGoesUpAndComesBackWholeAndInRangesAndPinsComeAndGo() async throws {
        let directory = try TemporaryDirectory("shoal-cli")
        let node = try await RunningNode.start(in: directory.path + "/node")
        defer { node.stop() }
        let api = ["--api", node.api]

        let bytes = seededBytes(3 << 20 + 1234, seed: 42)
        let file = directory.path + "/input"
        try Data(bytes).write(to: URL(fileURLWithPath: file))

        // From a file (Content-Length): the reference alone on stdout, JSON progress on stderr.
        let upload = try await CLI.run(["upload", file, "--progress", "json"] + api)
        #expect(upload.status == 0, "\(upload.stderr)")
        let reference = upload.stdoutText.trimmingCharacters(in: .newlines)
        #expect(upload.stdoutText == reference + "\n")
        #expect(reference.count == 64 && reference.allSatisfy(\.isHexDigit))
        let last = try #require(upload.stderr.split(separator: "\n").last)
        #expect(last.hasPrefix(#"{"bytes":\#(bytes.count),"total":\#(bytes.count),"#) && last.hasSuffix(#""done":true}"#))

        // From a pipe (chunked): the same bytes, the same reference.
        let piped = try await CLI.run(["upload", "-", "--progress", "none"] + api, stdin: bytes)
        #expect(piped.status == 0, "\(piped.stderr)")
        #expect(piped.stdoutText == reference + "\n")

        // Whole, into a file.
        let out = directory.path + "/out"
        let download = try await CLI.run(["download", reference, "-o", out, "--progress", "plain"] + api)
        #expect(download.status == 0, "\(download.stderr)")
        #expect(download.stdout.isEmpty)
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: out))) == bytes)
        #expect(download.stderr.contains("download: 3.0 MiB in "))

        // Ranges, to stdout: inclusive a-b, across leaves; the last n bytes; only local chunks.
        let middle = try await CLI.run(["download", reference, "--range", "1000000-2100000"] + api)
        #expect(middle.status == 0, "\(middle.stderr)")
        #expect(middle.stdout == Array(bytes[1_000_000...2_100_000]))
        let tail = try await CLI.run(["download", reference, "--range", "-100", "--local"] + api)
        #expect(tail.status == 0, "\(tail.stderr)")
        #expect(tail.stdout == Array(bytes.suffix(100)))

        // The API's refusals are exit 1 with its message.
        let pastEnd = try await CLI.run(["download", reference, "--range", "\(bytes.count + 10)-\(bytes.count + 20)"] + api)
        #expect(pastEnd.status == 1)
        #expect(pastEnd.stderr.contains("answered 416"))
        let unknown = String(repeating: "0", count: 63) + "1"
        let missing = try await CLI.run(["download", unknown, "--local", "-o", directory.path + "/missing"] + api)
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("answered 404"))
        #expect(!FileManager.default.fileExists(atPath: directory.path + "/missing"))

        // Pins: add, list, show, check, remove; removing again is the API's 404.
        let add = try await CLI.run(["pin", "add", reference] + api)
        #expect(add.status == 0, "\(add.stderr)")
        #expect(add.stdoutText == "pinned \(reference)\n")
        #expect(try await CLI.run(["pin", "add", reference] + api).stdoutText == "already pinned \(reference)\n")
        let list = try await CLI.run(["pin", "ls"] + api)
        #expect(list.status == 0)
        #expect(list.stdoutText.split(separator: "\n").map(String.init) == [reference])
        let show = try await CLI.run(["pin", "ls", reference] + api)
        #expect(show.status == 0)
        #expect(show.stdoutText.contains(#""reference":"\#(reference)""#))
        let check = try await CLI.run(["pin", "check", reference] + api)
        #expect(check.status == 0, "\(check.stderr)")
        #expect(check.stdoutText.contains(#""isRetrievable":true"#))
        let remove = try await CLI.run(["pin", "rm", reference] + api)
        #expect(remove.status == 0)
        #expect(remove.stdoutText == "unpinned \(reference)\n")
        let again = try await CLI.run(["pin", "rm", reference] + api)
        #expect(again.status == 1)
        #expect(again.stderr.contains("answered 404"))
        #expect(try await CLI.run(["pin", "ls"] + api).stdoutText == "")

        // An upload can pin as it goes.
        let pinned = try await CLI.run(["upload", file, "--pin", "--progress", "none"] + api)
        #expect(pinned.stdoutText == reference + "\n")
        #expect(try await CLI.run(["pin", "ls"] + api).stdoutText == reference + "\n")

        #expect(try await node.finish() == 0)
    }

    @Test func anEmptyUploadIsTheAPIsRefusalAndAnErasureCodedFileRoundTrips() async throws {
        let directory = try TemporaryDirectory("shoal-cli")
        let node = try await RunningNode.start(in: directory.path + "/node")
        defer { node.stop() }
        let api = ["--api", node.api]

        // The API refuses an empty body (400 emptyBody), chunked from a pipe or with a length.
        let emptyFile = directory.path + "/empty"
        FileManager.default.createFile(atPath: emptyFile, contents: nil)
        for arguments in [["upload", "-"], ["upload", emptyFile]] {
            let empty = try await CLI.run(arguments + ["--progress", "none"] + api, stdin: [])
            #expect(empty.status == 1)
            #expect(empty.stderr.hasPrefix("shoal: POST /bytes answered 400: ") && empty.stderr.hasSuffix("(emptyBody)\n"), "\(empty.stderr)")
            #expect(empty.stdout.isEmpty)
        }

        let bytes = seededBytes(1 << 20, seed: 43)
        let coded = try await CLI.run(["upload", "-", "--redundancy", "medium", "--progress", "none"] + api, stdin: bytes)
        #expect(coded.status == 0, "\(coded.stderr)")
        let plain = try await CLI.run(["upload", "-", "--progress", "none"] + api, stdin: bytes)
        #expect(coded.stdoutText != plain.stdoutText, "the redundancy level is part of the tree, so of its reference")
        let back = try await CLI.run(["download", coded.stdoutText.trimmingCharacters(in: .newlines)] + api)
        #expect(back.status == 0, "\(back.stderr)")
        #expect(back.stdout == bytes)
    }
}

/// `shoal start` on 127.0.0.1 with free ports (and `arguments`); its stdout goes to a file,
/// polled for the ready line.
final class RunningNode: @unchecked Sendable {
    let process = Process()
    private(set) var api = ""
    /// Where peers connect, and the node's overlay (64 hex digits), from its ready line.
    private(set) var listen = ""
    private(set) var overlay = ""

    static func start(in dataDirectory: String, arguments: [String] = []) async throws -> RunningNode {
        let node = RunningNode()
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        let log = dataDirectory + "/stdout"
        FileManager.default.createFile(atPath: log, contents: nil)
        node.process.executableURL = URL(fileURLWithPath: CLI.binaryPath)
        node.process.arguments = ["start", "--data-dir", dataDirectory, "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0",
                                  "--log-level", "warning"] + arguments
        node.process.environment = ["PATH": "/usr/bin:/bin"]
        node.process.standardOutput = FileHandle(forWritingAtPath: log)
        node.process.standardError = FileHandle.nullDevice
        try node.process.run()
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline && node.process.isRunning {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            // "shoal: listening on H:P, API on H:P, overlay X"
            if let line = text.split(separator: "\n").first,
               let match = line.firstMatch(of: /listening on ([^,]+), API on ([^,]+), overlay ([0-9a-f]{64})/) {
                (node.listen, node.api, node.overlay) = (String(match.1), String(match.2), String(match.3))
                return node
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        node.stop()
        throw TestFailure("shoal start gave no ready line within 60 s")
    }

    /// SIGTERM and the exit status, waiting (at most 30 s) off the cooperative pool.
    func finish() async throws -> Int32 {
        try await onOwnThread { self.stop() }
    }

    /// SIGTERM, a bounded wait, the exit status (SIGKILL if it does not stop).
    @discardableResult
    func stop() -> Int32 {
        guard process.isRunning else { return process.terminationStatus }
        process.terminate()
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return process.terminationStatus
    }
}
