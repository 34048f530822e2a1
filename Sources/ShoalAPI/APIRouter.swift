import HTTPTypes
import Hummingbird
import Logging
import ShoalCore
import ShoalNode
import ShoalStore

/// The request context of the API. Its `maxUploadSize` bounds anything a handler decodes to
/// one serialized chunk, so no request can make the API buffer more than that.
public struct APIRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }

    public var maxUploadSize: Int { Chunk.serializedMax }
}

/// What `POST /chunks` answers.
public struct UploadResponse: Codable, Sendable, Equatable {
    /// 64 lowercase hex digits: SHA-256(span ‖ payload), computed by the node.
    public var address: String
    /// The bin of the local store the chunk is in (its proximity to the node's overlay, 0…31).
    public var bin: Int
    /// The chunk's bin ID in that bin. Null only if the chunk was already stored and was
    /// evicted (capacity) between the upload and the lookup.
    public var binID: UInt64?
    /// True when the store already held the chunk (status 200 instead of 201).
    public var duplicate: Bool
    /// How the push toward the chunk's neighbourhood ended; absent when the upload asked for
    /// none (`Shoal-Push: false`, `?push=false`).
    public var push: PushReport?

    public init(address: String, bin: Int, binID: UInt64?, duplicate: Bool, push: PushReport? = nil) {
        self.address = address
        self.bin = bin
        self.binID = binID
        self.duplicate = duplicate
        self.push = push
    }
}

/// How an upload's push ended: a receipt, checked (its signature holds, and its key makes
/// `storer`), or why none came. A failed push loses nothing: the chunk is stored on this node
/// either way, and pull sync carries it on.
public struct PushReport: Codable, Sendable, Equatable {
    /// The overlay of the node that stored the chunk and signed the receipt (64 hex digits).
    public var storer: String?
    /// The storer's proximity to the chunk's address (0…256): how far into the chunk's
    /// neighbourhood it lies.
    public var proximity: Int?
    /// True when this node is the storer (it lies in the chunk's neighbourhood, or no peer is
    /// closer to the address).
    public var thisNode: Bool?
    /// The receipt itself, for anyone to check later: the storer's Ed25519 public key and its
    /// signature over `Receipt.signedBytes` (Docs/Protocol.md §12), hex.
    public var publicKey: String?
    public var signature: String?
    /// Why no receipt came.
    public var error: String?

    public init(_ result: Result<PushReceipt, PushFailure>, address: ChunkAddress, node: OverlayAddress) {
        switch result {
        case .success(let receipt):
            storer = receipt.storer.hex
            proximity = receipt.storer.proximity(to: address)
            thisNode = receipt.storer == node
            publicKey = receipt.receipt.publicKey.hexEncoded
            signature = receipt.receipt.signature.hexEncoded
        case .failure(let failure):
            error = "\(failure)"
        }
    }
}

/// The HTTP API over a node:
///
/// | method and path | answer |
/// |---|---|
/// | `POST /chunks` | body span ‖ payload; 201 (stored) or 200 (already stored) with `UploadResponse` |
/// | `GET /chunks/{address}` | 200 with span ‖ payload (`application/octet-stream`) from the store or, on a miss, the network (`Shoal-Local: true` or `?local=true`: the store only); 404 when absent |
/// | `GET /status` | `NodeStatus` |
/// | `GET /peers` | `[PeerStatus]` |
/// | `GET /topology`, `POST /peers`, `DELETE /peers/{overlay}` | the table, dialling, disconnecting (`addPeerRoutes`) |
/// | `POST /downloads`, `GET /downloads`, `GET /downloads/{id}`, `DELETE /downloads/{id}` | the downloader (`addDownloadRoutes`) |
/// | `GET /health` | 200 `{"status": "ok", "version"}` while the process answers |
/// | `GET /readiness` | 200 `{"status": "ready"}` once the node serves, else 503 |
/// | files, pins, stewardship, tags | `addFileRoutes` (`Docs/API.md`) |
/// | `GET /metrics` | Prometheus text of `metrics` (one `ShoalMetrics` per router unless given) |
/// | `GET /` | the status page (`StatusPage`) |
///
/// Every error is JSON `{"error": {"code", "message"}}` (`APIError`); served by
/// `makeAPIApplication`, so are the answers to requests that never reach this router (the HTTP
/// parser refuses them, or they are `CONNECT`: `MalformedRequestHandler`). `HEAD` works
/// wherever `GET` does.
///
/// Requests are logged at `debug` (`GET /status 200 0.4 ms`), failures with a 5xx at `error`,
/// both through `log`, which keeps a flood of them to a few lines and a summary. Without one,
/// a log of its own is made (its summaries then come as further lines arrive).
public func makeRouter(node: some NodeAPIBacking, log: ThrottledLog? = nil, metrics: ShoalMetrics? = nil,
                       tags: UploadTags? = nil, peerLimits: PeerRouteLimits = PeerRouteLimits()) -> Router<APIRequestContext> {
    let tags = tags ?? UploadTags(nowMs: { Store.wallClockMs() })
    let log = log ?? ThrottledLog(logger: Logger(label: "shoal.api"))
    let metrics = metrics ?? ShoalMetrics()
    let router = Router(context: APIRequestContext.self, options: .autoGenerateHeadEndpoints)
    // First, so that they wrap every route and the router's own "not found".
    router.add(middleware: APIMetricsMiddleware(metrics: metrics))
    router.add(middleware: APIAccessLogMiddleware(log: log))
    router.add(middleware: APIErrorMiddleware(log: log))

    router.post("/chunks") { request, context in
        try await uploadChunk(request, context: context, node: node)
    }
    router.get("/chunks/:address") { request, context in
        try await getChunk(request, context: context, node: node)
    }
    router.get("/status") { _, _ in
        try JSONBody.response(try node.status(), status: .ok)
    }
    router.get("/peers") { _, _ in
        try JSONBody.response(await node.peers(), status: .ok)
    }
    router.get("/health") { _, _ in
        try JSONBody.response(["status": "ok", "version": ShoalVersion.current], status: .ok)
    }
    router.get("/readiness") { _, _ in
        // Ready once the store is open (it is, or there would be no node) and the listener is bound.
        guard node.isReady else {
            return try JSONBody.response(["status": "notReady", "reason": "the peer listener is not bound yet, or the node is stopping"],
                                         status: .serviceUnavailable, headers: [.retryAfter: "1"])
        }
        return try JSONBody.response(["status": "ready"], status: .ok)
    }
    addPeerRoutes(to: router, node: node, limits: peerLimits)
    addDownloadRoutes(to: router, node: node)
    addFileRoutes(to: router, node: node, tags: tags, metrics: metrics)
    addMonitoringRoutes(to: router, node: node, metrics: metrics)
    return router
}

private func uploadChunk(_ request: Request, context: APIRequestContext, node: some NodeAPIBacking) async throws -> Response {
    // Refuse a declared oversize body before reading any of it; a body without a length (or
    // lying about it) is cut off by `collect(upTo:)`.
    if let declared = request.headers[.contentLength].flatMap({ Int($0) }), declared > Chunk.serializedMax {
        throw APIError(.contentTooLarge, .chunkTooLarge,
                       "request body is \(declared) bytes; a chunk is at most \(Chunk.serializedMax) (span 8 + payload 4096)")
    }
    let body = try await request.body.collect(upTo: Chunk.serializedMax)
    let chunk: Chunk
    do {
        chunk = try Chunk(serialized: body.readableBytesView)
    } catch {
        throw APIError(.badRequest, .invalidChunk, error.description)
    }

    let push = try pushRequested(request)
    // Durable before we answer: `upload` returns after the commit, and only then is it pushed.
    let result = try await node.upload(chunk)
    let address = chunk.address.hex
    let report = push ? PushReport(await node.push(chunk), address: chunk.address, node: node.overlay) : nil
    if let stored = result.stored.first(where: { $0.address == chunk.address }) {
        return try JSONBody.response(
            UploadResponse(address: address, bin: Int(stored.bin), binID: stored.binID, duplicate: false, push: report),
            status: .created, headers: [.location: "/chunks/\(address)"])
    }
    let location = try node.storedLocation(chunk.address)
    let bin = location?.bin ?? Proximity.bin(of: chunk.address, relativeTo: node.overlay)
    return try JSONBody.response(
        UploadResponse(address: address, bin: bin, binID: location?.binID, duplicate: true, push: report),
        status: .ok, headers: [.location: "/chunks/\(address)"])
}

/// Whether an upload is pushed to its neighbourhood: yes, unless `Shoal-Push: false` or
/// `?push=false` (a node whose peers will pull it, or a test).
func pushRequested(_ request: Request) throws -> Bool {
    if let value = request.uri.queryParameters.get("push") {
        guard let push = Bool(flag: value) else {
            throw APIError(.badRequest, .badRequest, "push: '\(value.prefix(40))' is not true or false")
        }
        if !push { return false }
    }
    guard let value = FileHeaders.value(request, FileHeaders.push) else { return true }
    guard let push = Bool(flag: value) else {
        throw APIError(.badRequest, .invalidHeader, "\(FileHeaders.push): '\(value.prefix(40))' is not true or false")
    }
    return push
}

extension Bool {
    /// true, 1, yes / false, 0, no (any case); nil for anything else.
    init?(flag: String) {
        switch flag.lowercased() {
        case "true", "1", "yes": self = true
        case "false", "0", "no": self = false
        default: return nil
        }
    }
}

/// The local store first; on a miss the network (retrieval), unless `Shoal-Local: true`,
/// `?local=true` or `HEAD` keeps the request on this node. `Shoal-Source` says where the
/// chunk came from.
private func getChunk(_ request: Request, context: APIRequestContext, node: some NodeAPIBacking) async throws -> Response {
    let text = context.parameters.get("address") ?? ""
    guard let address = ChunkAddress(hex: text) else {
        throw APIError(.badRequest, .invalidAddress, "chunk address must be 64 hex digits, got \(text.utf8.count) characters")
    }
    // HEAD asks whether the chunk is stored here: never the network.
    let local = try request.method == .head || localOnly(request)
    let chunk: Chunk
    let source: String
    if let stored = try node.chunk(address) {
        (chunk, source) = (stored, "local")
    } else if local {
        throw APIError(.notFound, .notFound, "chunk \(address.hex) is not in the local store (the network was not asked: local only)")
    } else {
        switch try await node.retrieve(address) {
        case .success(let retrieved):
            (chunk, source) = (retrieved, "network")
        case .failure(.overloaded):
            throw APIError(.serviceUnavailable, .unavailable, "chunk \(address.hex) is not in the local store, and too many retrievals are open to ask the network now")
        case .failure(let failure):
            throw APIError(.notFound, .notFound, "chunk \(address.hex) is not in the local store, nor found on the network: \(failure)")
        }
    }
    let bytes = chunk.serialized
    var buffer = ByteBufferAllocator().buffer(capacity: bytes.count)
    buffer.writeBytes(bytes)
    return Response(status: .ok, headers: [.contentType: "application/octet-stream", HTTPField.Name(FileHeaders.source)!: source],
                    body: ResponseBody(byteBuffer: buffer))
}
