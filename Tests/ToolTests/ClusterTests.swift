import Foundation
import ShoalTestSupport
import Testing

/// A network of real node processes on 127.0.0.1 (`shoal-bench cluster`): every node is told
/// only of node 0 and must find the others through hive; chunks uploaded to random nodes end up
/// on every node whose neighbourhood holds them, checked in the stores, also when nodes are
/// SIGKILLed and restarted meanwhile; every store passes `lmdb-inspect verify` at the end.
/// The seed is random per run and printed on failure: `shoal-bench cluster … --seed S` replays
/// the plan (chunks, upload targets, kill moments), not the network's timing.
@Suite(.serialized) struct ClusterTests {
    @Test(.timeLimit(.minutes(5)))
    func twelveNodesConvergeWhileThreeAreKilledAndRestarted() async throws {
        try await expectConverged(nodes: 12, chunks: 600, kills: 3, timeoutSeconds: 240)
    }

    @Test(.timeLimit(.minutes(3)))
    func sixNodesToldOnlyOfTheFirstFindEachOtherAndConverge() async throws {
        try await expectConverged(nodes: 6, chunks: 200, kills: 0, timeoutSeconds: 120)
    }

    private func expectConverged(nodes: Int, chunks: Int, kills: Int, timeoutSeconds: Int) async throws {
        let seed = UInt64.random(in: 1...UInt64(UInt32.max))
        let dir = try TemporaryDirectory("cluster")
        let arguments = ["cluster", "--nodes", "\(nodes)", "--chunks", "\(chunks)", "--kills", "\(kills)",
                         "--timeout", "\(timeoutSeconds)", "--seed", "\(seed)", "--dir", dir.sub("run"),
                         "--shoal", Tools.path("shoal")]
        let replay = "shoal-bench " + arguments.joined(separator: " ")
        // The bench bounds itself by --timeout; stopping and verifying the stores come after it.
        let run = try await Tools.run("shoal-bench", arguments, timeoutSeconds: Double(timeoutSeconds) + 120)
        let failure = "seed \(seed) (\(replay)):\n\(run.stdout)\n\(run.stderr.suffix(6000))"
        #expect(run.status == 0, "\(failure)")
        let result = try #require(resultLines(run.stdout)["cluster"], "no RESULT name=cluster; \(failure)")
        #expect(result["nodes"] == "\(nodes)")
        #expect(result["chunks"] == "\(chunks)")
        #expect(result["kills"] == "\(kills)")
        #expect(result["converged"] == "1", "\(failure)")
        #expect(result["verify_failures"] == "0", "\(failure)")
        #expect(result["unclean_stops"] == "0", "\(failure)")
        // Found through hive: every node got past its one configured peer.
        #expect((Int(result["peers_min"] ?? "") ?? 0) >= min(nodes - 1, 4), "\(failure)")
        // Every node holds at least its neighbourhood's share, and nobody holds more than was uploaded.
        #expect((Int(result["chunks_per_node_max"] ?? "") ?? .max) <= chunks, "\(failure)")
        #expect(positive(result["bytes_per_node_median"]), "\(failure)")
    }
}
