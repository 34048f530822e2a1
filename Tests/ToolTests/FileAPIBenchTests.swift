import Foundation
import ShoalTestSupport
import Testing

@testable import shoal_bench

/// `shoal-bench file-api` runs real nodes, moves a file through their HTTP API and reports
/// every figure. Not a timing test: it checks that the figures are there, the bytes checked.
@Suite struct FileAPIBenchTests {
    static let figures = [
        "sha256sum", "file-upload", "store-put", "file-download-2seeders",
        "file-upload-median", "sha256sum-median", "store-put-median", "file-download-2seeders-median",
        "upload-vs-sha256sum", "upload-vs-store-put", "sync-2seeders", "sync-2seeders-median", "download-vs-sync-2seeders",
        "rss-idle", "file-upload-1g", "rss-upload-1g", "range-ttfb", "file-download-local-1g", "rss-download-1g",
    ]

    @Test(.timeLimit(.minutes(8)))
    func aSmallRunReportsEveryFigureWithoutThePeer() async throws {
        let dir = try TemporaryDirectory("file-api")
        let run = try await Tools.run(
            "shoal-bench",
            ["file-api", "--bytes", "1M", "--range-file-bytes", "5M", "--rounds", "1", "--range-requests", "3",
             "--no-peer", "--timeout", "120", "--dir", dir.sub("run")],
            timeoutSeconds: 420)
        #expect(run.status == 0, "shoal-bench file-api failed:\n\(run.stderr.suffix(3000))")
        let results = resultLines(run.stdout)
        for name in Self.figures {
            #expect(results[name] != nil, "no RESULT name=\(name) in:\n\(run.stdout)")
        }
        for name in ["sha256sum", "file-upload", "store-put", "file-download-2seeders", "file-upload-1g", "file-download-local-1g"] {
            #expect(positive(results[name]?["MBps"]), "\(name): MBps=\(results[name]?["MBps"] ?? "absent")")
        }
        #expect(results["file-upload"]?["bytes"] == "1048576")
        #expect(results["file-download-2seeders"]?["bytes"] == "1048576")
        for name in ["rss-idle", "rss-upload-1g", "rss-download-1g"] {
            #expect(positive(results[name]?["kib"]), "\(name): kib=\(results[name]?["kib"] ?? "absent")")
        }
        #expect(results["range-ttfb"]?["requests"] == "3")
        #expect(positive(results["range-ttfb"]?["ttfb_ms"]))
        #expect(results["torrent-2seeders"] == nil && results["download-vs-torrent-2seeders"] == nil)
    }

    @Test(arguments: [["--bytes", "lots"], ["--range-file-bytes", "1M"], ["--rounds", "0"]])
    func badArgumentsAreUsageErrors(_ arguments: [String]) async throws {
        let run = try await Tools.run("shoal-bench", ["file-api", "--no-peer"] + arguments, timeoutSeconds: 30)
        #expect(run.status == 64, "exit \(run.status):\n\(run.stderr)")
        #expect(!run.stdout.contains("RESULT"))
    }
}

/// The bench's own HTTP reading: response heads and chunked bodies, fed in any split.
@Suite struct FileAPIHTTPTests {
    @Test func aResponseHeadGivesStatusAndHeadersInAnyCase() throws {
        let head = try HTTPResponseHead(parsing: "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 5-9/100\r\ncontent-length:  5 \r\nTransfer-Encoding: chunked")
        #expect(head.status == 206)
        #expect(head.header("Content-Range") == "bytes 5-9/100")
        #expect(head.contentLength == 5)
        #expect(head.isChunked)
    }

    @Test(arguments: ["", "HTTP/1.1", "SMTP 220 ready", "HTTP/1.1 abc OK", "HTTP/1.1 200 OK\r\nno colon here"])
    func aMalformedHeadIsAnError(_ text: String) {
        #expect(throws: BenchError.self) { try HTTPResponseHead(parsing: text) }
    }

    @Test(arguments: [1, 2, 3, 7, 1000])
    func aChunkedBodyDecodesWhateverTheSplit(_ pieceBytes: Int) throws {
        let wire = Array("5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nNEXT".utf8)
        var decoder = ChunkedBodyDecoder()
        var body: [UInt8] = []
        var used = 0
        for start in stride(from: 0, to: wire.count, by: pieceBytes) where !decoder.isDone {
            let piece = Array(wire[start..<min(wire.count, start + pieceBytes)])
            used += try piece.withUnsafeBytes { try decoder.feed($0) { body += $0 } }
        }
        #expect(decoder.isDone)
        #expect(String(decoding: body, as: UTF8.self) == "hello 0123456789")
        #expect(used == wire.count - 4, "the bytes after the body are left")
    }

    @Test(arguments: ["zz\r\n", "5\r\nhelloXY", String(repeating: "1", count: 2000)])
    func aMalformedChunkedBodyIsAnError(_ text: String) {
        var decoder = ChunkedBodyDecoder()
        #expect(throws: BenchError.self) {
            _ = try Array(text.utf8).withUnsafeBytes { try decoder.feed($0) { _ in } }
        }
    }
}
