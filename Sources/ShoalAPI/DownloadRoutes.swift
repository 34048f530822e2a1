import Hummingbird
import ShoalCore
import ShoalFiles
import ShoalNode

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The body of `POST /downloads`: `addresses` or `root`, not both.
public struct DownloadRequest: Codable, Sendable, Equatable {
    /// Chunk addresses, 64 hex digits each, 1…`DownloadRouteLimits.addressesMax`.
    public var addresses: [String]?
    /// A file's reference (64 hex digits): the node reads its tree and downloads every chunk
    /// of it (root, intermediates, data leaves; parity too with `parity`).
    public var root: String?
    /// With `root`: name the tree's parity chunks too (default false).
    public var parity: Bool?
    /// `eagerPin` (fetch everything in the background) or `onRead` (a reader waits: these go
    /// first). Default `eagerPin`.
    public var policy: String?
    /// Overlays of peers that may have the chunks (64 hex digits each).
    public var hints: [String]?

    public init(addresses: [String]? = nil, root: String? = nil, parity: Bool? = nil, policy: String? = nil, hints: [String]? = nil) {
        (self.addresses, self.root, self.parity, self.policy, self.hints) = (addresses, root, parity, policy, hints)
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
    /// The file's reference, for a download started with `root` (absent after a restart).
    public var root: String?
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

    init(_ report: DownloadReport, root: ChunkAddress? = nil) {
        id = report.id.key.hex
        self.root = root?.hex
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
            switch decoded.what {
            case .addresses(let addresses):
                report = try await node.startDownload(addresses, policy: decoded.policy, hints: decoded.hints)
            case .file(let root, let including):
                report = try await node.startFileDownload(root: root, including: including, policy: decoded.policy, hints: decoded.hints)
            }
        } catch let rejected as DownloadRejected {
            let status: HTTPResponse.Status = rejected.code == .tooManyDownloads ? .serviceUnavailable : .badRequest
            throw APIError(status, .badRequest, rejected.message)
        } catch let large as TreeTooLarge {
            throw APIError(.contentTooLarge, .badRequest,
                           "\(large.description); a download names at most \(large.chunksMax) (download the file with GET /bytes instead)")
        } catch FileError.missing(let address) {
            if case .file(let root, _) = decoded.what, root == address {
                throw APIError(.notFound, .notFound, "the file's root \(root.hex) is neither in this store nor found on the network")
            }
            throw APIError(.notFound, .missingChunks,
                           "chunk \(address.hex) of the file's tree is neither here nor found on the network, nor rebuildable from parity")
        }
        return try JSONBody.response(view(report, node: node), status: .created, headers: [.location: "/downloads/\(report.id.key.hex)"])
    }
    router.get("/downloads") { _, _ in
        var views: [DownloadView] = []
        for report in await node.downloadList() { views.append(view(report, node: node)) }
        return try JSONBody.response(views, status: .ok)
    }
    router.get("/downloads/:id") { _, context in
        let id = try downloadID(context)
        guard let report = await node.download(id) else {
            throw APIError(.notFound, .notFound, "no download \(id.key.hex) (running, or ended since the node started)")
        }
        return try JSONBody.response(view(report, node: node), status: .ok)
    }
    router.delete("/downloads/:id") { _, context in
        let id = try downloadID(context)
        guard await node.cancelDownload(id) else {
            throw APIError(.notFound, .notFound, "no download \(id.key.hex) is running")
        }
        return Response(status: .noContent)
    }
}

private func view(_ report: DownloadReport, node: some NodeAPIBacking) -> DownloadView {
    DownloadView(report, root: node.fileRoot(of: report.id))
}

private func downloadID(_ context: APIRequestContext) throws -> DownloadID {
    let text = context.parameters.get("id") ?? ""
    guard let key = Address32(hex: text) else {
        throw APIError(.badRequest, .invalidAddress, "a download id is 64 hex digits, got \(text.utf8.count) characters")
    }
    return DownloadID(key)
}

private struct DecodedDownload {
    enum What {
        case addresses([ChunkAddress])
        case file(ChunkAddress, TreeChunks)
    }

    var what: What
    var policy: DownloadPolicy
    var hints: [OverlayAddress]
}

private func downloadRequest(_ request: Request, limits: DownloadRouteLimits) async throws -> DecodedDownload {
    let shape = "{\"addresses\": [\"<64 hex digits>\", …] or \"root\": \"<64 hex digits>\", \"parity\": false, "
        + "\"policy\": \"eagerPin\" | \"onRead\", \"hints\": [\"<overlay>\", …]}"
    let decoded = try await JSONBody.decode(
        DownloadRequest.self, from: request, bytesMax: limits.bodyBytesMax,
        tooLarge: "a POST /downloads body is at most \(limits.bodyBytesMax) bytes (\(limits.addressesMax) addresses)", shape: shape)
    let what: DecodedDownload.What
    switch (decoded.addresses, decoded.root) {
    case (_?, _?):
        throw APIError(.badRequest, .badRequest, "both addresses and root: a download is of a list of chunks or of one file, not both")
    case (nil, nil):
        throw APIError(.badRequest, .badRequest, "no addresses and no root: \(shape)")
    case (nil, let text?):
        guard let root = ChunkAddress(hex: text) else {
            throw APIError(.badRequest, .invalidReference, "root is not a file reference of 64 hex digits: '\(text.prefix(80))'")
        }
        what = .file(root, decoded.parity == true ? .dataAndParity : .data)
    case (let texts?, nil):
        guard decoded.parity == nil else { throw APIError(.badRequest, .badRequest, "parity goes with root, not with addresses") }
        guard !texts.isEmpty else { throw APIError(.badRequest, .badRequest, "no addresses: \(shape)") }
        guard texts.count <= limits.addressesMax else {
            throw APIError(.contentTooLarge, .badRequest, "\(texts.count) addresses; a download names at most \(limits.addressesMax)")
        }
        var addresses: [ChunkAddress] = []
        addresses.reserveCapacity(texts.count)
        for (i, text) in texts.enumerated() {
            guard let address = ChunkAddress(hex: text) else {
                throw APIError(.badRequest, .invalidAddress, "addresses[\(i)] is not 64 hex digits: '\(text.prefix(80))'")
            }
            addresses.append(address)
        }
        what = .addresses(addresses)
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
    return DecodedDownload(what: what, policy: policy, hints: hints)
}
