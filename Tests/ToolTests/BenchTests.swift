import Foundation
import ShoalTestSupport
import Testing

/// `shoal-bench store` runs end to end and reports every figure in the peers' RESULT format.
/// Not a timing test: it checks that the figures are there and are numbers, not their size.
@Suite struct BenchTests {
    static let storeFigures = [
        "chunk-hash", "store-put-durable", "store-put-batch1000-durable", "store-get-random-txn", "store-get-random",
        "store-disk", "store-reopen-first-read", "store-reopen-first-read-readonly", "store-reopen-first-read-cold",
    ]

    @Test func storeBenchReportsEveryFigure() async throws {
        let dir = try TemporaryDirectory("bench")
        let run = try await Tools.run("shoal-bench", ["store", "--chunks", "2000", "--dir", dir.path, "--no-lmdb"],
                                timeoutSeconds: 120)
        #expect(run.status == 0, "shoal-bench store failed:\n\(run.stderr)")
        let results = resultLines(run.stdout)
        for name in Self.storeFigures {
            let fields = try #require(results[name], "no RESULT name=\(name) in:\n\(run.stdout)")
            if name != "store-disk" {
                #expect(positive(fields["seconds"]), "\(name): seconds=\(fields["seconds"] ?? "absent")")
            }
        }
        for (name, key) in [("store-put-durable", "puts_per_s"), ("store-put-batch1000-durable", "puts_per_s"),
                            ("store-get-random-txn", "gets_per_s"), ("store-get-random", "gets_per_s"),
                            ("chunk-hash", "chunks_per_s")] {
            #expect(positive(results[name]?[key]), "\(name): \(key)=\(results[name]?[key] ?? "absent")")
            #expect(positive(results[name]?["MBps"]), "\(name): MBps=\(results[name]?["MBps"] ?? "absent")")
        }
        #expect(results["store-put-durable"]?["chunks"] == "2000")
        #expect(results["store-put-durable"]?["bytes"] == "8192000")
        // Every payload byte is on disk at least once.
        let disk = try #require(results["store-disk"])
        #expect((Double(disk["ratio"] ?? "") ?? 0) >= 1, "store-disk ratio=\(disk["ratio"] ?? "absent")")
        // The scratch stores are gone.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }

    /// With the raw-LMDB reference: its lines come through and the ratio is printed, or, where
    /// python3 or py-lmdb is missing, a note says the ratio was skipped.
    @Test func storeBenchComparesWithRawLMDBOrSaysWhyNot() async throws {
        let dir = try TemporaryDirectory("bench-lmdb")
        // <clone>/Tests/ToolTests/BenchTests.swift → <clone>/../shared/peers
        let peers = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/peers").path
        let run = try await Tools.run("shoal-bench", ["store", "--chunks", "1000", "--dir", dir.path, "--peers-dir", peers,
                                                "--lmdb-max-seconds", "0.2"],
                                timeoutSeconds: 300)
        #expect(run.status == 0, "shoal-bench store failed:\n\(run.stderr)")
        let results = resultLines(run.stdout)
        if let ratio = results["store-put-vs-lmdb"] {
            #expect(positive(ratio["ratio"]))
            #expect(positive(results["lmdb_put_batch1000_durable"]?["puts_per_s"]))
        } else {
            #expect(run.stderr.contains("raw-LMDB ratio skipped"), "neither a ratio nor a note:\n\(run.stderr)")
        }
    }
}

/// RESULT lines of `stdout` by name, each as its key=value fields.
func resultLines(_ stdout: String) -> [String: [String: String]] {
    var out: [String: [String: String]] = [:]
    for line in stdout.split(separator: "\n") where line.hasPrefix("RESULT ") {
        var fields: [String: String] = [:]
        for part in line.split(separator: " ").dropFirst() {
            guard let eq = part.firstIndex(of: "=") else { continue }
            fields[String(part[..<eq])] = String(part[part.index(after: eq)...])
        }
        if let name = fields["name"] { out[name] = fields }
    }
    return out
}

func positive(_ value: String?) -> Bool { (value.flatMap(Double.init) ?? 0) > 0 }
