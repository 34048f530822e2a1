import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import ShoalAPI
import ShoalCore
import ShoalFiles
import ShoalNode
import ShoalStore
import ShoalTestSupport
import Testing

/// A real node on a fresh temporary data directory (`listenPort: 0`, no peers), not running:
/// uploads, reads and status work without `run()`. Closed and removed at the end.
func withTestNode<R>(capacityChunks: UInt64? = nil, _ body: (Node) async throws -> R) async throws -> R {
    let directory = try TemporaryDirectory("shoal-api")
    var configuration = NodeConfiguration(dataDirectory: directory.path)
    configuration.listenPort = 0
    configuration.peers = []
    configuration.capacityChunks = capacityChunks
    var logger = Logger(label: "shoal.test")
    logger.logLevel = .warning
    let node = try Node(configuration: configuration, logger: logger)
    defer {
        node.close()
        directory.remove()
    }
    return try await body(node)
}

/// The API over `node`, driven through Hummingbird's router test client.
func withAPI<R>(_ node: Node, _ body: @Sendable (any TestClientProtocol) async throws -> R) async throws -> R {
    var logger = Logger(label: "shoal.api.test")
    logger.logLevel = .critical
    let app = Application(router: makeRouter(node: node), logger: logger)
    return try await app.test(.router, body)
}

extension ByteBuffer {
    init(bytes: [UInt8]) {
        self = ByteBufferAllocator().buffer(capacity: bytes.count)
        writeBytes(bytes)
    }

    var bytes: [UInt8] { Array(readableBytesView) }
}

extension TestClientProtocol {
    func upload(_ bytes: [UInt8]) async throws -> TestResponse {
        try await execute(uri: "/chunks", method: .post, body: ByteBuffer(bytes: bytes))
    }

    func upload(_ chunk: Chunk) async throws -> TestResponse {
        try await upload(chunk.serialized)
    }

    func get(_ uri: String) async throws -> TestResponse {
        try await execute(uri: uri, method: .get)
    }
}

func decode<T: Decodable>(_ type: T.Type, _ response: TestResponse, sourceLocation: SourceLocation = #_sourceLocation) throws -> T {
    do {
        return try JSONDecoder().decode(T.self, from: Data(response.body.bytes))
    } catch {
        Issue.record("cannot decode \(T.self) from \(String(decoding: response.body.bytes, as: UTF8.self)): \(error)",
                     sourceLocation: sourceLocation)
        throw error
    }
}

/// Checks that `response` is an error with `status`, the JSON error shape and `code`.
func expectError(_ response: TestResponse, _ status: HTTPResponse.Status, _ code: APIError.Code,
                 sourceLocation: SourceLocation = #_sourceLocation) throws {
    #expect(response.status == status, sourceLocation: sourceLocation)
    #expect(response.headers[.contentType]?.hasPrefix("application/json") == true, sourceLocation: sourceLocation)
    let body = try decode(APIError.Body.self, response, sourceLocation: sourceLocation)
    #expect(body.error.code == code.rawValue, sourceLocation: sourceLocation)
    #expect(!body.error.message.isEmpty, sourceLocation: sourceLocation)
}

extension TopologyStatus {
    /// No peer known, depth and radius 0 (the type has no public initializer; it is the API's
    /// answer, so it is made from JSON, as a client would).
    static var empty: TopologyStatus {
        let bins = (0..<Proximity.binCount).map { #"{"bin":\#($0),"known":0,"connected":0,"saturated":false}"# }
        let json = #"{"depth":0,"radius":0,"connected":0,"known":0,"dialling":0,"bins":[\#(bins.joined(separator: ","))],"peers":[],"pullSync":true}"#
        return try! JSONDecoder().decode(TopologyStatus.self, from: Data(json.utf8))
    }
}

/// A node whose store fails every call with `StoreError(.system, failure)`: `/status` is a 500,
/// `/peers` and `/topology` are empty, and `POST /peers` runs `dial`.
struct FailingNode: NodeAPIBacking {
    var failure: String
    var isReady = false
    var dial: @Sendable (String) async throws -> PeerInfo = { _ in throw StoreError(.system, "no dialling") }

    var overlay: OverlayAddress { OverlayAddress(bytes: [UInt8](repeating: 7, count: 32))! }
    func upload(_ chunk: Chunk) async throws -> BatchResult { throw StoreError(.system, failure) }
    func push(_ chunk: Chunk) async -> Result<PushReceipt, PushFailure> { .failure(.notReceipted(tried: 0)) }
    func chunk(_ address: ChunkAddress) throws -> Chunk? { throw StoreError(.system, failure) }
    func retrieve(_ address: ChunkAddress) async throws -> Result<Chunk, RetrievalFailure> { throw StoreError(.system, failure) }
    func storedLocation(_ address: ChunkAddress) throws -> ChunkLocation? { throw StoreError(.system, failure) }
    func status() throws -> NodeStatus { throw StoreError(.system, failure) }
    func peers() async -> [PeerStatus] { [] }
    func apply(_ batch: StoreBatch) async throws -> BatchResult { throw StoreError(.system, failure) }
    func waitForChunk(_ address: ChunkAddress, timeout: Duration) async -> Bool { false }
    func readStore<R>(_ body: (StoreReader) throws -> R) throws -> R { throw StoreError(.system, failure) }
    func topology() async -> TopologyStatus { .empty }
    func connect(_ address: String) async throws -> PeerInfo { try await dial(address) }
    func disconnect(_ overlay: OverlayAddress) async -> Bool { false }
    func startDownload(_ addresses: [ChunkAddress], policy: DownloadPolicy, hints: [OverlayAddress]) async throws -> DownloadReport {
        throw StoreError(.system, failure)
    }
    func startFileDownload(root: ChunkAddress, including: TreeChunks, policy: DownloadPolicy,
                           hints: [OverlayAddress]) async throws -> DownloadReport {
        throw StoreError(.system, failure)
    }
    func fileRoot(of id: DownloadID) -> ChunkAddress? { nil }
    func download(_ id: DownloadID) async -> DownloadReport? { nil }
    func downloadList() async -> [DownloadReport] { [] }
    func cancelDownload(_ id: DownloadID) async -> Bool { false }
}
