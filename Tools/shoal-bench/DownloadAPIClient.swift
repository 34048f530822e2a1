import Foundation
import ShoalCore
import ShoalNode
import ShoalStore

#if canImport(Glibc)
import Glibc
#endif

/// The download routes of a node's HTTP API (`POST /downloads`, `GET /downloads/{id}`,
/// `GET /downloads`) over a plain socket, one request per connection.
enum DownloadAPIClient {
    /// Seconds one `send` or `recv` may block.
    static let ioTimeoutSeconds = 30

    /// A download as the API shows it (`DownloadView`): the fields the benches read.
    struct View {
        var id: String
        /// `running`, `completed`, `failed` or `cancelled`.
        var state: String
        /// While it runs.
        var done: Int?
        var failed: Int?
        var total: Int?
        var missingCount: Int?

        init(json: [String: Any]) throws {
            guard let id = json["id"] as? String, let state = json["state"] as? String else {
                throw BenchError("not a download: \(json)")
            }
            (self.id, self.state) = (id, state)
            done = json["done"] as? Int
            failed = json["failed"] as? Int
            total = json["total"] as? Int
            missingCount = json["missingCount"] as? Int
        }
    }

    /// `POST /downloads` with every address (at most `DownloadLimits().chunksPerDownloadMax`);
    /// the download as the node answered it (201).
    static func start(port: Int, addresses: [ChunkAddress], deadline: Double) throws -> View {
        var body = "{\"addresses\":["
        body.reserveCapacity(addresses.count * 67 + 32)
        for (i, address) in addresses.enumerated() {
            if i > 0 { body += "," }
            body += "\"" + address.hex + "\""
        }
        body += "],\"policy\":\"eagerPin\"}"
        let bytes = Array(body.utf8)
        let (status, answer) = try exchange(port: port, "POST", "/downloads", body: bytes, deadline: deadline)
        guard status == 201 else {
            throw BenchError("POST /downloads (\(addresses.count) addresses): status \(status): \(String(decoding: answer.prefix(500), as: UTF8.self))")
        }
        return try View(json: object(answer, "POST /downloads"))
    }

    /// `GET /downloads/{id}`; nil on 404 (no such download running, or ended since the node started).
    static func status(port: Int, id: String, deadline: Double) throws -> View? {
        let (status, answer) = try exchange(port: port, "GET", "/downloads/\(id)", body: nil, deadline: deadline)
        if status == 404 { return nil }
        guard status == 200 else {
            throw BenchError("GET /downloads/\(id.prefix(16))…: status \(status): \(String(decoding: answer.prefix(500), as: UTF8.self))")
        }
        return try View(json: object(answer, "GET /downloads/{id}"))
    }

    /// `GET /downloads`: the running downloads, then those that ended since the node started.
    static func list(port: Int, deadline: Double) throws -> [View] {
        let (status, answer) = try exchange(port: port, "GET", "/downloads", body: nil, deadline: deadline)
        guard status == 200 else { throw BenchError("GET /downloads: status \(status)") }
        guard let array = try JSONSerialization.jsonObject(with: Data(answer)) as? [[String: Any]] else {
            throw BenchError("GET /downloads: not a JSON array")
        }
        return try array.map(View.init(json:))
    }

    private static func exchange(port: Int, _ method: String, _ path: String, body: [UInt8]?,
                                 deadline: Double) throws -> (Int, [UInt8]) {
        let exchange = try HTTPExchange(port: port, ioTimeoutSeconds: ioTimeoutSeconds)
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        try exchange.send(head + "\r\n")
        if let body { try body.withUnsafeBytes { try exchange.send($0) } }
        let response = try exchange.readHead(deadline: deadline)
        return (response.status, try exchange.readSmallBody(response, deadline: deadline))
    }

    private static func object(_ bytes: [UInt8], _ what: String) throws -> [String: Any] {
        guard let json = try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
            throw BenchError("\(what): not a JSON object: \(String(decoding: bytes.prefix(300), as: UTF8.self))")
        }
        return json
    }
}

/// Fills several nodes' data directories (identity and store) with the same random chunks
/// before they start, each batch made and hashed once; returns the chunks' addresses in the
/// order made.
func fillNodes(dataDirectories: [String], chunks: Int, seed: UInt64) throws -> [ChunkAddress] {
    var stores: [Store] = []
    defer { for store in stores { store.close() } }
    for directory in dataDirectories {
        try Files.makeDirectory(directory)
        let identity = try NodeIdentity.loadOrCreate(directory: directory, networkID: 7)
        stores.append(try Store(directory: directory + "/store", options: Store.Options(overlay: identity.overlay)))
    }
    var rng = SplitMix64(seed: seed)
    var addresses: [ChunkAddress] = []
    addresses.reserveCapacity(chunks)
    while addresses.count < chunks {
        let batch = try (0..<min(2000, chunks - addresses.count)).map { _ in try Chunk(payload: rng.bytes(Chunk.payloadMax)) }
        for store in stores { try store.apply(StoreBatch(chunks: batch)) }
        addresses += batch.map(\.address)
    }
    return addresses
}
