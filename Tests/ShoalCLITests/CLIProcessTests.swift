import Foundation
import ShoalTestSupport
import Testing

/// The `shoal` binary's client commands as processes: exit statuses and messages a script can
/// rely on (Docs/CLI.md), against closed ports and servers that misbehave.
@Suite(.enabled(if: CLI.binaryExists, "the shoal executable is not built beside the tests"))
struct CLIProcessTests {
    static let ref = String(repeating: "ab", count: 32)

    @Test(arguments: [
        ["upload"],
        ["upload", "f", "--redundancy", "extreme"],
        ["upload", "f", "--progress", "loud"],
        ["upload", "f", "--tag", "-1"],
        ["upload", "f", "--api", "nowhere"],
        ["download", "abc"],
        ["download", String(repeating: "g", count: 64)],
        ["download", ref, "--range", "5-2"],
        ["download", ref, "--range", "x-3"],
        ["download", ref, "--range", "-0"],
        ["download", ref, "--range", "1-2-3"],
        ["download", ref, "--timeout", "0"],
        ["download", ref, "--frobnicate"],
        ["pin", "add", "zz"],
        ["pin", "rm"],
        ["pin", "frob", ref],
        ["status", "--api", "127.0.0.1:0"],
        ["topology", "--frobnicate"],
        ["peers", "connect"],
        ["peers", "connect", "nope"],
        ["peers", "connect", "127.0.0.1:0"],
        ["peers", "connect", "::1:1634"],
        ["peers", "disconnect", "abc"],
        ["peers", "drop", ref],
    ])
    func aUsageErrorExits2AndSendsNothing(_ arguments: [String]) async throws {
        let output = try await CLI.run(arguments + ["--api", "127.0.0.1:1"].filter { _ in !arguments.contains("--api") })
        #expect(output.status == 2, "\(arguments): \(output.stderr)")
        #expect(output.stderr.contains("Error:"), "\(output.stderr)")
        #expect(output.stdout.isEmpty)
    }

    @Test func aBadSHOAL_APIIsAUsageError() async throws {
        let output = try await CLI.run(["status"], environment: ["SHOAL_API": "nowhere"])
        #expect(output.status == 2)
        #expect(output.stderr == "shoal: SHOAL_API: 'nowhere' is not HOST:PORT\n")
    }

    @Test(arguments: [
        ["status"], ["status", "--peers"], ["upload", "-"], ["download", ref], ["download", ref, "-o", "OUT"],
        ["pin", "add", ref], ["pin", "rm", ref], ["pin", "ls"], ["pin", "ls", ref], ["pin", "check", ref],
        ["topology"], ["topology", "--json"], ["peers", "connect", "127.0.0.1:1634"], ["peers", "disconnect", ref],
    ])
    func everyClientCommandExits3WhenNothingListens(_ arguments: [String]) async throws {
        let directory = try TemporaryDirectory("shoal-cli")
        let port = try closedPort()
        let resolved = arguments.map { $0 == "OUT" ? directory.path + "/out" : $0 }
        let output = try await CLI.run(resolved, environment: ["SHOAL_API": "127.0.0.1:\(port)"], stdin: [1, 2, 3])
        #expect(output.status == 3, "\(arguments): \(output.stderr)")
        #expect(output.stderr == "shoal: cannot connect to the API at 127.0.0.1:\(port): Connection refused\n")
        #expect(output.stdout.isEmpty)
        #expect(directory.names.isEmpty, "no file left behind: \(directory.names)")
    }

    @Test func anInputThatCannotBeReadExits4() async throws {
        let directory = try TemporaryDirectory("shoal-cli")
        let missing = try await CLI.run(["upload", directory.path + "/missing", "--api", "127.0.0.1:1"])
        #expect(missing.status == 4)
        #expect(missing.stderr == "shoal: cannot open \(directory.path)/missing: No such file or directory\n")
        let folder = try await CLI.run(["upload", directory.path, "--api", "127.0.0.1:1"])
        #expect(folder.status == 4)
        #expect(folder.stderr == "shoal: \(directory.path) is a directory\n")
    }

    @Test func aDownloadCutShortExits3AndLeavesNoFile() async throws {
        let directory = try TemporaryDirectory("shoal-cli")
        let head = Array("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".utf8)
        let server = try RawServer(response: head + [UInt8](repeating: 7, count: 60000))
        let toFile = try await CLI.run(["download", Self.ref, "-o", directory.path + "/out", "--api", "127.0.0.1:\(server.port)", "--progress", "none"])
        #expect(toFile.status == 3)
        #expect(toFile.stderr == "shoal: the response was cut short: 60000 of 100000 bytes arrived\n")
        #expect(directory.names.isEmpty, "neither the file nor its temporary: \(directory.names)")

        // An earlier file of that name is left as it was.
        try Data("old".utf8).write(to: URL(fileURLWithPath: directory.path + "/out"))
        let again = try await CLI.run(["download", Self.ref, "-o", directory.path + "/out", "--api", "127.0.0.1:\(server.port)", "--progress", "none"])
        #expect(again.status == 3)
        #expect(directory.names == ["out"])
        #expect(try String(contentsOfFile: directory.path + "/out", encoding: .utf8) == "old")

        let toStdout = try await CLI.run(["download", Self.ref, "--api", "127.0.0.1:\(server.port)", "--progress", "none"])
        #expect(toStdout.status == 3)
        #expect(toStdout.stdout.count == 60000, "stdout gets what arrived; the status says it is not all")
    }

    @Test func aCompleteDownloadReplacesTheFileAndReportsProgressAsJSON() async throws {
        let directory = try TemporaryDirectory("shoal-cli")
        let body = seededBytes(3_000_000, seed: 9)
        let server = try RawServer(response: Array("HTTP/1.1 200 OK\r\nContent-Length: \(body.count)\r\n\r\n".utf8) + body)
        try Data("old".utf8).write(to: URL(fileURLWithPath: directory.path + "/out"))
        let output = try await CLI.run(["download", Self.ref, "-o", directory.path + "/out", "--api", "127.0.0.1:\(server.port)", "--progress", "json"])
        #expect(output.status == 0, "\(output.stderr)")
        #expect(output.stdout.isEmpty)
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: directory.path + "/out"))) == body)
        #expect(directory.names == ["out"])
        let lines = output.stderr.split(separator: "\n").map(String.init)
        let last = try #require(lines.last)
        let final = try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])
        #expect(final["bytes"] as? Int == body.count)
        #expect(final["total"] as? Int == body.count)
        #expect(final["done"] as? Bool == true)
        for line in lines {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object?["rate"] is Int, "every line is a JSON object with a rate: \(line)")
        }
    }

    @Test func plainProgressEndsWithASummaryLine() async throws {
        let body = seededBytes(1_000_000, seed: 10)
        let server = try RawServer(response: Array("HTTP/1.1 200 OK\r\nContent-Length: \(body.count)\r\n\r\n".utf8) + body)
        let output = try await CLI.run(["download", Self.ref, "--api", "127.0.0.1:\(server.port)", "--progress", "plain"])
        #expect(output.status == 0)
        #expect(output.stdout == body)
        let last = try #require(output.stderr.split(separator: "\n").last)
        #expect(last.hasPrefix("download: 977 KiB in "))
    }

    @Test func anAPIErrorExits1WithItsMessageAndCreatesNoFile() async throws {
        let directory = try TemporaryDirectory("shoal-cli")
        try await withFixtureServer { port in
            let output = try await CLI.run(["download", Self.ref, "-o", directory.path + "/out", "--api", "127.0.0.1:\(port)"])
            #expect(output.status == 1)
            #expect(output.stderr == "shoal: GET /bytes/\(Self.ref) answered 404: no file abababab: its root chunk is not here (notFound)\n")
            #expect(directory.names.isEmpty)
        }
    }

    @Test func aRangeTheServerIgnoresIsAnError() async throws {
        let server = try RawServer(response: Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".utf8))
        let output = try await CLI.run(["download", Self.ref, "--range", "0-1", "--api", "127.0.0.1:\(server.port)"])
        #expect(output.status == 3)
        #expect(output.stderr.contains("asked for bytes=0-1, the API sent the whole file (200)"))
        #expect(output.stdout.isEmpty)
    }

    @Test func aRangeIsAskedForAndWhatComesBackIsChecked() async throws {
        let right = try RawServer(response: Array("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 5-9/100\r\nContent-Length: 5\r\n\r\nhello".utf8))
        let output = try await CLI.run(["download", Self.ref, "--range", "5-9", "--api", "127.0.0.1:\(right.port)"])
        #expect(output.status == 0, "\(output.stderr)")
        #expect(output.stdoutText == "hello")
        let wrong = try RawServer(response: Array("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-4/100\r\nContent-Length: 5\r\n\r\nhello".utf8))
        let refused = try await CLI.run(["download", Self.ref, "--range", "5-9", "--api", "127.0.0.1:\(wrong.port)"])
        #expect(refused.status == 3)
        #expect(refused.stderr.contains("asked for bytes from 5, the API sent 'bytes 0-4/100'"))
        #expect(refused.stdout.isEmpty)
    }

    @Test func anOutputThatCannotBeWrittenExits4() async throws {
        let server = try RawServer(response: Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".utf8))
        let output = try await CLI.run(["download", Self.ref, "-o", "/nonexistent-directory/out", "--api", "127.0.0.1:\(server.port)"])
        #expect(output.status == 4)
        #expect(output.stderr.hasPrefix("shoal: cannot create /nonexistent-directory/.out.shoal-"))
    }
}
