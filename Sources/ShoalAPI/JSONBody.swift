import Hummingbird

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// JSON bodies: responses with sorted keys (stable output for people, diffs and tests), and
/// bounded request bodies decoded with a message that says the shape expected.
enum JSONBody {
    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }

    static let contentType = "application/json; charset=utf-8"

    /// `value` as the bytes of a response body: the JSON and a final newline.
    static func bytes(_ value: some Encodable) throws -> ByteBuffer {
        let data = try encoder().encode(value)
        var buffer = ByteBufferAllocator().buffer(capacity: data.count + 1)
        buffer.writeBytes(data)
        buffer.writeInteger(UInt8(ascii: "\n"))
        return buffer
    }

    /// A request's JSON body as `T`: refused unread (413, `tooLarge`) when it declares more than
    /// `bytesMax`, cut off and refused when it sends more, and a 400 saying `shape` when it does
    /// not decode.
    static func decode<T: Decodable>(_ type: T.Type, from request: Request, bytesMax: Int, tooLarge: String,
                                     shape: String) async throws -> T {
        let refusal = APIError(.contentTooLarge, .badRequest, tooLarge)
        if let declared = request.headers[.contentLength].flatMap({ Int($0) }), declared > bytesMax { throw refusal }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: bytesMax)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw refusal
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(body.readableBytesView))
        } catch {
            throw APIError(.badRequest, .badRequest, "the body must be JSON \(shape)")
        }
    }

    static func response(_ value: some Encodable, status: HTTPResponse.Status, headers: HTTPFields = [:]) throws -> Response {
        var fields = headers
        fields[.contentType] = contentType
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: try bytes(value)))
    }
}
