import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
@testable import ShoalAPI
import ShoalCore
import ShoalFiles
import ShoalNode
import ShoalTestSupport
import Testing

/// `POST /downloads` with a file's root: the node reads the tree, downloads every chunk of it,
/// and can then serve the file from its own store.
struct FileDownloadAPITests {
    static let medium: HTTPFields = [HTTPField.Name(FileHeaders.redundancyLevel)!: "medium"]

    /// A node running on 127.0.0.1 (`configure` may change it), for the length of `body`.
    static func withNode<R>(peers: [String] = [], configure: (inout NodeConfiguration) -> Void = { _ in },
                            _ body: (Node, String) async throws -> R) async throws -> R {
        let directory = try TemporaryDirectory("shoal-api-files")
        var configuration = NodeConfiguration(dataDirectory: directory.path)
        configuration.listenHost = "127.0.0.1"
        configuration.listenPort = 0
        configuration.peers = peers
        configuration.redialDelayMin = .milliseconds(100)
        configuration.redialDelayMax = .seconds(1)
        configuration.drainTimeout = .seconds(2)
        configure(&configuration)
        var logger = Logger(label: "shoal.api.test.files")
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

    /// Polls `GET /downloads/{id}` until the download is no longer running.
    static func ended(_ id: String, _ client: any TestClientProtocol) async throws -> DownloadView {
        var view = try decode(DownloadView.self, try await client.get("/downloads/\(id)"))
        let deadline = ContinuousClock.now + .seconds(60)
        while view.state == "running" && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            view = try decode(DownloadView.self, try await client.get("/downloads/\(id)"))
        }
        return view
    }

    @Test("a file uploaded to one node is downloaded whole by another from its root, and then served locally",
          arguments: [false, true])
    func aFileRootDownloadsEveryChunk(parity: Bool) async throws {
        // 300 leaves at medium: a root over three intermediates, each with parity.
        let bytes = seededBytes(300 * 4096 + 99, seed: 61)
        try await Self.withNode { holder, holderAddress in
            let (reference, data, all) = try await withAPI(holder) { client in
                let reference = try await client.storeFile(bytes, headers: Self.medium)
                let root = try #require(ChunkAddress(hex: reference))
                let source = NodeChunkSource(node: holder, local: true, wait: nil)
                let data = try await FileTreeAddresses.collect(root: root, source: source, chunksMax: 1000)
                let all = try await FileTreeAddresses.collect(root: root, source: source, including: .dataAndParity, chunksMax: 1000)
                return (reference, data, all)
            }
            #expect(all.count > data.count)
            // A light node: pull sync would bring it the chunks without the download.
            try await Self.withNode(peers: [holderAddress], configure: { $0.pullSync = false }) { getter, _ in
                try await eventually("the getter is connected", within: TestTimeouts.listening) { await !getter.peers().isEmpty }
                try await withAPI(getter) { client in
                    let body = parity ? #"{"root": "\#(reference)", "parity": true}"# : #"{"root": "\#(reference)"}"#
                    let posted = try await DownloadAPITests.post(client, body)
                    #expect(posted.status == .created, "\(String(decoding: posted.body.bytes, as: UTF8.self))")
                    let started = try decode(DownloadView.self, posted)
                    #expect(started.root == reference)
                    #expect(started.state == "completed" || started.total == (parity ? all : data).count)
                    let view = try await Self.ended(started.id, client)
                    #expect(view.state == "completed" && view.root == reference)
                    let listed = try decode([DownloadView].self, try await client.get("/downloads"))
                    #expect(listed.first { $0.id == started.id }?.root == reference)

                    let stored = try getter.readStore { r in try all.filter { try r.has($0) } }
                    #expect(Set(stored) == Set(parity ? all : data), "the download names the data, and parity when asked")
                    let local = try await client.get("/bytes/\(reference)?local=true")
                    #expect(local.status == .ok)
                    #expect(local.body.bytes == bytes)
                }
            }
        }
    }

    @Test("a root nobody has is 404; a chunk that is not a file's root is 422")
    func unreadableRoots() async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                let unknown = String(repeating: "0", count: 63) + "1"
                let missing = try await DownloadAPITests.post(client, #"{"root": "\#(unknown)"}"#)
                try expectError(missing, .notFound, .notFound)
                #expect(String(decoding: missing.body.bytes, as: UTF8.self).contains("neither in this store nor found on the network"))
                // Span 8192 with 100 payload bytes: a chunk, not a node of any tree.
                let liar = try Chunk(span: 8192, payload: [UInt8](repeating: 1, count: 100))
                _ = try await client.upload(liar)
                try expectError(try await DownloadAPITests.post(client, #"{"root": "\#(liar.address.hex)"}"#), .unprocessableContent, .invalidTree)
                #expect(try decode([DownloadView].self, try await client.get("/downloads")).isEmpty)
            }
        }
    }

    @Test("a stored file downloads at once, and says its root")
    func aStoredFileIsCompleteAtOnce() async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                let reference = try await client.storeFile(seededBytes(200 * 4096, seed: 62))
                let view = try decode(DownloadView.self, try await DownloadAPITests.post(client, #"{"root": "\#(reference)", "policy": "onRead"}"#))
                #expect(view.state == "completed" && view.root == reference)
                #expect(try decode(DownloadView.self, try await client.get("/downloads/\(view.id)")).root == reference)
            }
        }
    }

    @Test("a file with more chunks than one download may name is refused with 413, naming the limit")
    func aFileTooLargeForOneDownloadIs413() async throws {
        try await Self.withNode(configure: { $0.downloads.chunksPerDownloadMax = 100 }) { node, _ in
            try await withAPI(node) { client in
                let reference = try await client.storeFile(seededBytes(200 * 4096, seed: 63))
                let response = try await DownloadAPITests.post(client, #"{"root": "\#(reference)"}"#)
                try expectError(response, .contentTooLarge, .badRequest)
                #expect(String(decoding: response.body.bytes, as: UTF8.self).contains("more than 100 distinct chunks; a download names at most 100"))
            }
        }
    }

    @Test(arguments: [
        (#"{"root": "abc"}"#, "root is not a file reference of 64 hex digits", APIError.Code.invalidReference),
        (#"{"root": "\#(String(repeating: "ab", count: 32))", "addresses": ["\#(String(repeating: "ab", count: 32))"]}"#,
         "both addresses and root", .badRequest),
        (#"{"policy": "onRead"}"#, "no addresses and no root", .badRequest),
        (#"{"addresses": ["\#(String(repeating: "ab", count: 32))"], "parity": true}"#, "parity goes with root", .badRequest),
    ])
    func aMalformedRootRequestIsA400ThatSaysWhy(body: String, message: String, code: APIError.Code) async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                let response = try await DownloadAPITests.post(client, body)
                try expectError(response, .badRequest, code)
                #expect(String(decoding: response.body.bytes, as: UTF8.self).contains(message), "\(body)")
            }
        }
    }
}
