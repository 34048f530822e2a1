import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import ShoalAPI
import ShoalCore
import ShoalNode
import ShoalTestSupport
import Testing

/// The HTTP API over a real node in a temporary directory.
struct ChunkEndpointTests {
    @Test func anUploadedChunkIsStoredAndReadBackByteForByte() async throws {
        var source = SeededChunks(seed: 1)
        let chunk = source.chunk(size: 1000, span: 123_456)
        try await withTestNode { node in
            try await withAPI(node) { client in
                let posted = try await client.upload(chunk)
                #expect(posted.status == .created)
                #expect(posted.headers[.location] == "/chunks/\(chunk.address.hex)")
                let answer = try decode(UploadResponse.self, posted)
                #expect(answer.address == chunk.address.hex && answer.binID == 1 && !answer.duplicate)
                #expect(answer.bin == Proximity.bin(of: chunk.address, relativeTo: node.overlay))
                // A node with no peer is the closest node to every address: it signs the receipt itself.
                let push = try #require(answer.push)
                #expect(push.storer == node.overlay.hex && push.thisNode == true && push.error == nil)
                #expect(push.proximity == node.overlay.proximity(to: chunk.address))
                #expect(push.publicKey == node.identity.publicKey.hexEncoded)
                let receipt = Receipt.Stored(address: chunk.address, publicKey: node.identity.publicKey,
                                             signature: try #require(push.signature.flatMap(bytes(hex:))))
                #expect(receipt.check(networkID: node.identity.networkID) == (node.overlay, true), "the receipt's signature holds")

                let got = try await client.get("/chunks/\(chunk.address.hex)")
                #expect(got.status == .ok)
                #expect(got.headers[.contentType] == "application/octet-stream")
                #expect(got.body.bytes == chunk.serialized)
            }
            // Durable before the answer: the store itself has it, re-hashed.
            #expect(try node.chunk(chunk.address) == chunk)
        }
    }

    @Test func uppercaseHexNamesTheSameChunk() async throws {
        var source = SeededChunks(seed: 2)
        let chunk = source.chunk(size: 10)
        try await withTestNode { node in
            try await withAPI(node) { client in
                _ = try await client.upload(chunk)
                let got = try await client.get("/chunks/\(chunk.address.hex.uppercased())")
                #expect(got.status == .ok)
                #expect(got.body.bytes == chunk.serialized)
            }
        }
    }

    @Test func uploadingAStoredChunkAgainAnswers200AndStoresNothingNew() async throws {
        var source = SeededChunks(seed: 3)
        let chunk = source.chunk(size: 4096)
        try await withTestNode { node in
            try await withAPI(node) { client in
                let first = try decode(UploadResponse.self, try await client.upload(chunk))
                let again = try await client.upload(chunk)
                #expect(again.status == .ok)
                let second = try decode(UploadResponse.self, again)
                #expect(second.duplicate)
                #expect(second.address == first.address)
                #expect(second.bin == first.bin)
                #expect(second.binID == first.binID)
            }
            let status = try node.status()
            #expect(status.chunks == 1)
            #expect(status.bins.map(\.cursor).reduce(0, +) == 1)
        }
    }

    @Test func chunksOfOneBinGetConsecutiveBinIDs() async throws {
        var source = SeededChunks(seed: 4)
        let chunks = (0..<40).map { _ in source.chunk(size: 64) }
        try await withTestNode { node in
            let answers = try await withAPI(node) { client in
                var answers: [UploadResponse] = []
                for chunk in chunks { answers.append(try decode(UploadResponse.self, try await client.upload(chunk))) }
                return answers
            }
            for (bin, inBin) in Dictionary(grouping: answers, by: \.bin) {
                #expect(inBin.compactMap(\.binID) == Array(1...UInt64(inBin.count)), "bin \(bin)")
            }
        }
    }

    /// A miss asks the network (here: nobody, no peer is connected) unless the request says
    /// local only; a stored chunk says it came from the store.
    @Test func aChunkNotStoredIs404AndSaysWhetherTheNetworkWasAsked() async throws {
        let chunk = SeededChunks.chunks(count: 1, size: 100, seed: 31)[0]
        try await withTestNode { node in
            try await withAPI(node) { client in
                let missing = String(repeating: "ab", count: 32)
                let response = try await client.get("/chunks/\(missing)")
                try expectError(response, .notFound, .notFound)
                #expect(String(decoding: response.body.bytes, as: UTF8.self).contains("nor found on the network: no peer to ask"))
                let localOnly = try await client.get("/chunks/\(missing)?local=true")
                try expectError(localOnly, .notFound, .notFound)
                #expect(String(decoding: localOnly.body.bytes, as: UTF8.self).contains("the network was not asked"))
                let header = try await client.execute(uri: "/chunks/\(missing)", method: .get, headers: [HTTPField.Name("Shoal-Local")!: "true"])
                #expect(String(decoding: header.body.bytes, as: UTF8.self).contains("the network was not asked"))
                _ = try await client.upload(chunk)
                let stored = try await client.get("/chunks/\(chunk.address.hex)?local=true")
                #expect(stored.status == .ok && stored.body.bytes == chunk.serialized)
                #expect(stored.headers[HTTPField.Name("Shoal-Source")!] == "local")
            }
        }
    }

    @Test(arguments: [
        "abc",                                          // short
        String(repeating: "a", count: 63),              // one digit short
        String(repeating: "a", count: 65),              // one digit long
        String(repeating: "a", count: 63) + "g",        // not hex
        String(repeating: "a", count: 62) + "%20",      // percent-encoded space
    ])
    func anAddressThatIsNot64HexDigitsIs400(address: String) async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                try expectError(try await client.get("/chunks/\(address)"), .badRequest, .invalidAddress)
            }
        }
    }

    @Test(arguments: [0, 1, 8])
    func aBodyShorterThanSpanAndOnePayloadByteIs400AndStoresNothing(size: Int) async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                try expectError(try await client.upload([UInt8](repeating: 7, count: size)), .badRequest, .invalidChunk)
            }
            #expect(try node.status().chunks == 0)
        }
    }

    @Test(arguments: [Chunk.serializedMax + 1, 8 + 8192, 1 << 20])
    func aBodyLargerThanOneChunkIs413AndStoresNothing(size: Int) async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                try expectError(try await client.upload([UInt8](repeating: 1, count: size)), .contentTooLarge, .chunkTooLarge)
            }
            #expect(try node.status().chunks == 0)
        }
    }

    @Test func aFullSizeChunkOf4104BytesIsAccepted() async throws {
        var source = SeededChunks(seed: 5)
        let chunk = source.chunk(size: Chunk.payloadMax)
        #expect(chunk.serialized.count == Chunk.serializedMax)
        try await withTestNode { node in
            try await withAPI(node) { client in
                let posted = try await client.upload(chunk)
                #expect(posted.status == .created)
                let got = try await client.get("/chunks/\(chunk.address.hex)")
                #expect(got.body.bytes == chunk.serialized)
            }
        }
    }

    @Test func headOfAStoredChunkIs200WithoutABody() async throws {
        var source = SeededChunks(seed: 6)
        let chunk = source.chunk(size: 100)
        try await withTestNode { node in
            try await withAPI(node) { client in
                _ = try await client.upload(chunk)
                let head = try await client.execute(uri: "/chunks/\(chunk.address.hex)", method: .head)
                #expect(head.status == .ok)
                #expect(head.body.readableBytes == 0)
                #expect(try await client.execute(uri: "/chunks/\(String(repeating: "0", count: 64))", method: .head).status == .notFound)
            }
        }
    }

    @Test func anUploadAfterTheNodeClosedIs503() async throws {
        var source = SeededChunks(seed: 7)
        let chunk = source.chunk(size: 100)
        try await withTestNode { node in
            node.close()
            try await withAPI(node) { client in
                let response = try await client.upload(chunk)
                try expectError(response, .serviceUnavailable, .unavailable)
                #expect(response.headers[.retryAfter] != nil)
            }
        }
    }
}

struct StatusEndpointTests {
    @Test func statusCountsChunksPerBinAndTheirCursors() async throws {
        var source = SeededChunks(seed: 10)
        let chunks = (0..<25).map { _ in source.chunk(size: 200) }
        try await withTestNode { node in
            try await withAPI(node) { client in
                let before = try decode(NodeStatus.self, try await client.get("/status"))
                #expect(before.overlay == node.overlay.hex)
                #expect(before.networkID == 1)
                #expect(before.chunks == 0)
                #expect(before.bins.count == Proximity.binCount)
                #expect(before.bins.allSatisfy { $0.chunks == 0 && $0.cursor == 0 })
                #expect(before.peers == 0)
                #expect(before.listenAddress == nil)  // not running: nothing is listening

                for chunk in chunks { #expect(try await client.upload(chunk).status == .created) }

                let after = try decode(NodeStatus.self, try await client.get("/status"))
                #expect(after.chunks == chunks.count)
                #expect(after.epoch == before.epoch)
                var expected = [Int](repeating: 0, count: Proximity.binCount)
                for chunk in chunks { expected[Proximity.bin(of: chunk.address, relativeTo: node.overlay)] += 1 }
                #expect(after.bins.map(\.bin) == Array(0..<Proximity.binCount))
                #expect(after.bins.map(\.chunks) == expected)
                // A fresh store: each bin's cursor is the number of chunks stored in it.
                #expect(after.bins.map(\.cursor) == expected.map(UInt64.init))
            }
        }
    }

    @Test func statusIsJSON() async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                let response = try await client.get("/status")
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/json; charset=utf-8")
            }
        }
    }

    @Test func aNodeWithoutPeersListsNone() async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                let response = try await client.get("/peers")
                #expect(response.status == .ok)
                #expect(try decode([PeerStatus].self, response) == [])
                #expect(String(decoding: response.body.bytes, as: UTF8.self) == "[]\n")
            }
        }
    }
}

struct ErrorShapeTests {
    @Test(arguments: [
        ("/nowhere", HTTPRequest.Method.get),
        ("/chunks", .get),       // the path exists, not for GET
        ("/chunks", .delete),
        ("/status", .post),
    ])
    func unknownEndpointsAre404WithTheJSONErrorShape(path: String, method: HTTPRequest.Method) async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                try expectError(try await client.execute(uri: path, method: method), .notFound, .notFound)
            }
        }
    }

    @Test func anErrorBodyIsExactlyCodeAndMessage() async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                let response = try await client.upload([1, 2, 3])
                let json = try #require(try JSONSerialization.jsonObject(with: Data(response.body.bytes)) as? [String: Any])
                #expect(Array(json.keys) == ["error"])
                let error = try #require(json["error"] as? [String: Any])
                #expect(Set(error.keys) == ["code", "message"])
                #expect(error["code"] as? String == "invalidChunk")
                #expect((error["message"] as? String)?.contains("3 bytes") == true)
            }
        }
    }
}

/// Bytes from hex digits (an even count of them); nil for anything else.
func bytes(hex: String) -> [UInt8]? {
    let digits = Array(hex.utf8)
    guard digits.count % 2 == 0 else { return nil }
    var out: [UInt8] = []
    for i in stride(from: 0, to: digits.count, by: 2) {
        guard let byte = UInt8(String(decoding: digits[i..<i + 2], as: UTF8.self), radix: 16) else { return nil }
        out.append(byte)
    }
    return out
}
