import Hummingbird
import NIOHTTP1
import ShoalCore
import ShoalFiles
import ShoalNode
import ShoalStore

/// An API failure as the client sees it: an HTTP status and the JSON body
/// `{"error": {"code": "...", "message": "..."}}`.
///
/// Every 4xx and 5xx the API sends has that body, whatever produced it: a handler, the router
/// (unknown path), Hummingbird (a body over the limit) or NIO's HTTP/1 parser (a request it
/// cannot parse, answered by `MalformedRequestHandler`). `APIErrorMiddleware` turns everything
/// else into one of these.
public struct APIError: Error, HTTPResponseError, Sendable, Equatable {
    /// Stable, machine-readable error codes. Clients switch on these, not on messages.
    public enum Code: String, Sendable, Codable, CaseIterable {
        /// The body is not span (8 bytes) ‖ payload (1…4096 bytes).
        case invalidChunk
        /// The body is larger than span ‖ 4096 payload bytes (4104 bytes).
        case chunkTooLarge
        /// An address that does not parse: a chunk address or peer overlay in the path that is not
        /// 64 hex digits, or a peer address (`POST /peers`) that is not "host:port".
        case invalidAddress
        /// No chunk with that address in the local store, or no such endpoint.
        case notFound
        /// The node is shutting down or its store writer is overloaded: retry later.
        case unavailable
        /// The store failed (LMDB, disk); the message carries the store's error.
        case storeError
        /// A stored chunk no longer hashes to its address; `lmdb-inspect verify` will list it.
        case corruptChunk
        /// Any other malformed request, including one the HTTP parser refuses (a bad request line,
        /// header or `Content-Length`, or a request line and headers over 80 KiB).
        case badRequest
        /// A method this API never serves: `CONNECT` (it is no proxy), or one the HTTP parser
        /// does not know (`FOO`). Status 501.
        case unsupportedMethod
        /// The reference in the path is not 64 hex digits.
        case invalidReference
        /// An upload with no bytes (`POST /bytes` stores files of at least one byte).
        case emptyBody
        /// A request header has a value the API does not accept (the message names it).
        case invalidHeader
        /// A `Range` header that does not parse, or names several ranges. Status 400.
        case invalidRange
        /// A `Range` that starts at or past the end of the file. Status 416.
        case rangeNotSatisfiable
        /// The reference names a chunk that is not the root of a valid file tree (spans that
        /// disagree, not a list of references, too deep, parity that rebuilds wrong bytes). 422.
        case invalidTree
        /// Chunks of the file are neither here nor rebuildable; the message names them. 404.
        case missingChunks
        /// The store holds more pinned chunks than its capacity allows. 507.
        case insufficientStorage
        /// The tag named in the path or in `Shoal-Tag` does not exist. 404.
        case unknownTag
        /// Every upload tag is in use by a running upload; retry when one ends. 503.
        case tooManyTags
        /// `DELETE /peers/{overlay}` names a peer that is not connected. 404.
        case unknownPeer
        /// `POST /peers` could not connect to the address, or the peer there failed the
        /// handshake (502), or neither happened within the dial timeout (504).
        case dialFailed
        /// A bug or an unexpected failure.
        case `internal`
    }

    public var status: HTTPResponse.Status
    public var code: Code
    public var message: String
    /// Extra header fields of the answer (e.g. `Content-Range` of a 416).
    public var headers: HTTPFields = [:]

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
        let (head, body) = try responseParts()
        return Response(status: head.status, headers: head.headerFields, body: ResponseBody(byteBuffer: body))
    }

    /// The head and JSON body of this error's answer. The one place they are made: for the
    /// router (`response(from:context:)`) and for requests that never reach it
    /// (`MalformedRequestHandler`). Framing headers (`Content-Length`) are the sender's.
    func responseParts() throws -> (head: HTTPResponse, body: ByteBuffer) {
        var fields = headers
        fields[.contentType] = JSONBody.contentType
        if status == .serviceUnavailable { fields[.retryAfter] = "1" }
        return (HTTPResponse(status: status, headerFields: fields), try JSONBody.bytes(body))
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
        case let error as HTTPParserError:
            // A chunked body the parser refuses in the middle of an upload reaches the handler
            // reading it; between requests `MalformedRequestHandler` answers before the router.
            return APIError(parserError: error)
        case let error as FileError:
            switch error {
            case .missing(let address):
                return APIError(.notFound, .missingChunks,
                                "chunk \(address.hex) of the file is neither in this store nor rebuildable from parity here")
            case .rangeNotSatisfiable:
                return APIError(.rangeNotSatisfiable, .rangeNotSatisfiable, error.description)
            default:
                return APIError(.unprocessableContent, .invalidTree, error.description)
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

extension APIError {
    /// What the client is told when NIO's HTTP/1 parser (llhttp) refuses its request.
    ///
    /// A request line or header section over the decoder's 80 KiB limit is 400, not 414: the
    /// parser reports both as `headerOverflow`, and telling a long path from long headers
    /// would mean parsing the bytes a second time.
    init(parserError: HTTPParserError) {
        switch parserError {
        case .invalidMethod:
            self.init(.notImplemented, .unsupportedMethod,
                      "unknown request method; this API serves GET, HEAD and POST")
        case .headerOverflow:
            self.init(.badRequest, .badRequest,
                      "request line and headers exceed the limit (80 KiB, at most 1000 header fields)")
        case .invalidContentLength, .unexpectedContentLength:
            self.init(.badRequest, .badRequest, "invalid Content-Length header")
        case .invalidChunkSize:
            self.init(.badRequest, .badRequest, "invalid chunk size in a chunked request body")
        case .invalidURL:
            self.init(.badRequest, .badRequest, "invalid request target")
        case .invalidVersion:
            self.init(.badRequest, .badRequest, "invalid or unsupported HTTP version")
        case .invalidHeaderToken, .lfExpected, .invalidCharactersUsed:
            self.init(.badRequest, .badRequest, "malformed request line or header (\(parserError))")
        default:
            self.init(.badRequest, .badRequest, "malformed HTTP request (\(parserError))")
        }
    }

    /// The answer to `CONNECT`, which the router never sees (see `MalformedRequestHandler`).
    static let connectNotSupported = APIError(
        .notImplemented, .unsupportedMethod, "CONNECT is not supported: this API is not a proxy")
}

/// Turns every error thrown below it into an `APIError`, so no response leaves without the
/// JSON error body. Added before any route, so it also wraps the router's "not found".
struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let log: ThrottledLog

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let apiError = APIError.from(error)
            if apiError.status.code >= 500 {
                log.log("api.error.\(apiError.code.rawValue)", level: .error, "request failed", metadata: [
                    "http.method": "\(request.method)", "http.path": "\(request.uri.path.prefix(200))",
                    "error.code": "\(apiError.code.rawValue)", "error": "\(error)",
                ])
            }
            throw apiError
        }
    }
}

/// One `debug` line per request (method, path, status, time), throttled per status class.
struct APIAccessLogMiddleware<Context: RequestContext>: RouterMiddleware {
    let log: ThrottledLog

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard log.logger.logLevel <= .debug else { return try await next(request, context) }
        let start = ContinuousClock.now
        func record(_ status: HTTPResponse.Status) {
            let elapsed = ContinuousClock.now - start
            let ms = Double(elapsed.components.attoseconds / 1_000_000_000_000) / 1000 + Double(elapsed.components.seconds) * 1000
            log.log("api.access.\(status.code / 100)xx", level: .debug,
                    "\(request.method) \(request.uri.path.prefix(200)) \(status.code) \(ms.formatted(.number.precision(.fractionLength(1)))) ms")
        }
        do {
            let response = try await next(request, context)
            record(response.status)
            return response
        } catch let error as APIError {
            record(error.status)
            throw error
        }
    }
}
