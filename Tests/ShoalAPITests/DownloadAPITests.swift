import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
@testable import ShoalAPI
import ShoalCore
import ShoalNode
import ShoalTestSupport
import Testing

/// `POST /downloads`, `GET /downloads[/{id}]` and `DELETE /downloads/{id}` over a real node:
/// what a caller gets back, and the 4xx a malformed, unknown or oversized request gets.
struct DownloadAPITests {
    static func post(_ client: any TestClientProtocol, _ json: String) async throws -> TestResponse {
        try await client.execute(uri: "/downloads", method: .post, headers: [.contentType: "application/json"],
                                 body: ByteBuffer(bytes: Array(json.utf8)))
    }

    @Test func aDownloadOfStoredChunksIsCompleteAtOnceAndListed() async throws {
        let chunks = SeededChunks.chunks(count: 3, size: 100, seed: 51)
        try await withTestNode { node in
            try await withAPI(node) { client in
                for chunk in chunks { _ = try await client.upload(chunk) }
                let list = chunks.map { "\"\($0.address.hex)\"" }.joined(separator: ",")
                let posted = try await Self.post(client, #"{"addresses": [\#(list)], "policy": "onRead"}"#)
                #expect(posted.status == .created)
                let view = try decode(DownloadView.self, posted)
                #expect(view.state == "completed")
                #expect(posted.headers[.location] == "/downloads/\(view.id)")
                let got = try decode(DownloadView.self, try await client.get("/downloads/\(view.id)"))
                #expect(got.state == "completed" && got.id == view.id)
                let all = try decode([DownloadView].self, try await client.get("/downloads"))
                #expect(all.map(\.id) == [view.id])
                // Ended: nothing to cancel.
                try expectError(try await client.execute(uri: "/downloads/\(view.id)", method: .delete), .notFound, .notFound)
            }
        }
    }

    @Test func aRunningDownloadShowsWhatIsMissingAndCanBeCancelled() async throws {
        let missing = SeededChunks.chunks(count: 2, size: 100, seed: 52)
        try await withTestNode { node in
            try await withAPI(node) { client in
                let list = missing.map { "\"\($0.address.hex)\"" }.joined(separator: ",")
                let view = try decode(DownloadView.self, try await Self.post(client, #"{"addresses": [\#(list)]}"#))
                #expect(view.state == "running" && view.total == 2 && view.done == 0)
                #expect(Set(view.missing) == Set(missing.map(\.address.hex)))
                #expect(try await client.execute(uri: "/downloads/\(view.id)", method: .delete).status == .noContent)
                #expect(try decode(DownloadView.self, try await client.get("/downloads/\(view.id)")).state == "cancelled")
            }
        }
    }

    @Test(arguments: [
        ("not json", "the body must be JSON"),
        (#"{"addresses": []}"#, "no addresses"),
        (#"{"addresses": ["abc"]}"#, "addresses[0] is not 64 hex digits"),
        (#"{"addresses": ["\#(String(repeating: "ab", count: 32))"], "policy": "sometimes"}"#, "neither eagerPin nor onRead"),
        (#"{"addresses": ["\#(String(repeating: "ab", count: 32))"], "hints": ["zz"]}"#, "hints[0] is not an overlay"),
    ])
    func aMalformedRequestIsA400ThatSaysWhy(body: String, message: String) async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                let response = try await Self.post(client, body)
                #expect(response.status == .badRequest)
                #expect(String(decoding: response.body.bytes, as: UTF8.self).contains(message), "\(body)")
            }
        }
    }

    @Test func tooManyAddressesAreRefusedAndUnknownIDsAre404() async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                let limit = DownloadRouteLimits().addressesMax
                let address = "\"\(String(repeating: "cd", count: 32))\""
                let body = #"{"addresses": [\#(Array(repeating: address, count: limit + 1).joined(separator: ","))]}"#
                let response = try await Self.post(client, body)
                #expect(response.status == .contentTooLarge)
                #expect(String(decoding: response.body.bytes, as: UTF8.self).contains("at most \(limit)"))
                let unknown = String(repeating: "ef", count: 32)
                try expectError(try await client.get("/downloads/\(unknown)"), .notFound, .notFound)
                try expectError(try await client.execute(uri: "/downloads/\(unknown)", method: .delete), .notFound, .notFound)
                try expectError(try await client.get("/downloads/xyz"), .badRequest, .invalidAddress)
            }
        }
    }
}
