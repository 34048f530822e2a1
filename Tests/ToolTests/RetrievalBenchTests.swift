import Foundation
import ShoalTestSupport
import Testing

@testable import shoal_bench

/// `shoal-bench retrieval` on a small network of real node processes: chunks a node does not
/// hold come back from the network, the exact bytes, every time, and the RESULT line has the
/// latencies and hops. Not a timing test. Twelve nodes, because a node holds only its half of
/// the address space once at least 4 peers share its side of the first bit (depth ≥ 1): with
/// fewer, every node may hold every chunk and nothing is left to retrieve.
@Suite(.serialized) struct RetrievalBenchTests {
    @Test(.timeLimit(.minutes(4)))
    func chunksANodeLacksComeBackFromTheNetworkExactly() async throws {
        let seed = UInt64.random(in: 1...UInt64(UInt32.max))
        let dir = try TemporaryDirectory("retrieval")
        let arguments = ["retrieval", "--nodes", "12", "--chunks", "60", "--seed", "\(seed)", "--timeout", "150",
                         "--dir", dir.sub("run"), "--shoal", Tools.path("shoal")]
        let replay = "shoal-bench " + arguments.joined(separator: " ")
        // The bench bounds itself by --timeout; stopping the nodes comes after it.
        let run = try await Tools.run("shoal-bench", arguments, timeoutSeconds: 210)
        let failure = "seed \(seed) (\(replay)):\n\(run.stdout)\n\(run.stderr.suffix(6000))"
        #expect(run.status == 0, "\(failure)")
        let result = try #require(resultLines(run.stdout)["retrieval"], "no RESULT name=retrieval; \(failure)")
        #expect(result["nodes"] == "12" && result["chunks"] == "60")
        let measured = try #require(result["measured"].flatMap(Int.init), "\(failure)")
        let skipped = try #require(result["skipped_all_hold"].flatMap(Int.init), "\(failure)")
        #expect(measured > 0, "\(failure)")
        #expect(measured + skipped == 60, "\(failure)")
        #expect(result["failures"] == "0", "\(failure)")
        #expect(result["wrong_source"] == "0" && result["wrong_bytes"] == "0", "\(failure)")
        // Every timed retrieval asked at least one peer.
        #expect((result["hops_mean"].flatMap(Double.init) ?? 0) >= 1, "\(failure)")
        #expect((Int(result["attempts"] ?? "") ?? 0) >= measured, "\(failure)")
        for key in ["p50_ms", "p99_ms", "max_ms", "ms_per_hop_p99"] {
            #expect(positive(result[key]), "\(key)=\(result[key] ?? "absent"); \(failure)")
        }
        let histogram = try #require(resultLines(run.stdout)["retrieval-histogram"], "\(failure)")
        #expect(histogram["count"] == "\(measured)")
    }

    @Test func percentilesAreNearestRankAndTheHistogramIsCumulative() {
        let summary = LatencySummary((1...100).reversed().map { Double($0) / 1000 })  // 100 … 1 ms
        #expect(abs(summary.percentileMs(0.50) - 50) < 1e-9)
        #expect(abs(summary.percentileMs(0.99) - 99) < 1e-9)
        #expect(abs(summary.maxMs - 100) < 1e-9)
        let (atMost, over) = summary.histogram()
        #expect(atMost.map(\.count) == [0, 1, 2, 5, 10, 20, 50, 100, 100])
        #expect(over == 0)
        #expect(LatencySummary([]).percentileMs(0.99) == 0)
        #expect(LatencySummary([2]).histogram().over == 1)
    }
}
