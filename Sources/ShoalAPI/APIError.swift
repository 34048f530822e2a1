import Hummingbird
import ShoalCore
import ShoalStore

/// An API failure as the client sees it: an HTTP status and the JSON body
/// `{"error": {"code": "...", "message": "..."}}`.
///
/// Every 4xx and 5xx the API sends has that body, whatever produced it: a handler, the router
/// (unknown path) or Hummingbird (a body over the limit). `APIErrorMiddleware` turns everything
/// else into one of these.
public struct APIError: Error, HTTPResponseError, Sendable, Equatable {
    /// Stable, machine-readable error codes. Clients switch on these, not on messages.
    public enum Code: String, Sendable, Codable, CaseIterable {
        /// The body is not span (8 bytes) ‖ payload (1…4096 bytes).
        case invalidChunk
        /// The body is larger than span ‖ 4096 payload bytes (4104 bytes).
        case chunkTooLarge
        /// The address in the path is not 64 hex digits.
        case invalidAddress
        /// No chunk with that address in the local store, or no such endpoint.
        case notFound
        /// The node is shutting down or its store writer is overloaded: retry later.
        case unavailable
        /// The store failed (LMDB, disk); the message carries the store's error.
        case storeError
        /// A stored chunk no longer hashes to its address; `lmdb-inspect verify` will list it.
        case corruptChunk
        /// Any other malformed request.
        case badRequest
        /// A bug or an unexpected failure.
        case `internal`
    }

    public var status: HTTPResponse.Status
    public var code: Code
    public var message: String

    public init(_ status: HTTPResponse.Status, _ code: Code, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    /// The JSON body of every error response.
    public struct Body: Codable, Sendable, Equatable {
        public struct Detail: Codable, Sendable, Equatable {
            public var code: String
            public var message: String
        }

        public var error: Detail
    }

    public var body: Body { Body(error: .init(code: code.rawValue, message: message)) }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = try JSONBody.response(body, status: status)
        if status == .serviceUnavailable { response.headers[.retryAfter] = "1" }
        return response
    }
}

extension APIError {
    /// Maps an error from below (the store, Hummingbird, the chunk parser) to what the client sees.
    static func from(_ error: any Error) -> APIError {
        switch error {
        case let error as APIError:
            return error
        case let error as HTTPError where error.status == .notFound:
            return APIError(.notFound, .notFound, error.body ?? "no such endpoint")
        case let error as any HTTPResponseError where error.status == .contentTooLarge:
            // Hummingbird's answer to `collect(upTo:)` overflowing (`NIOTooManyBytesError`).
            return APIError(.contentTooLarge, .chunkTooLarge,
                            "request body exceeds \(Chunk.serializedMax) bytes (span 8 + payload 4096)")
        case let error as any HTTPResponseError:
            return APIError(error.status, error.status.code >= 500 ? .internal : .badRequest,
                            (error as? HTTPError)?.body ?? error.status.reasonPhrase)
        case let error as StoreError:
            switch error.code {
            // `StoreWriter` refuses with `readOnly` once stopped and `invalidBatch` when its
            // queue is full: both are temporary, and neither means the request was wrong.
            case .readOnly, .invalidBatch:
                return APIError(.serviceUnavailable, .unavailable, error.description)
            case .corrupt, .slotMissing:
                return APIError(.internalServerError, .corruptChunk, error.description)
            default:
                return APIError(.internalServerError, .storeError, error.description)
            }
        case let error as ChunkError:
            if case .addressMismatch = error {
                return APIError(.internalServerError, .corruptChunk, "stored chunk is damaged: \(error)")
            }
            return APIError(.badRequest, .invalidChunk, error.description)
        default:
            return APIError(.internalServerError, .internal, "\(error)")
        }
    }
}

/// Turns every error thrown below it into an `APIError`, so no response leaves without the
/// JSON error body. Added before any route, so it also wraps the router's "not found".
struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let apiError = APIError.from(error)
            if apiError.status.code >= 500 {
                context.logger.error("request failed", metadata: [
                    "http.method": "\(request.method)", "http.path": "\(request.uri.path)",
                    "error.code": "\(apiError.code.rawValue)", "error": "\(error)",
                ])
            }
            throw apiError
        }
    }
}
