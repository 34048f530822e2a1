import Testing

/// `shoal-bench simulate` on a random seed: 50 nodes and 500 chunks converge, and the RESULT
/// line says so. A failure prints the seed, which replays the run exactly.
@Suite struct SimulateBenchTests {
    @Test func aSmallSimulatedNetworkConverges() async throws {
        let seed = UInt64.random(in: 1...UInt64(UInt32.max))
        let run = try await Tools.run("shoal-bench", ["simulate", "--nodes", "50", "--chunks", "500", "--seed", "\(seed)",
                                                      "--resets-per-minute", "1", "--crashes", "2"],
                                      timeoutSeconds: 300)
        let result = try #require(resultLines(run.stdout)["simulate"],
                                  "seed \(seed): no RESULT line\n\(run.stdout)\n\(run.stderr)")
        #expect(run.status == 0, "seed \(seed): exit \(run.status)\n\(run.stderr)")
        #expect(result["converged"] == "1", "seed \(seed) did not converge; replay: shoal-bench simulate --nodes 50 --chunks 500 --seed \(seed) --resets-per-minute 1 --crashes 2\n\(run.stderr)")
        #expect(result["seed"] == "\(seed)" && result["nodes"] == "50" && result["chunks"] == "500")
        #expect(result["digest"]?.count == 64, "digest \(result["digest"] ?? "absent")")
        #expect(positive(result["messages"]) && positive(result["sim_seconds"]))
    }
}
