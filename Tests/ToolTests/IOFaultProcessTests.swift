import Foundation
import ShoalCore
import ShoalTestSupport
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A real `shoal start` whose disk fails a sync (`SHOAL_FAILPOINTS`): the upload that hit it
/// gets a 5xx JSON error, later uploads are refused the same way, reads go on, and after a
/// restart the store holds what was acknowledged and verifies clean.
@Suite(.serialized) struct IOFaultProcessTests {
    @Test(.timeLimit(.minutes(3)))
    func aNodeWhoseSyncFailsRefusesUploadsAndKeepsServingReads() async throws {
        let dir = try TemporaryDirectory("io-fault-node")
        let data = dir.sub("node")
        var factory = SeededChunks(seed: 41)
        let (first, second, third) = (factory.chunk(), factory.chunk(size: 900), factory.chunk(size: 10))

        // The first payload sync passes, the second fails with EIO.
        let node = try BackgroundProcess("shoal", ["start", "--data-dir", data, "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0",
                                                   "--log-level", "warning"],
                                         environment: ["SHOAL_FAILPOINTS": "fdatasync:1:EIO"])
        defer { node.kill() }
        try await node.waitForStandardOutput(containing: "shoal: listening on ")
        let api = try #require(apiPort(node.standardOutput))
        #expect(node.standardError.contains("SHOAL_FAILPOINTS=fdatasync:1:EIO"), "a node with failpoints says so")

        #expect(try await http(api, "POST", "/chunks", first.serialized).status == 201)
        let failed = try await http(api, "POST", "/chunks", second.serialized)
        #expect(failed.status == 500)
        let error = try JSONDecoder().decode(ErrorBody.self, from: failed.body)
        #expect(error.error.code == "storeError")
        #expect(error.error.message.contains("writerFailed"), "\(error.error.message)")
        #expect(error.error.message.contains("fdatasync"), "names the failed call: \(error.error.message)")

        let refused = try await http(api, "POST", "/chunks", third.serialized)
        #expect(refused.status == 500, "writes stay stopped")
        #expect(String(decoding: refused.body, as: UTF8.self).contains("writerFailed"))
        let read = try await http(api, "GET", "/chunks/\(first.address.hex)")
        #expect(read.status == 200)
        #expect(Array(read.body) == first.serialized)
        #expect(try await http(api, "GET", "/chunks/\(second.address.hex)").status == 404)

        node.signal(SIGTERM)
        try await node.waitForExit()

        let verify = try await Tools.run("lmdb-inspect", ["verify", data], timeoutSeconds: 60)
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        let summary = try await Tools.run("lmdb-inspect", ["chunk", data, second.address.hex], timeoutSeconds: 60)
        #expect(summary.status == 1, "the refused chunk is absent after the restart")

        // Restarted without the fault, the node writes again.
        let again = try BackgroundProcess("shoal", ["start", "--data-dir", data, "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0",
                                                    "--log-level", "warning"])
        defer { again.kill() }
        try await again.waitForStandardOutput(containing: "shoal: listening on ")
        let port = try #require(apiPort(again.standardOutput))
        #expect(try await http(port, "GET", "/chunks/\(first.address.hex)").status == 200)
        #expect(try await http(port, "POST", "/chunks", second.serialized).status == 201)
        again.signal(SIGTERM)
        try await again.waitForExit()
    }

    struct ErrorBody: Decodable {
        struct Detail: Decodable { var code: String; var message: String }
        var error: Detail
    }

    private func apiPort(_ output: String) -> Int? {
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("shoal: listening on ") }) else { return nil }
        let parts = line.dropFirst("shoal: listening on ".count).split(separator: ",")
        guard parts.count > 1 else { return nil }
        return Int(parts[1].split(separator: ":").last ?? "")
    }

    private func http(_ port: Int, _ method: String, _ path: String, _ body: [UInt8]? = nil) async throws -> (status: Int, body: Data) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        request.httpBody = body.map { Data($0) }
        request.timeoutInterval = 10
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
    }
}

extension BackgroundProcess {
    func signal(_ signal: Int32) { Glibc.kill(pid, signal) }
}
