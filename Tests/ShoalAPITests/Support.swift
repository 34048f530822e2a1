import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import ShoalAPI
import ShoalCore
import ShoalNode
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
