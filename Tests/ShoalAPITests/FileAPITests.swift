import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import ShoalAPI
import ShoalCore
import ShoalFiles
import ShoalNode
import ShoalStore
import ShoalTestSupport
import Testing

extension TestClientProtocol {
    func uploadFile(_ bytes: [UInt8], headers: HTTPFields = [:]) async throws -> TestResponse {
        try await execute(uri: "/bytes", method: .post, headers: headers, body: ByteBuffer(bytes: bytes))
    }

    /// Uploads `bytes` and returns the reference, expecting 201.
    func storeFile(_ bytes: [UInt8], headers: HTTPFields = [:], sourceLocation: SourceLocation = #_sourceLocation) async throws -> String {
        let response = try await uploadFile(bytes, headers: headers)
        #expect(response.status == .created, "\(String(decoding: response.body.bytes, as: UTF8.self))", sourceLocation: sourceLocation)
        return try decode(BytesUploadResponse.self, response, sourceLocation: sourceLocation).reference
    }

    func get(_ uri: String, headers: HTTPFields) async throws -> TestResponse {
        try await execute(uri: uri, method: .get, headers: headers)
    }
}

private func field(_ name: String) -> HTTPField.Name { HTTPField.Name(name)! }

struct FileUploadTests {
    @Test(arguments: [1, 4095, 4096, 4097, 128 * 4096, 128 * 4096 + 1, 1_500_000])
    func aFileUploadedIsReadBackByteForByte(size: Int) async throws {
        let bytes = seededBytes(size, seed: UInt64(size))
        try await withTestNode { node in
            try await withAPI(node) { client in
                let response = try await client.uploadFile(bytes)
                #expect(response.status == .created)
                let answer = try decode(BytesUploadResponse.self, response)
                #expect(answer.size == UInt64(size))
                #expect(response.headers[.location] == "/bytes/\(answer.reference)")
                #expect(!answer.pinned)

                let got = try await client.get("/bytes/\(answer.reference)")
                #expect(got.status == .ok)
                #expect(got.headers[.contentLength] == String(size))
                #expect(got.headers[.acceptRanges] == "bytes")
                #expect(got.body.bytes == bytes)
            }
            try expectStoreClean(node)
        }
    }

    @Test func theSameBytesGiveTheSameReferenceAndStoreNothingNew() async throws {
        let bytes = seededBytes(300_000, seed: 9)
        try await withTestNode { node in
            try await withAPI(node) { client in
                let first = try await client.storeFile(bytes)
                let chunks = try node.status().chunks
                let second = try await client.storeFile(bytes)
                #expect(first == second)
                #expect(try node.status().chunks == chunks)
            }
        }
    }

    @Test(arguments: ["medium", "strong", "insane", "paranoid", "1", "4"])
    func redundancyAddsParityAndReadsTheSameBytes(level: String) async throws {
        let bytes = seededBytes(200 * 4096 + 17, seed: 11)
        try await withTestNode { node in
            try await withAPI(node) { client in
                let plain = try await client.storeFile(bytes)
                let plainChunks = try node.status().chunks
                let coded = try await client.storeFile(bytes, headers: [field(FileHeaders.redundancyLevel): level])
                #expect(coded != plain)
                // Parity chunks and new intermediates: more chunks than the leaves they share.
                #expect(try node.status().chunks > plainChunks)
                let got = try await client.get("/bytes/\(coded)")
                #expect(got.status == .ok)
                #expect(got.body.bytes == bytes)
            }
        }
    }

    @Test func badUploadsAreRefusedWithAReason() async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                try expectError(try await client.uploadFile([]), .badRequest, .emptyBody)
                try expectError(try await client.uploadFile([1, 2, 3], headers: [field(FileHeaders.redundancyLevel): "extreme"]),
                                .badRequest, .invalidHeader)
                try expectError(try await client.uploadFile([1, 2, 3], headers: [field(FileHeaders.pin): "maybe"]),
                                .badRequest, .invalidHeader)
                try expectError(try await client.uploadFile([1, 2, 3], headers: [field(FileHeaders.tag): "77"]),
                                .notFound, .unknownTag)
            }
            #expect(try node.status().chunks == 0)
            try expectStoreClean(node)
        }
    }
}

struct FileDownloadTests {
    @Test func rangesAreServedAs206AndBadOnesAreRefused() async throws {
        let size = 3 * 128 * 4096 + 1000
        let bytes = seededBytes(size, seed: 21)
        try await withTestNode { node in
            try await withAPI(node) { client in
                let ref = try await client.storeFile(bytes)
                for (header, range) in [("bytes=0-0", 0..<1), ("bytes=4090-4200", 4090..<4201),
                                        ("bytes=\(size - 10)-", (size - 10)..<size), ("bytes=-5000", (size - 5000)..<size),
                                        ("bytes=524280-1048600", 524_280..<1_048_601), ("bytes=0-\(size * 2)", 0..<size)] {
                    let got = try await client.get("/bytes/\(ref)", headers: [.range: header])
                    #expect(got.status == .partialContent, "\(header)")
                    #expect(got.headers[.contentRange] == "bytes \(range.lowerBound)-\(range.upperBound - 1)/\(size)", "\(header)")
                    #expect(got.headers[.contentLength] == String(range.count), "\(header)")
                    #expect(got.body.bytes == Array(bytes[range]), "\(header)")
                }
                let past = try await client.get("/bytes/\(ref)", headers: [.range: "bytes=\(size)-"])
                try expectError(past, .rangeNotSatisfiable, .rangeNotSatisfiable)
                #expect(past.headers[.contentRange] == "bytes */\(size)")
                try expectError(try await client.get("/bytes/\(ref)", headers: [.range: "bytes=9-2"]), .badRequest, .invalidRange)
                try expectError(try await client.get("/bytes/\(ref)", headers: [.range: "bytes=0-1,4-5"]), .badRequest, .invalidRange)
                try expectError(try await client.get("/bytes/\(ref)", headers: [.range: "pages=1-2"]), .badRequest, .invalidRange)
            }
        }
    }

    @Test func headAnswersTheHeadersOfGet() async throws {
        let bytes = seededBytes(10_000, seed: 22)
        try await withTestNode { node in
            try await withAPI(node) { client in
                let ref = try await client.storeFile(bytes)
                let head = try await client.execute(uri: "/bytes/\(ref)", method: .head)
                #expect(head.status == .ok)
                #expect(head.headers[.contentLength] == "10000")
                #expect(head.body.readableBytes == 0)
            }
        }
    }

    @Test func referencesThatAreNotFilesAreRefused() async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                try expectError(try await client.get("/bytes/xyz"), .badRequest, .invalidReference)
                let absent = String(repeating: "ab", count: 32)
                try expectError(try await client.get("/bytes/\(absent)?local=true"), .notFound, .missingChunks)
                // A chunk that claims 5,000 bytes below it but holds 100 bytes, not references.
                let notATree = try Chunk(span: 5000, payload: seededBytes(100, seed: 23))
                _ = try await client.upload(notATree)
                try expectError(try await client.get("/bytes/\(notATree.address.hex)"), .unprocessableContent, .invalidTree)
                // An intermediate whose span disagrees with its one leaf.
                let leaf = try Chunk(payload: seededBytes(4096, seed: 24))
                let liar = try Chunk(span: 9000, payload: leaf.address.bytes)
                _ = try await client.upload(leaf)
                _ = try await client.upload(liar)
                let got = try await client.get("/bytes/\(liar.address.hex)")
                #expect(got.status == .unprocessableContent || got.body.readableBytes < 9000,
                        "a tree whose spans disagree is never served as a whole file")
            }
            try expectStoreClean(node)
        }
    }

    @Test func aDownloadWaitsForAMissingChunkToArriveAndLocalDoesNot() async throws {
        // The file is split here but stored only later, as pull sync would bring it.
        var splitter = FileSplitter()
        var chunks = try splitter.append(seededBytes(40_000, seed: 25))
        let (root, _, last) = try splitter.finish()
        chunks += last
        let arriving = chunks
        try await withTestNode { node in
            try await withAPI(node) { client in
                try expectError(try await client.get("/bytes/\(root.hex)", headers: [field(FileHeaders.local): "true"]),
                                .notFound, .missingChunks)
                try expectError(try await client.get("/bytes/\(root.hex)", headers: [field(FileHeaders.waitSeconds): "0"]),
                                .notFound, .missingChunks)
                let arrival = Task {
                    try await Task.sleep(for: .milliseconds(300))
                    try await node.apply(StoreBatch(chunks: arriving))
                }
                let got = try await client.get("/bytes/\(root.hex)", headers: [field(FileHeaders.waitSeconds): "20"])
                try await arrival.value
                #expect(got.status == .ok)
                #expect(got.body.bytes == seededBytes(40_000, seed: 25))
                try expectError(try await client.get("/bytes/\(root.hex)", headers: [field(FileHeaders.waitSeconds): "x"]),
                                .badRequest, .invalidHeader)
            }
        }
    }
}

struct PinAPITests {
    @Test func pinsAreMadeListedAndRemoved() async throws {
        let bytes = seededBytes(600_000, seed: 31)
        try await withTestNode { node in
            try await withAPI(node) { client in
                let pinned = try decode(BytesUploadResponse.self,
                                        try await client.uploadFile(bytes, headers: [field(FileHeaders.pin): "true"]))
                #expect(pinned.pinned)
                let other = try await client.storeFile(seededBytes(5000, seed: 32))

                let list = try decode([String: [String]].self, try await client.get("/pins"))
                #expect(list["references"] == [pinned.reference])
                let one = try decode(PinResponse.self, try await client.get("/pins/\(pinned.reference)"))
                #expect(one.bytes == 600_000)
                #expect(one.chunks == UInt64(pinned.chunks))
                try expectError(try await client.get("/pins/\(other)"), .notFound, .notFound)

                #expect(try await client.execute(uri: "/pins/\(other)", method: .post).status == .created)
                #expect(try await client.execute(uri: "/pins/\(other)", method: .post).status == .ok)
                #expect(try await client.execute(uri: "/pins/\(pinned.reference)", method: .delete).status == .ok)
                try expectError(try await client.execute(uri: "/pins/\(pinned.reference)", method: .delete), .notFound, .notFound)
                let after = try decode([String: [String]].self, try await client.get("/pins"))
                #expect(after["references"] == [other])
                let absent = String(repeating: "cd", count: 32)
                try expectError(try await client.execute(uri: "/pins/\(absent)", method: .post), .notFound, .missingChunks)
            }
            try expectStoreClean(node)
        }
    }

    @Test func aPinnedFileOutlivesEvictionAndAnUnpinnedOneDoesNot() async throws {
        // Capacity 200 chunks; each file is ~52 chunks.
        try await withTestNode(capacityChunks: 200) { node in
            try await withAPI(node) { client in
                let keep = seededBytes(50 * 4096, seed: 41)
                let kept = try await client.storeFile(keep, headers: [field(FileHeaders.pin): "true"])
                let loose = try await client.storeFile(seededBytes(50 * 4096, seed: 42))
                for seed in 43..<53 { _ = try await client.storeFile(seededBytes(50 * 4096, seed: UInt64(seed))) }
                #expect(try node.status().chunks <= 200 + 60)
                let got = try await client.get("/bytes/\(kept)?local=true")
                #expect(got.status == .ok)
                #expect(got.body.bytes == keep)
                let steward = try decode(StewardshipResponse.self, try await client.get("/stewardship/\(kept)"))
                #expect(steward.isRetrievable && steward.missing == 0)
                let gone = try decode(StewardshipResponse.self, try await client.get("/stewardship/\(loose)"))
                #expect(!gone.isRetrievable, "eviction took part of the unpinned file: \(gone)")
            }
            try expectStoreClean(node)
        }
    }
}

struct StewardshipTests {
    @Test func aNodeWithPartOfAFileRebuildsTheRestFromParity() async throws {
        // The file as another node split it; this node got all but a few of its chunks.
        var splitter = FileSplitter(redundancy: .medium)
        var chunks = try splitter.append(seededBytes(300 * 4096 + 5, seed: 61))
        let (root, _, last) = try splitter.finish()
        chunks += last
        let dropped = Set([chunks[3].address, chunks[40].address, chunks[200].address])
        let total = chunks.count
        try await withTestNode { node in
            try await node.apply(StoreBatch(chunks: chunks.filter { !dropped.contains($0.address) }))
            try await withAPI(node) { client in
                let before = try decode(StewardshipResponse.self, try await client.get("/stewardship/\(root.hex)"))
                #expect(before.missing == 3)
                #expect(before.isRetrievable, "rebuildable from parity: \(before)")
                #expect(Set(before.missingSample) == Set(dropped.map(\.hex)))

                let repaired = try decode(RepairResponse.self, try await client.execute(uri: "/stewardship/\(root.hex)", method: .put))
                #expect(repaired == RepairResponse(reference: root.hex, rebuilt: 3, missing: 0, isRetrievable: true))
                let after = try decode(StewardshipResponse.self, try await client.get("/stewardship/\(root.hex)"))
                #expect(after.missing == 0 && after.isRetrievable)
                #expect(after.chunks == total)
            }
            for address in dropped { #expect(try node.store.has(address)) }
            try expectStoreClean(node)
        }
    }

    @Test func withoutParityAMissingLeafIsReportedAndNotMadeUp() async throws {
        var splitter = FileSplitter()
        var chunks = try splitter.append(seededBytes(20 * 4096, seed: 62))
        let (root, _, last) = try splitter.finish()
        chunks += last
        let lost = chunks[7]
        try await withTestNode { node in
            try await node.apply(StoreBatch(chunks: chunks.filter { $0.address != lost.address }))
            try await withAPI(node) { client in
                let state = try decode(StewardshipResponse.self, try await client.get("/stewardship/\(root.hex)"))
                #expect(!state.isRetrievable && state.missing == 1 && state.missingSample == [lost.address.hex])
                let repaired = try decode(RepairResponse.self, try await client.execute(uri: "/stewardship/\(root.hex)", method: .put))
                #expect(repaired == RepairResponse(reference: root.hex, rebuilt: 0, missing: 1, isRetrievable: false))
                // A pin needs every chunk.
                try expectError(try await client.execute(uri: "/pins/\(root.hex)", method: .post), .notFound, .missingChunks)
                // A read stops short of the missing chunk and never serves wrong bytes: the head is
                // sent, then the body ends early (the router test client reports it as an error).
                do {
                    let got = try await client.get("/bytes/\(root.hex)?local=true")
                    #expect(got.body.readableBytes < 20 * 4096)
                } catch {
                    #expect("\(error)".contains(lost.address.hex))
                }
            }
        }
    }
}

struct TagAndHealthTests {
    @Test func aTagFollowsItsUpload() async throws {
        let bytes = seededBytes(700_000, seed: 51)
        try await withTestNode { node in
            try await withAPI(node) { client in
                let made = try await client.execute(uri: "/tags", method: .post)
                #expect(made.status == .created)
                let tag = try decode(UploadTags.Tag.self, made)
                #expect(!tag.done && tag.bytes == 0)
                let answer = try decode(BytesUploadResponse.self,
                                        try await client.uploadFile(bytes, headers: [field(FileHeaders.tag): String(tag.uid)]))
                #expect(answer.tag == tag.uid)
                let after = try decode(UploadTags.Tag.self, try await client.get("/tags/\(tag.uid)"))
                #expect(after.done && after.failed == nil)
                #expect(after.reference == answer.reference)
                #expect(after.bytes == 700_000)
                #expect(after.split == answer.chunks && after.stored == answer.chunks)
                let all = try decode([String: [UploadTags.Tag]].self, try await client.get("/tags"))
                #expect(all["tags"]?.map(\.uid).contains(tag.uid) == true)
                #expect(try await client.execute(uri: "/tags/\(tag.uid)", method: .delete).status == .noContent)
                try expectError(try await client.get("/tags/\(tag.uid)"), .notFound, .unknownTag)
            }
        }
    }

    @Test func healthAnswersAndReadinessWaitsForTheListener() async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                let health = try decode([String: String].self, try await client.get("/health"))
                #expect(health["status"] == "ok")
                // This node was never started: its listener is not bound.
                let ready = try await client.get("/readiness")
                #expect(ready.status == .serviceUnavailable)
            }
        }
    }
}

func expectStoreClean(_ node: Node, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let report = try node.store.verify()
    #expect(report.problems == [], "verify found: \(report.problems.prefix(5))", sourceLocation: sourceLocation)
}

/// Uploads that end badly, over a real socket.
struct TruncatedUploadTests {
    /// Sends `head` and `body`, then closes the connection without waiting for an answer.
    static func sendAndHangUp(port: Int, _ bytes: [UInt8]) async throws {
        try await RawHTTP.onOwnThread {
            let fd = try RawHTTP.connectedSocket(port: port)
            defer { close(fd) }
            var sent = 0
            while sent < bytes.count {
                let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
                guard n > 0 else { break }
                sent += n
            }
        }
    }

    @Test func anUploadCutShortIsNeitherReferencedNorPinnedAndTheStoreStaysClean() async throws {
        try await withTestNode { node in
            try await withLiveAPI(node) { port in
                // Declares 2 MB, sends 600 kB, hangs up.
                let head = "POST /bytes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2000000\r\nShoal-Pin: true\r\n\r\n"
                try await Self.sendAndHangUp(port: port, Array(head.utf8) + seededBytes(600_000, seed: 71))
                // Chunked, and the last chunk never comes.
                var chunked = Array("POST /bytes HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nShoal-Pin: true\r\n\r\n".utf8)
                chunked += Array("10000\r\n".utf8) + seededBytes(0x10000, seed: 72) + [13, 10]
                try await Self.sendAndHangUp(port: port, chunked)

                // Both uploads end as failed tags, bounded.
                var tags: [UploadTags.Tag] = []
                for _ in 0..<300 {
                    let answer = try await RawHTTP.get(port: port, path: "/tags")
                    tags = try JSONDecoder().decode([String: [UploadTags.Tag]].self, from: Data(answer.body))["tags"] ?? []
                    if tags.count == 2, tags.allSatisfy({ $0.failed != nil }) { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(tags.count == 2)
                #expect(tags.allSatisfy { $0.failed != nil && !$0.done && $0.reference == nil }, "\(tags)")
                let pins = try await RawHTTP.get(port: port, path: "/pins")
                #expect(String(decoding: pins.body, as: UTF8.self).contains(#""references":[]"#))
            }
            #expect(try node.store.read { try $0.pins() }.isEmpty)
            try expectStoreClean(node)
        }
    }
}
