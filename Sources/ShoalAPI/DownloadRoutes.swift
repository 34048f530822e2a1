import Hummingbird
import ShoalCore
import ShoalNode

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The body of `POST /downloads`.
public struct DownloadRequest: Codable, Sendable, Equatable {
    /// Chunk addresses, 64 hex digits each, 1…`DownloadRouteLimits.addressesMax`.
    public var addresses: [String]
    /// `eagerPin` (fetch everything in the background) or `onRead` (a reader waits: these go
    /// first). Default `eagerPin`.
    public var policy: String?
    /// Overlays of peers that may have the chunks (64 hex digits each).
    public var hints: [String]?

    public init(addresses: [String], policy: String? = nil, hints: [String]? = nil) {
        (self.addresses, self.policy, self.hints) = (addresses, policy, hints)
    }
}

/// A download as `POST /downloads`, `GET /downloads/{id}` and `GET /downloads` show it.
public struct DownloadView: Codable, Sendable, Equatable {
    public struct Missing: Codable, Sendable, Equatable {
        public var address: String
        public var reason: String
    }

    /// 64 hex digits.
    public var id: String
    /// `running`, `completed`, `failed` or `cancelled`.
    public var state: String
    public var policy: String?
    /// Chunks stored, failed and named, while it runs (nil once it ended since: the record is gone).
    public var done: Int?
    public var failed: Int?
    public var total: Int?
    /// Chunks still to fetch, at most 256 (the first in the download's order).
    public var missing: [String]
    /// Chunks that could not be fetched, with why (at most 64).
    public var errors: [Missing]
    /// How many could not be fetched in all (a failed download).
    public var missingCount: Int?

    init(_ report: DownloadReport) {
        id = report.id.key.hex
        missing = report.missing.map(\.hex)
        if let status = report.status {
            state = "running"
            policy = status.policy == .eagerPin ? "eagerPin" : "onRead"
            (done, failed, total) = (status.progress.done, status.progress.failed, status.progress.total)
            errors = status.failed.map { Missing(address: $0.address.hex, reason: "\($0.reason)") }
        } else {
            switch report.outcome {
            case .completed?, nil:
                state = "completed"
                errors = []
            case .failed(let missing, let count)?:
                state = "failed"
                errors = missing.map { Missing(address: $0.address.hex, reason: "\($0.reason)") }
                missingCount = count
            case .cancelled?:
                state = "cancelled"
                errors = []
            }
        }
    }
}

/// Bounds of the download routes.
public struct DownloadRouteLimits: Sendable {
    /// Addresses in one `POST /downloads` (the downloader's `chunksPerDownloadMax`).
    public var addressesMax = DownloadLimits().chunksPerDownloadMax
    /// Hints in one request.
    public var hintsMax = DownloadLimits().hintsPerDownloadMax
    /// The largest body: every address as 66 bytes of JSON string and its comma, and room.
    public var bodyBytesMax: Int { addressesMax * 67 + hintsMax * 67 + 4096 }

    public init() {}
}

/// `POST /downloads`, `GET /downloads`, `GET /downloads/{id}`, `DELETE /downloads/{id}`.
func addDownloadRoutes(to router: Router<APIRequestContext>, node: some NodeAPIBacking, limits: DownloadRouteLimits = DownloadRouteLimits()) {
    router.post("/downloads") { request, _ in
        let decoded = try await downloadRequest(request, limits: limits)
        let report: DownloadReport
        do {
            report = try await node.startDownload(decoded.addresses, policy: decoded.policy, hints: decoded.hints)
        } catch let rejected as DownloadRejected {
            let status: HTTPResponse.Status = rejected.code == .tooManyDownloads ? .serviceUnavailable : .badRequest
            throw APIError(status, .badRequest, rejected.message)
        }
        return try JSONBody.response(DownloadView(report), status: .created, headers: [.location: "/downloads/\(report.id.key.hex)"])
    }
    router.get("/downloads") { _, _ in
        try JSONBody.response(await node.downloadList().map(DownloadView.init), status: .ok)
    }
    router.get("/downloads/:id") { _, context in
        let id = try downloadID(context)
        guard let report = await node.download(id) else {
            throw APIError(.notFound, .notFound, "no download \(id.key.hex) (running, or ended since the node started)")
        }
        return try JSONBody.response(DownloadView(report), status: .ok)
    }
    router.delete("/downloads/:id") { _, context in
        let id = try downloadID(context)
        guard await node.cancelDownload(id) else {
            throw APIError(.notFound, .notFound, "no download \(id.key.hex) is running")
        }
        return Response(status: .noContent)
    }
}

private func downloadID(_ context: APIRequestContext) throws -> DownloadID {
    let text = context.parameters.get("id") ?? ""
    guard let key = Address32(hex: text) else {
        throw APIError(.badRequest, .invalidAddress, "a download id is 64 hex digits, got \(text.utf8.count) characters")
    }
    return DownloadID(key)
}

private struct DecodedDownload {
    var addresses: [ChunkAddress]
    var policy: DownloadPolicy
    var hints: [OverlayAddress]
}

private func downloadRequest(_ request: Request, limits: DownloadRouteLimits) async throws -> DecodedDownload {
    let shape = "{\"addresses\": [\"<64 hex digits>\", …], \"policy\": \"eagerPin\" | \"onRead\", \"hints\": [\"<overlay>\", …]}"
    let decoded = try await JSONBody.decode(
        DownloadRequest.self, from: request, bytesMax: limits.bodyBytesMax,
        tooLarge: "a POST /downloads body is at most \(limits.bodyBytesMax) bytes (\(limits.addressesMax) addresses)", shape: shape)
    guard !decoded.addresses.isEmpty else { throw APIError(.badRequest, .badRequest, "no addresses: \(shape)") }
    guard decoded.addresses.count <= limits.addressesMax else {
        throw APIError(.contentTooLarge, .badRequest, "\(decoded.addresses.count) addresses; a download names at most \(limits.addressesMax)")
    }
    var addresses: [ChunkAddress] = []
    addresses.reserveCapacity(decoded.addresses.count)
    for (i, text) in decoded.addresses.enumerated() {
        guard let address = ChunkAddress(hex: text) else {
            throw APIError(.badRequest, .invalidAddress, "addresses[\(i)] is not 64 hex digits: '\(text.prefix(80))'")
        }
        addresses.append(address)
    }
    let hintTexts = decoded.hints ?? []
    guard hintTexts.count <= limits.hintsMax else {
        throw APIError(.badRequest, .badRequest, "\(hintTexts.count) hints; at most \(limits.hintsMax)")
    }
    var hints: [OverlayAddress] = []
    for (i, text) in hintTexts.enumerated() {
        guard let overlay = OverlayAddress(hex: text) else {
            throw APIError(.badRequest, .invalidAddress, "hints[\(i)] is not an overlay of 64 hex digits: '\(text.prefix(80))'")
        }
        hints.append(overlay)
    }
    let policy: DownloadPolicy
    switch decoded.policy ?? "eagerPin" {
    case "eagerPin": policy = .eagerPin
    case "onRead": policy = .onRead
    case let other: throw APIError(.badRequest, .badRequest, "policy '\(other.prefix(40))' is neither eagerPin nor onRead")
    }
    return DecodedDownload(addresses: addresses, policy: policy, hints: hints)
}
