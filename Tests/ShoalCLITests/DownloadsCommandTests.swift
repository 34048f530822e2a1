import Foundation
@testable import shoal
import ShoalTestSupport
import Testing

/// `shoal download --fetch` and `shoal downloads …`: the node's downloader driven from the
/// terminal, with the exit statuses Docs/CLI.md promises.
@Suite(.enabled(if: CLI.binaryExists, "the shoal executable is not built beside the tests"))
struct DownloadsCommandTests {
    static let ref = String(repeating: "ab", count: 32)

    @Test(arguments: [
        ["download", ref, "--parity"],
        ["download", ref, "--hint", ref],
        ["download", ref, "--cancel-on-interrupt"],
        ["download", ref, "--fetch", "--policy", "later"],
        ["downloads"],
        ["downloads", "frob"],
        ["downloads", "show", "abc"],
        ["downloads", "cancel"],
        ["downloads", "start"],
        ["downloads", "start", "--addresses", "-", "--policy", "later"],
        ["downloads", "start", "--addresses", "-", "--hint", "zz"],
    ])
    func aUsageErrorExits2AndSendsNothing(_ arguments: [String]) async throws {
        let output = try await CLI.run(arguments + ["--api", "127.0.0.1:1"])
        #expect(output.status == 2, "\(arguments): \(output.stderr)")
        #expect(output.stdout.isEmpty)
    }

    @Test(arguments: [
        ["downloads", "list"], ["downloads", "show", ref], ["downloads", "cancel", ref],
        ["downloads", "start", "--addresses", "-"], ["download", ref, "--fetch"],
    ])
    func everyDownloadsCommandExits3WhenNothingListens(_ arguments: [String]) async throws {
        let port = try closedPort()
        let output = try await CLI.run(arguments, environment: ["SHOAL_API": "127.0.0.1:\(port)"], stdin: Array((Self.ref + "\n").utf8))
        #expect(output.status == 3, "\(arguments): \(output.stderr)")
        #expect(output.stderr == "shoal: cannot connect to the API at 127.0.0.1:\(port): Connection refused\n")
    }

    @Test func anAddressListThatCannotBeReadOrParsedExits4BeforeSending() async throws {
        let directory = try TemporaryDirectory("shoal-cli")
        let missing = try await CLI.run(["downloads", "start", "--addresses", directory.path + "/none", "--api", "127.0.0.1:1"])
        #expect(missing.status == 4)
        #expect(missing.stderr.contains("cannot open \(directory.path)/none"))
        let bad = try await CLI.run(["downloads", "start", "--addresses", "-", "--api", "127.0.0.1:1"], stdin: Array("# a list\n\(Self.ref)\nxyz\n".utf8))
        #expect(bad.status == 4)
        #expect(bad.stderr == "shoal: stdin:3: 'xyz' is not an address of 64 hex digits\n")
    }

    @Test func anAddressListSkipsBlanksAndCommentsAndIsBounded() throws {
        let upper = String(repeating: "AB", count: 32)
        #expect(try AddressList.parse("# x\n\n  \(upper)\r\n\(Self.ref)\n", source: "f", max: 4) == [Self.ref, Self.ref])
        #expect(throws: CommandFailure.self) { try AddressList.parse("\(Self.ref)\n\(Self.ref)\n", source: "f", max: 1) }
        #expect(throws: CommandFailure.self) { try AddressList.parse("# only a comment\n", source: "f", max: 1) }
    }

    @Test func chunkProgressIsCountedInChunks() {
        let state = ProgressState(label: "fetch", bytes: 30, total: 120, elapsedSeconds: 2, rate: 15, unit: .chunks)
        #expect(ProgressFormat.plainLine(state) == "fetch: 30 chunks of 120 chunks (25%), 15 chunks/s, ETA 0:06")
        #expect(ProgressFormat.plainSummary(state) == "fetch: 30 chunks in 0:02 (15 chunks/s)")
        #expect(ProgressFormat.jsonLine(state) == #"{"chunks":30,"total":120,"rate":15}"#)
        #expect(ProgressFormat.terminalLine(state, columns: 80).contains(" 25% 30 chunks / 120 chunks  15 chunks/s  ETA 0:06"))
    }

    /// Two nodes as processes: `holder` has the file, `getter` is a light node dialling it.
    struct Pair {
        let directory: TemporaryDirectory
        let holder: RunningNode
        let getter: RunningNode

        static func start() async throws -> Pair {
            let directory = try TemporaryDirectory("shoal-cli")
            let holder = try await RunningNode.start(in: directory.path + "/holder")
            let getter = try await RunningNode.start(in: directory.path + "/getter", arguments: ["--light", "--peer", holder.listen])
            try await eventually("the getter is connected", within: TestTimeouts.listening) {
                try await CLI.run(["topology", "--json", "--api", getter.api]).stdoutText.contains(holder.overlay)
            }
            return Pair(directory: directory, holder: holder, getter: getter)
        }

        func stop() {
            getter.stop()
            holder.stop()
        }
    }

    @Test func aFileIsFetchedIntoTheNodeWithPlainProgressThenWrittenAndTheDownloadIsListed() async throws {
        let pair = try await Pair.start()
        defer { pair.stop() }
        let bytes = seededBytes(2 << 20, seed: 71)
        let upload = try await CLI.run(["upload", "-", "--redundancy", "medium", "--progress", "none", "--api", pair.holder.api], stdin: bytes)
        #expect(upload.status == 0, "\(upload.stderr)")
        let reference = upload.stdoutText.trimmingCharacters(in: .newlines)
        let getter = ["--api", pair.getter.api]

        let out = pair.directory.path + "/out"
        let fetched = try await CLI.run(["download", reference, "--fetch", "-o", out, "--progress", "plain"] + getter)
        #expect(fetched.status == 0, "\(fetched.stderr)")
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: out))) == bytes)
        let lines = fetched.stderr.split(separator: "\n").map(String.init)
        let first = try #require(lines.first)
        let id = try #require(first.firstMatch(of: /^fetch: download ([0-9a-f]{64}) of file ([0-9a-f]{64}), (\d+) chunks$/), "\(first)")
        #expect(id.2 == reference)
        #expect(lines.contains { $0.hasPrefix("fetch: \(id.3) chunks in ") }, "\(lines)")
        #expect(lines.last?.hasPrefix("download: 2.0 MiB in ") == true, "\(lines)")
        // The chunks are the node's now: the file reads with --local.
        #expect(try await CLI.run(["download", reference, "--local"] + getter).stdout == bytes)

        let list = try await CLI.run(["downloads", "list"] + getter)
        #expect(list.status == 0)
        #expect(list.stdoutText == "\(id.1)  completed  -  root \(reference)\n")
        let show = try await CLI.run(["downloads", "show", String(id.1)] + getter)
        #expect(show.status == 0 && show.stdoutText.contains(#""state":"completed""#) && show.stdoutText.contains(#""root":"\#(reference)""#))
        let cancel = try await CLI.run(["downloads", "cancel", String(id.1)] + getter)
        #expect(cancel.status == 1 && cancel.stderr.contains("answered 404"), "ended: nothing to cancel")

        // A root nobody has: the API's 404, exit 1.
        let unknown = try await CLI.run(["download", String(repeating: "0", count: 63) + "1", "--fetch"] + getter)
        #expect(unknown.status == 1 && unknown.stderr.contains("answered 404"), "\(unknown.stderr)")
    }

    @Test func anAddressDownloadIsStartedShownCancelledAndAWaitEndsWithIt() async throws {
        let pair = try await Pair.start()
        defer { pair.stop() }
        let getter = ["--api", pair.getter.api]
        // Addresses nobody has: the download runs until it is cancelled (or two minutes pass).
        let nobody = (1...3).map { String(repeating: "0", count: 63) + "\($0)" }.joined(separator: "\n")

        let started = try await CLI.run(["downloads", "start", "--addresses", "-", "--policy", "on-read"] + getter, stdin: Array(nobody.utf8))
        #expect(started.status == 0, "\(started.stderr)")
        let id = started.stdoutText.trimmingCharacters(in: .newlines)
        #expect(id.count == 64)
        let show = try await CLI.run(["downloads", "show", id] + getter)
        #expect(show.stdoutText.contains(#""state":"running""#) && show.stdoutText.contains(#""total":3"#), "\(show.stdoutText)")
        #expect(try await CLI.run(["downloads", "list"] + getter).stdoutText == "\(id)  running    0/3\n")
        let cancel = try await CLI.run(["downloads", "cancel", id] + getter)
        #expect(cancel.status == 0 && cancel.stdoutText == "cancelled \(id)\n")
        #expect(try await CLI.run(["downloads", "show", id] + getter).stdoutText.contains(#""state":"cancelled""#))

        // Waiting: a cancel from elsewhere ends the wait with exit 1.
        async let waited = CLI.run(["downloads", "start", "--addresses", "-", "--wait", "--progress", "plain"] + getter, stdin: Array(nobody.utf8))
        var second = ""
        try await eventually("the second download runs", within: .seconds(30)) {
            second = try await CLI.run(["downloads", "list"] + getter).stdoutText.split(separator: "\n")
                .first { $0.contains("running") }.map { String($0.prefix(64)) } ?? ""
            return !second.isEmpty
        }
        #expect(try await CLI.run(["downloads", "cancel", second] + getter).status == 0)
        let output = try await waited
        #expect(output.status == 1, "\(output.stderr)")
        #expect(output.stdoutText == second + "\n")
        #expect(output.stderr.hasSuffix("shoal: download \(second) was cancelled\n"), "\(output.stderr)")
    }

    @Test(arguments: [false, true])
    func ctrlCEndsTheWaitAndCancelsOnlyWhenAsked(cancelOnInterrupt: Bool) async throws {
        let pair = try await Pair.start()
        defer { pair.stop() }
        let getter = ["--api", pair.getter.api]
        let list = pair.directory.path + "/addresses"
        try Data((String(repeating: "0", count: 63) + "9\n").utf8).write(to: URL(fileURLWithPath: list))
        let errPath = pair.directory.path + "/stderr", outPath = pair.directory.path + "/stdout"
        FileManager.default.createFile(atPath: errPath, contents: nil)
        FileManager.default.createFile(atPath: outPath, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binaryPath)
        process.arguments = ["downloads", "start", "--addresses", list, "--wait", "--progress", "plain"]
            + (cancelOnInterrupt ? ["--cancel-on-interrupt"] : []) + getter
        process.standardOutput = FileHandle(forWritingAtPath: outPath)
        process.standardError = FileHandle(forWritingAtPath: errPath)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        // The id on stdout says the download started and the wait began.
        var id = ""
        try await eventually("the download started", within: .seconds(30)) {
            id = ((try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "").trimmingCharacters(in: .newlines)
            return id.count == 64
        }
        try await Task.sleep(for: .milliseconds(300))
        kill(process.processIdentifier, SIGINT)
        try await onOwnThread { process.waitUntilExit() }
        #expect(process.terminationStatus == 130)
        let stderr = try String(contentsOfFile: errPath, encoding: .utf8)
        let state = try await CLI.run(["downloads", "show", id] + getter).stdoutText
        if cancelOnInterrupt {
            #expect(stderr.hasSuffix("shoal: interrupted; download \(id) cancelled\n"), "\(stderr)")
            #expect(state.contains(#""state":"cancelled""#))
        } else {
            #expect(stderr.contains("shoal: interrupted; download \(id) goes on on the node"), "\(stderr)")
            #expect(state.contains(#""state":"running""#))
        }
    }
}
