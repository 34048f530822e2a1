import Foundation
import ShoalCore
import ShoalTestSupport
import Testing

/// `shoal start` as a real process: the ready line, the API, SIGTERM, exit status, restart.
///
/// Runs when the `shoal` executable has been built beside the test bundle (`swift build
/// --build-tests` builds it; `ShoalAPITests` does not depend on it, so a filtered build may not).
@Suite(.enabled(if: ShoalProcess.binaryExists, "the shoal executable is not built beside the tests"))
struct DaemonProcessTests {
    @Test func aStartedNodeAnnouncesItsPortsServesTheAPIAndStopsCleanlyOnSIGTERM() async throws {
        let directory = try TemporaryDirectory("shoal-daemon")
        var source = SeededChunks(seed: 30)
        let chunk = source.chunk(size: 777)

        let first = try ShoalProcess.start(["--data-dir", directory.path + "/node", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
        let ready = try await first.readyLine()
        #expect(ready.hasPrefix("shoal: listening on 127.0.0.1:"))
        let api = try #require(ShoalProcess.apiPort(in: ready))
        let posted = try await RawHTTP.post(port: api, path: "/chunks", chunkedBody: chunk.serialized)
        #expect(posted.status == 201)
        let status = try await RawHTTP.get(port: api, path: "/status")
        #expect(String(decoding: status.body, as: UTF8.self).contains(#""chunks":1"#))

        // A second node on the same data directory is refused while the first runs.
        let second = try ShoalProcess.start(["--data-dir", directory.path + "/node", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
        #expect(try await second.exitStatus() == 1)
        #expect(second.standardError.contains("in use by another shoal process"))

        first.signal(SIGTERM)
        #expect(try await first.exitStatus() == 0)
        #expect(first.standardOutput.split(separator: "\n").count == 1, "stdout holds the ready line only")

        // After a restart the acknowledged chunk is there, byte for byte.
        let again = try ShoalProcess.start(["--data-dir", directory.path + "/node", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
        let readyAgain = try await again.readyLine()
        #expect(readyAgain.hasSuffix(String(ready.suffix(64))), "same overlay after a restart")
        let got = try await RawHTTP.get(port: try #require(ShoalProcess.apiPort(in: readyAgain)), path: "/chunks/\(chunk.address.hex)")
        #expect(got.status == 200)
        #expect(got.body == chunk.serialized)
        again.signal(SIGINT)
        #expect(try await again.exitStatus() == 0)
    }

    @Test func aBadFlagIsAUsageErrorWithStatus64() async throws {
        let process = try ShoalProcess.start(["--listen", "nowhere"])
        #expect(try await process.exitStatus() == 64)
        #expect(process.standardError.contains("--listen"))
    }

    @Test func aBadConfigFileLineIsAConfigurationErrorNamingTheLine() async throws {
        let directory = try TemporaryDirectory("shoal-daemon")
        let file = directory.path + "/shoal.conf"
        try "# test\nlisten = 127.0.0.1:0\nnetwork-id = many\n".write(toFile: file, atomically: true, encoding: .utf8)
        let process = try ShoalProcess.start(["--config", file, "--data-dir", directory.path + "/node"])
        #expect(try await process.exitStatus() == 64)
        #expect(process.standardError.contains("shoal.conf:3 (network-id)"))
    }
}

/// One `shoal start` process with its output collected.
final class ShoalProcess: @unchecked Sendable {
    /// Waits are bounded by these.
    static let readyWaitMax: Duration = .seconds(60)
    static let exitWaitMax: Duration = .seconds(60)

    static var binaryPath: String {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var directory = exe.deletingLastPathComponent()
        while directory.path != "/" {
            let candidate = directory.appendingPathComponent("shoal").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        return "/nonexistent/shoal"
    }

    static var binaryExists: Bool { FileManager.default.isExecutableFile(atPath: binaryPath) }

    private let process = Process()
    private let lock = NSLock()
    private var out = Data()
    private var err = Data()
    /// Pipes that reached end of file (both: every byte the process wrote has been read).
    private var pipesClosed = 0

    static func start(_ arguments: [String]) throws -> ShoalProcess {
        let shoal = ShoalProcess()
        try shoal.launch(["start"] + arguments)
        return shoal
    }

    private func launch(_ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: ShoalProcess.binaryPath)
        process.arguments = arguments
        // A clean environment: no SHOAL_* from the developer's shell.
        process.environment = ["PATH": "/usr/bin:/bin"]
        let outPipe = Pipe(), errPipe = Pipe()
        process.standardOutput = outPipe
        process.standardError = errPipe
        outPipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            self?.take(handle.availableData, from: handle, stdout: true)
        }
        errPipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            self?.take(handle.availableData, from: handle, stdout: false)
        }
        try process.run()
    }

    private func take(_ data: Data, from handle: FileHandle, stdout: Bool) {
        guard !data.isEmpty else {
            handle.readabilityHandler = nil
            lock.withLock { pipesClosed += 1 }
            return
        }
        lock.withLock {
            if stdout { out.append(data) } else { err.append(data) }
        }
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    var standardOutput: String { lock.withLock { String(decoding: out, as: UTF8.self) } }
    var standardError: String { lock.withLock { String(decoding: err, as: UTF8.self) } }

    func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// The first stdout line, once it is complete.
    func readyLine() async throws -> String {
        let deadline = ContinuousClock.now + ShoalProcess.readyWaitMax
        while ContinuousClock.now < deadline {
            if let line = standardOutput.split(separator: "\n", omittingEmptySubsequences: false).first,
               standardOutput.contains("\n") {
                return String(line)
            }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("no ready line; stderr: \(standardError)")
        throw CancellationError()
    }

    func exitStatus() async throws -> Int32 {
        let deadline = ContinuousClock.now + ShoalProcess.exitWaitMax
        while process.isRunning && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            Issue.record("shoal did not exit within \(ShoalProcess.exitWaitMax); stderr: \(standardError)")
        }
        process.waitUntilExit()
        // Both pipes at end of file: all output is in. A `shoal` started meanwhile by another
        // test may have inherited a pipe's write end and hold it open, so do not wait long:
        // what the process wrote before it exited is in the pipe and read within milliseconds.
        let drained = ContinuousClock.now + .milliseconds(300)
        while lock.withLock({ pipesClosed < 2 }) && ContinuousClock.now < drained {
            try await Task.sleep(for: .milliseconds(10))
        }
        return process.terminationStatus
    }

    /// The API port in "shoal: listening on H:P, API on H:P, overlay X".
    static func apiPort(in readyLine: String) -> Int? {
        guard let range = readyLine.range(of: "API on ") else { return nil }
        let rest = readyLine[range.upperBound...]
        guard let comma = rest.firstIndex(of: ","), let colon = rest[..<comma].lastIndex(of: ":") else { return nil }
        return Int(rest[rest.index(after: colon)..<comma])
    }
}
