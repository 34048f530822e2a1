import Foundation
import ShoalCore
import ShoalTestSupport
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A `shoal start` process on 127.0.0.1 with free ports, stopped with SIGTERM.
final class ShoalDaemon: @unchecked Sendable {
    let process = Process()
    let dataDirectory: String
    private(set) var listen = ""
    private(set) var apiPort = 0
    private let output = Pipe()
    private let errors = Pipe()

    init(dataDirectory: String, peers: [String]) throws {
        self.dataDirectory = dataDirectory
        process.executableURL = URL(fileURLWithPath: Tools.path("shoal"))
        process.arguments = ["start", "--data-dir", dataDirectory, "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0",
                             "--log-level", "warning"] + peers.flatMap { ["--peer", $0] }
        process.standardOutput = output
        process.standardError = errors
        try process.run()
    }

    /// Waits (bounded) for the ready line and reads the bound ports from it.
    func ready() async throws {
        var text = ""
        // Non-blocking reads between sleeps: a blocking read would hold one of the cooperative
        // pool's two threads until the daemon speaks (decision 0009).
        let fd = output.fileHandleForReading.fileDescriptor
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            let data = n > 0 ? Data(buffer[0..<n]) : Data()
            text += String(decoding: data, as: UTF8.self)
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("shoal: listening on ") }) {
                let parts = line.dropFirst("shoal: listening on ".count).split(separator: ",")
                listen = String(parts[0])
                apiPort = Int(parts[1].split(separator: ":").last ?? "") ?? 0
                return
            }
            if data.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
        }
        throw TestFailure("no ready line from shoal: \(text)")
    }

    func http(_ method: String, _ path: String, body: Data? = nil) async throws -> (Int, Data) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(apiPort)\(path)")!)
        request.httpMethod = method
        request.httpBody = body
        request.timeoutInterval = 10
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
    }

    func chunkCount() async throws -> Int {
        let (_, data) = try await http("GET", "/status")
        return (try JSONSerialization.jsonObject(with: data) as? [String: Any])?["chunks"] as? Int ?? -1
    }

    /// SIGTERM and a bounded wait; the exit status.
    func stop() async -> Int32 {
        process.terminate()
        let deadline = ContinuousClock.now + .seconds(30)
        while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return process.terminationStatus
    }
}

@Suite(.serialized) struct NodeProcessTests {
    @Test(.timeLimit(.minutes(3)))
    func chunksPostedToTheFirstOfThreeNodesInALineReachTheLast() async throws {
        let dir = try TemporaryDirectory("line")
        let a = try ShoalDaemon(dataDirectory: dir.sub("a"), peers: [])
        try await a.ready()
        let b = try ShoalDaemon(dataDirectory: dir.sub("b"), peers: [a.listen])
        try await b.ready()
        let c = try ShoalDaemon(dataDirectory: dir.sub("c"), peers: [b.listen])
        try await c.ready()
        var factory = SeededChunks(seed: 21)
        let chunks = factory.chunks(count: 60)
        // Not pushed (`?push=false`): this is pull sync along the line, and its counters below
        // count what sync delivered.
        for chunk in chunks {
            let (status, _) = try await a.http("POST", "/chunks?push=false", body: Data(chunk.serialized))
            #expect(status == 201)
        }
        try await eventually("C holds what was posted to A", within: .seconds(60), pollMs: 50) { (try? await c.chunkCount()) == chunks.count }
        for chunk in chunks.prefix(5) {
            let (status, body) = try await c.http("GET", "/chunks/\(chunk.address.hex)")
            #expect(status == 200)
            #expect(Array(body) == chunk.serialized)
        }
        // Restarted cleanly, C resumes: nothing is fetched again.
        #expect(await c.stop() == 0)
        let c2 = try ShoalDaemon(dataDirectory: dir.sub("c"), peers: [b.listen])
        try await c2.ready()
        let more = factory.chunks(count: 10)
        for chunk in more { _ = try await a.http("POST", "/chunks?push=false", body: Data(chunk.serialized)) }
        try await eventually("C holds the chunks posted after its restart", within: .seconds(60), pollMs: 50) {
            (try? await c2.chunkCount()) == chunks.count + more.count
        }
        let (_, statusData) = try await c2.http("GET", "/status")
        let status = try JSONSerialization.jsonObject(with: statusData) as? [String: Any]
        #expect(status?["chunksReceived"] as? Int == more.count, "after the restart only the new chunks arrive")
        #expect(status?["chunksDuplicate"] as? Int == 0)
        for daemon in [c2, b, a] { #expect(await daemon.stop() == 0) }
        for name in ["a", "b", "c"] {
            let verify = try await Tools.run("lmdb-inspect", ["verify", dir.sub(name)], timeoutSeconds: 60)
            #expect(verify.status == 0, "verify \(name): \(verify.stdout)")
        }
    }

    @Test(.timeLimit(.minutes(5)))
    func aNodeKilledWhileSyncingResumesAndLosesNothing() async throws {
        let dir = try TemporaryDirectory("sync-crash")
        let run = try await Tools.run("shoal-bench", ["sync-crash", "--chunks", "8000", "--cycles", "3", "--seed", "5",
                                                      "--kill-within", "0.2", "--dir", dir.sub("work"),
                                                      "--shoal", Tools.path("shoal")], timeoutSeconds: 280)
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr.suffix(3000))")
        let line = run.stdout.split(separator: "\n").first { $0.hasPrefix("RESULT name=sync-crash") }
        #expect(line?.contains(" lost=0 ") == true)
        #expect(line?.contains(" verify_failures=0 ") == true)
        #expect(line?.contains(" interval_violations=0 ") == true)
    }
}
