import HTTPTypes
import Hummingbird
import NIOCore
import ShoalCore
import ShoalFiles
import ShoalNode
import ShoalStore

/// Header names of the file routes. `Swarm-…` spellings are accepted too, for clients written
/// against Bee.
public enum FileHeaders {
    public static let redundancyLevel = "Shoal-Redundancy-Level"
    public static let pin = "Shoal-Pin"
    public static let tag = "Shoal-Tag"
    public static let local = "Shoal-Local"
    /// On a chunk's answer: where it came from, `local` (the store) or `network` (retrieval).
    public static let source = "Shoal-Source"
    public static let waitSeconds = "Shoal-Wait-Seconds"
    /// On an upload: `false` keeps it on this node (no push to its neighbourhood).
    public static let push = "Shoal-Push"

    static func value(_ request: Request, _ name: String) -> String? {
        for spelling in [name, name.replacingPrefix("Shoal-", with: "Swarm-")] {
            if let field = HTTPField.Name(spelling), let value = request.headers[field] { return value }
        }
        return nil
    }
}

/// Bounds of the file routes.
public enum FileLimits {
    /// Chunks per store batch while an upload streams in (1 MiB of leaves).
    public static let uploadBatchChunks = 256
    /// Batches an upload has submitted and not yet seen committed: reading and splitting go on
    /// while the store commits.
    public static let uploadBatchesInFlight = 4
    /// Chunks a download reads ahead of what it sends.
    public static let downloadPrefetch = 64
    /// How long a download waits, by default and at most, for a missing chunk to arrive.
    public static let waitSecondsDefault = 30
    public static let waitSecondsMax = 600
}

/// What `POST /bytes` answers.
public struct BytesUploadResponse: Codable, Sendable, Equatable {
    /// The file's root address: 64 hex digits.
    public var reference: String
    public var size: UInt64
    /// Chunks the file's tree has (leaves, intermediates, parities).
    public var chunks: Int
    public var pinned: Bool
    /// The upload tag that tracked it.
    public var tag: UInt64
}

/// What `GET /pins/{ref}` answers.
public struct PinResponse: Codable, Sendable, Equatable {
    public var reference: String
    public var chunks: UInt64
    public var bytes: UInt64
    public var pinnedAtMs: UInt64
}

/// What `PUT /stewardship/{ref}` answers.
public struct RepairResponse: Codable, Sendable, Equatable {
    public var reference: String
    /// Chunks rebuilt from parity (or parity encoded again) and stored.
    public var rebuilt: Int
    /// Chunks still missing: they could not be rebuilt here.
    public var missing: Int
    /// True when nothing is missing any more.
    public var isRetrievable: Bool

    public init(reference: String, rebuilt: Int, missing: Int, isRetrievable: Bool) {
        (self.reference, self.rebuilt, self.missing, self.isRetrievable) = (reference, rebuilt, missing, isRetrievable)
    }
}

/// What `GET /stewardship/{ref}` answers.
public struct StewardshipResponse: Codable, Sendable, Equatable {
    public var reference: String
    /// Every chunk the file needs is here, or can be rebuilt from parity that is here.
    public var isRetrievable: Bool
    /// Chunks of the tree seen (the walk cannot see below an intermediate it cannot get).
    public var chunks: Int
    /// Chunks not stored here (data and parity).
    public var missing: Int
    /// Up to 16 of them.
    public var missingSample: [String]
}

/// The file routes:
///
/// | method and path | answer |
/// |---|---|
/// | `POST /bytes` | streamed body → 201 `BytesUploadResponse` |
/// | `GET`/`HEAD /bytes/{ref}` | the file (200) or one byte range of it (206) |
/// | `POST /pins/{ref}`, `DELETE /pins/{ref}`, `GET /pins`, `GET /pins/{ref}` | pins |
/// | `GET /stewardship/{ref}` | whether every chunk is here or rebuildable |
/// | `PUT /stewardship/{ref}` | rebuilds from parity and stores what is missing here |
/// | `POST /tags`, `GET /tags`, `GET /tags/{uid}`, `DELETE /tags/{uid}` | upload progress |
func addFileRoutes(to router: Router<APIRequestContext>, node: some NodeAPIBacking, tags: UploadTags, metrics: ShoalMetrics) {
    router.post("/bytes") { request, _ in
        try await uploadBytes(request, node: node, tags: tags, metrics: metrics)
    }
    router.get("/bytes/:reference") { request, context in
        try await downloadBytes(request, context: context, node: node, metrics: metrics)
    }
    router.post("/pins/:reference") { _, context in
        try await pin(try reference(context), node: node)
    }
    router.delete("/pins/:reference") { _, context in
        try await unpin(try reference(context), node: node)
    }
    router.get("/pins") { _, _ in
        let pins = try node.readStore { try $0.pins() }
        return try JSONBody.response(["references": pins.map(\.root.hex)], status: .ok)
    }
    router.get("/pins/:reference") { _, context in
        let root = try reference(context)
        guard let record = try node.readStore({ try $0.pin(root) }) else {
            throw APIError(.notFound, .notFound, "\(root.hex) is not pinned")
        }
        return try JSONBody.response(PinResponse(reference: root.hex, chunks: record.chunks, bytes: record.bytes,
                                                 pinnedAtMs: record.pinnedMs), status: .ok)
    }
    router.get("/stewardship/:reference") { _, context in
        try JSONBody.response(try await stewardship(try reference(context), node: node), status: .ok)
    }
    router.put("/stewardship/:reference") { _, context in
        try JSONBody.response(try await repair(try reference(context), node: node, metrics: metrics), status: .ok)
    }
    router.post("/tags") { _, _ in
        guard let tag = tags.make() else {
            throw APIError(.serviceUnavailable, .tooManyTags,
                           "all \(UploadTags.defaultCapacity) upload tags belong to running uploads")
        }
        return try JSONBody.response(tag, status: .created, headers: [.location: "/tags/\(tag.uid)"])
    }
    router.get("/tags") { _, _ in
        try JSONBody.response(["tags": tags.all()], status: .ok)
    }
    router.get("/tags/:uid") { _, context in
        try JSONBody.response(try tag(context, tags), status: .ok)
    }
    router.delete("/tags/:uid") { _, context in
        let found = try tag(context, tags)
        tags.remove(found.uid)
        return Response(status: .noContent)
    }
}

private func reference(_ context: APIRequestContext) throws -> ChunkAddress {
    let text = context.parameters.get("reference") ?? ""
    guard let address = ChunkAddress(hex: text) else {
        throw APIError(.badRequest, .invalidReference, "reference must be 64 hex digits, got \(text.utf8.count) characters")
    }
    return address
}

private func tag(_ context: APIRequestContext, _ tags: UploadTags) throws -> UploadTags.Tag {
    let text = context.parameters.get("uid") ?? ""
    guard let uid = UInt64(text), let tag = tags.get(uid) else {
        throw APIError(.notFound, .unknownTag, "no upload tag '\(text.prefix(40))'")
    }
    return tag
}

/// `Shoal-Local: true` or `?local=true`: answer from this node's store alone.
func localOnly(_ request: Request) throws -> Bool {
    try flag(request, FileHeaders.local) || ["true", "1"].contains(request.uri.queryParameters.get("local") ?? "")
}

private func flag(_ request: Request, _ name: String) throws -> Bool {
    guard let value = FileHeaders.value(request, name) else { return false }
    switch value.lowercased() {
    case "true", "1", "yes": return true
    case "false", "0", "no", "": return false
    default: throw APIError(.badRequest, .invalidHeader, "\(name): '\(value.prefix(40))' is not true or false")
    }
}

// MARK: Upload

private func uploadBytes(_ request: Request, node: some NodeAPIBacking, tags: UploadTags, metrics: ShoalMetrics) async throws -> Response {
    var redundancy = RedundancyLevel.none
    if let text = FileHeaders.value(request, FileHeaders.redundancyLevel) {
        guard let level = RedundancyLevel(name: text.lowercased()) else {
            throw APIError(.badRequest, .invalidHeader, "\(FileHeaders.redundancyLevel): '\(text.prefix(40))' is not one of "
                           + "none, medium, strong, insane, paranoid (or 0…4)")
        }
        redundancy = level
    }
    let pin = try flag(request, FileHeaders.pin)
    if let declared = request.headers[.contentLength], declared == "0" {
        throw APIError(.badRequest, .emptyBody, "the body is empty; a file has at least one byte")
    }
    let tag: UploadTags.Tag
    if let text = FileHeaders.value(request, FileHeaders.tag) {
        guard let uid = UInt64(text), let existing = tags.get(uid) else {
            throw APIError(.notFound, .unknownTag, "\(FileHeaders.tag): no upload tag '\(text.prefix(40))'")
        }
        tag = existing
    } else {
        guard let made = tags.make() else {
            throw APIError(.serviceUnavailable, .tooManyTags, "all upload tags belong to running uploads; retry later")
        }
        tag = made
    }

    var upload = FileUpload(node: node, tags: tags, tag: tag.uid, redundancy: redundancy, collectAddresses: pin)
    do {
        for try await buffer in request.body {
            try await upload.append(buffer)
            metrics.uploadBytes(buffer.readableBytes)
        }
        let (root, size, chunks) = try await upload.finish(pin: pin)
        tags.update(tag.uid) { $0.reference = root.hex; $0.done = true }
        metrics.filesUploaded()
        return try JSONBody.response(
            BytesUploadResponse(reference: root.hex, size: size, chunks: chunks, pinned: pin, tag: tag.uid),
            status: .created, headers: [.location: "/bytes/\(root.hex)"])
    } catch {
        // Whatever was committed stays (content-addressed chunks, unpinned, unreferenced); the
        // client gets no reference, and the tag says why.
        await upload.drain()
        let apiError = APIError.from(error)
        tags.update(tag.uid) { $0.failed = apiError.message }
        throw apiError
    }
}

/// One upload in progress: the splitter, the batch being filled and the batches committing.
private struct FileUpload<Node: NodeAPIBacking> {
    let node: Node
    let tags: UploadTags
    let tag: UInt64
    var splitter: FileSplitter
    var pending: [Chunk] = []
    var inFlight: [Task<BatchResult, any Error>] = []
    /// Every chunk of the tree, for a pin (32 bytes per 4 KiB of file).
    var addresses: [ChunkAddress]?
    var chunkCount = 0

    init(node: Node, tags: UploadTags, tag: UInt64, redundancy: RedundancyLevel, collectAddresses: Bool) {
        self.node = node
        self.tags = tags
        self.tag = tag
        splitter = FileSplitter(redundancy: redundancy)
        addresses = collectAddresses ? [] : nil
        pending.reserveCapacity(FileLimits.uploadBatchChunks)
    }

    mutating func append(_ buffer: ByteBuffer) async throws {
        let made = try buffer.withUnsafeReadableBytes { raw throws(FileError) in try splitter.append(raw) }
        let bytes = UInt64(buffer.readableBytes)
        tags.update(tag) { $0.bytes += bytes; $0.split += made.count }
        add(made)
        if pending.count >= FileLimits.uploadBatchChunks { try await submit() }
    }

    private mutating func add(_ chunks: [Chunk]) {
        pending += chunks
        chunkCount += chunks.count
        addresses?.append(contentsOf: chunks.lazy.map(\.address))
    }

    /// Hands the pending chunks to the store and, with too many batches committing, waits
    /// for the oldest.
    private mutating func submit() async throws {
        let batch = StoreBatch(chunks: pending)
        pending.removeAll(keepingCapacity: true)
        let (node, tags, tag) = (self.node, self.tags, self.tag)
        inFlight.append(Task {
            let result = try await node.apply(batch)
            tags.update(tag) { $0.stored += batch.chunks.count; $0.seen += result.duplicates }
            return result
        })
        while inFlight.count >= FileLimits.uploadBatchesInFlight {
            _ = try await inFlight.removeFirst().value
        }
    }

    /// The last chunks and, if asked, the pin, committed after every earlier batch.
    mutating func finish(pin: Bool) async throws -> (ChunkAddress, UInt64, Int) {
        guard splitter.bytesIn > 0 else {
            throw APIError(.badRequest, .emptyBody, "the body is empty; a file has at least one byte")
        }
        let (root, size, last) = try splitter.finish()
        tags.update(tag) { $0.split += last.count }
        add(last)
        for task in inFlight { _ = try await task.value }
        inFlight = []
        var batch = StoreBatch(chunks: pending)
        pending = []
        if pin, let addresses { batch.pins = [PinRequest(root: root, chunks: addresses, bytes: size)] }
        let result = try await node.apply(batch)
        tags.update(tag) { $0.stored += batch.chunks.count; $0.seen += result.duplicates }
        if case .missing(let count, let sample)? = result.pinOutcomes.first {
            throw APIError(.init(code: 507), .insufficientStorage,
                           "\(count) chunks of the upload were evicted before the pin (first: \(sample.first?.hex ?? "?")); "
                           + "the store's capacity is too small for this file")
        }
        return (root, size, chunkCount)
    }

    /// After a failure: lets the batches already handed to the store finish.
    mutating func drain() async {
        for task in inFlight { _ = try? await task.value }
        inFlight = []
    }
}

// MARK: Download

/// A file's chunks as this node sees them: the local store; unless `local`, the network
/// (retrieval) for a chunk the store misses; and, unless `wait` is nil, a bounded wait for a
/// chunk neither had to arrive by pull sync.
struct NodeChunkSource<Node: NodeAPIBacking>: ChunkSource {
    let node: Node
    var local = false
    let wait: Duration?

    func chunk(_ address: ChunkAddress) async throws -> Chunk? {
        // Not re-hashed here: the reader re-hashes every chunk it gets.
        if let chunk = try node.readStore({ try $0.chunk(address, verify: false) }) { return chunk }
        if !local, case .success(let chunk) = try await node.retrieve(address) { return chunk }
        guard let wait, await node.waitForChunk(address, timeout: wait) else { return nil }
        return try node.readStore { try $0.chunk(address, verify: false) }
    }
}

private func downloadBytes(_ request: Request, context: APIRequestContext, node: some NodeAPIBacking,
                           metrics: ShoalMetrics) async throws -> Response {
    let root = try reference(context)
    let local = try localOnly(request)
    var waitSeconds = FileLimits.waitSecondsDefault
    if let text = FileHeaders.value(request, FileHeaders.waitSeconds) {
        guard let n = Int(text), (0...FileLimits.waitSecondsMax).contains(n) else {
            throw APIError(.badRequest, .invalidHeader,
                           "\(FileHeaders.waitSeconds): '\(text.prefix(40))' is not a number of seconds from 0 to \(FileLimits.waitSecondsMax)")
        }
        waitSeconds = n
    }
    let source = NodeChunkSource(node: node, local: local, wait: local || waitSeconds == 0 ? nil : .seconds(waitSeconds))
    let reader = try await FileReader.open(root: root, source: source)

    var status = HTTPResponse.Status.ok
    var range: Range<UInt64> = 0..<reader.size
    var headers: HTTPFields = [.contentType: "application/octet-stream", .acceptRanges: "bytes",
                               .eTag: "\"\(root.hex)\""]
    if let header = request.headers[.range] {
        switch ByteRangeRequest(header: header, size: reader.size) {
        case .satisfiable(let r):
            range = r
            status = .partialContent
            headers[.contentRange] = "bytes \(r.lowerBound)-\(r.upperBound - 1)/\(reader.size)"
        case .unsatisfiable:
            var error = APIError(.rangeNotSatisfiable, .rangeNotSatisfiable,
                                 "range '\(header.prefix(80))' is outside the file's \(reader.size) bytes")
            error.headers = [.contentRange: "bytes */\(reader.size)"]
            throw error
        case .malformed(let why):
            throw APIError(.badRequest, .invalidRange, why)
        case .multipleRanges:
            throw APIError(.badRequest, .invalidRange, "one byte range per request")
        }
    }
    let length = range.upperBound - range.lowerBound
    headers[.contentLength] = String(length)
    if length == 0 { return Response(status: status, headers: headers, body: ResponseBody()) }
    let pieces = reader.bytes(range, prefetch: FileLimits.downloadPrefetch)
    // Once the head is sent, a chunk that cannot be had ends the response short of its
    // Content-Length: the client sees a truncated body, never wrong bytes.
    let body = ResponseBody(contentLength: Int(length)) { writer in
        let allocator = ByteBufferAllocator()
        do {
            for try await piece in pieces {
                var buffer = allocator.buffer(capacity: piece.count)
                buffer.writeBytes(piece)
                try await writer.write(buffer)
                metrics.downloadBytes(piece.count)
            }
        } catch let error as FileError {
            if case .missing = error { metrics.retrievalChunksMissing() }
            throw error
        }
        try await writer.finish(nil)
        metrics.filesDownloaded()
    }
    return Response(status: status, headers: headers, body: body)
}

// MARK: Pins and stewardship

/// Every chunk of the file `root` in this store, or the error naming what is missing.
private func treeChunks(_ root: ChunkAddress, node: some NodeAPIBacking) async throws -> (chunks: [ChunkAddress], size: UInt64) {
    let source = NodeChunkSource(node: node, local: true, wait: nil)
    let reader = try await FileReader.open(root: root, source: source)
    var chunks: [ChunkAddress] = []
    var named: [ChunkAddress] = []
    try await reader.walk(includeParity: true) { address, kind in
        chunks.append(address)
        // The walk reads intermediates itself; leaves and parities are only named.
        if kind == .leaf || kind == .parity { named.append(address) }
    }
    let missing = try absent(named, node: node)
    if !missing.isEmpty {
        throw APIError(.notFound, .missingChunks,
                       "\(missing.count) chunks of \(root.hex) are not stored here (first: \(missing[0].hex)); a pin needs all of them")
    }
    return (chunks, reader.size)
}

/// Which of `addresses` this store lacks, in order, asked in one read snapshot.
private func absent(_ addresses: [ChunkAddress], node: some NodeAPIBacking) throws -> [ChunkAddress] {
    try node.readStore { r in try addresses.filter { try !r.has($0) } }
}

private func pin(_ root: ChunkAddress, node: some NodeAPIBacking) async throws -> Response {
    if try node.readStore({ try $0.pin(root) }) != nil {
        return try JSONBody.response(["reference": root.hex, "pinned": "already"], status: .ok)
    }
    let (chunks, size) = try await treeChunks(root, node: node)
    var batch = StoreBatch()
    batch.pins = [PinRequest(root: root, chunks: chunks, bytes: size)]
    switch try await node.apply(batch).pinOutcomes.first {
    case .pinned?:
        return try JSONBody.response(["reference": root.hex, "pinned": "now"], status: .created)
    case .alreadyPinned?:
        return try JSONBody.response(["reference": root.hex, "pinned": "already"], status: .ok)
    case .missing(let count, let sample)?:
        throw APIError(.notFound, .missingChunks,
                       "\(count) chunks of \(root.hex) left the store before the pin (first: \(sample.first?.hex ?? "?"))")
    case nil:
        throw APIError(.internalServerError, .internal, "the store gave no outcome for the pin")
    }
}

private func unpin(_ root: ChunkAddress, node: some NodeAPIBacking) async throws -> Response {
    guard try node.readStore({ try $0.pin(root) }) != nil else {
        throw APIError(.notFound, .notFound, "\(root.hex) is not pinned")
    }
    // A pinned tree is whole in the store: the same walk as when it was pinned.
    let (chunks, _) = try await treeChunks(root, node: node)
    var batch = StoreBatch()
    batch.unpins = [UnpinRequest(root: root, chunks: chunks)]
    guard try await node.apply(batch).unpinned.first == true else {
        throw APIError(.notFound, .notFound, "\(root.hex) is not pinned")
    }
    return try JSONBody.response(["reference": root.hex, "pinned": "no"], status: .ok)
}

private func stewardship(_ root: ChunkAddress, node: some NodeAPIBacking) async throws -> StewardshipResponse {
    let reader: FileReader
    do {
        reader = try await FileReader.open(root: root, source: NodeChunkSource(node: node, local: true, wait: nil))
    } catch FileError.missing(let address) {
        return StewardshipResponse(reference: root.hex, isRetrievable: false, chunks: 0, missing: 1, missingSample: [address.hex])
    }
    var seen = 0
    var named: [ChunkAddress] = []
    var missing: [ChunkAddress] = []
    var missingCount = 0
    // Leaves and parities are asked about in one read per 4,096, not one per chunk.
    func check() throws {
        let lacking = try absent(named, node: node)
        missingCount += lacking.count
        missing += lacking.prefix(16 - missing.count)
        named.removeAll(keepingCapacity: true)
    }
    var complete = true
    do {
        try await reader.walk(includeParity: true) { address, kind in
            seen += 1
            guard kind == .leaf || kind == .parity else { return }
            named.append(address)
            if named.count == 4096 { try check() }
        }
    } catch FileError.missing(let address) {
        // An intermediate neither here nor rebuildable: nothing below it can be seen.
        complete = false
        try check()
        missingCount += 1
        if missing.count < 16 { missing.append(address) }
    }
    if complete { try check() }
    // Retrievable when what is missing can be rebuilt: read every byte through the reader,
    // which rebuilds from parity (and fails on what it cannot).
    var retrievable = complete && missingCount == 0
    if complete && missingCount > 0 && reader.redundancy != .none {
        retrievable = true
        do {
            for try await _ in reader.bytes(nil, prefetch: FileLimits.downloadPrefetch) {}
        } catch {
            retrievable = false
        }
    }
    return StewardshipResponse(reference: root.hex, isRetrievable: retrievable, chunks: seen, missing: missingCount,
                               missingSample: missing.map(\.hex))
}

/// Rebuilds what parity allows and stores it, one batch per intermediate.
private func repair(_ root: ChunkAddress, node: some NodeAPIBacking, metrics: ShoalMetrics) async throws -> RepairResponse {
    let reader = try await FileReader.open(root: root, source: NodeChunkSource(node: node, local: true, wait: nil))
    let outcome = try await reader.rebuildMissing(
        present: { addresses in try node.readStore { r in try addresses.map { try r.has($0) } } },
        store: { chunks in _ = try await node.apply(StoreBatch(chunks: chunks)) })
    metrics.retrievalChunksReconstructed(outcome.rebuilt)
    metrics.retrievalChunksMissing(outcome.lost.count)
    return RepairResponse(reference: root.hex, rebuilt: outcome.rebuilt, missing: outcome.lost.count,
                          isRetrievable: outcome.lost.isEmpty)
}

private extension String {
    func replacingPrefix(_ prefix: String, with other: String) -> String {
        hasPrefix(prefix) ? other + dropFirst(prefix.count) : self
    }
}
