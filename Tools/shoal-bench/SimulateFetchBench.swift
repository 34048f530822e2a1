import ArgumentParser
import ShoalCore
import ShoalSimulation

/// `shoal-bench simulate-fetch`: retrieval and downloads over hundreds of simulated nodes with
/// slow, lossy, lying and vanishing peers, from one seed (Docs/Simulation-Fetch.md).
struct SimulateFetchBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate-fetch",
        abstract: "Simulate retrieval and downloads over many nodes with faulty peers, and check them (Docs/Simulation-Fetch.md).",
        discussion: """
            Prints one line:
              RESULT name=simulate-fetch nodes=N seed=S retrievals=… retrieved=… retrievable=…
                     retrievable_retrieved=… failed=… hops_p50=… hops_max=… downloads=… completed=…
                     violations=V seconds=… digest=<hex> …
            The same seed and options print the same digest. Exits 1 when any check has a
            violation, after printing the seed and the first violations of each check to stderr.
            """)

    @Option(help: "Nodes.") var nodes = 300
    @Option(help: "Distinct chunks, each held by the --replication nodes closest to it.") var chunks = 3_000
    @Option(help: "Holders per chunk.") var replication = 4
    @Option(help: "Retrievals of random chunks at random nodes.") var retrievals = 2_000
    @Option(help: "Nodes that download (honest), one download each.") var downloaders = 4
    @Option(name: .customLong("download-chunks"), help: "Chunks per download.") var downloadChunks = 100
    @Option(help: "Seed (default: a random one, printed).") var seed: UInt64?
    @Option(help: "Share of slow nodes.") var slow = 0.05
    @Option(help: "Share of lossy nodes.") var lossy = 0.05
    @Option(help: "Share of lying nodes.") var lying = 0.05
    @Option(help: "Share of vanishing nodes.") var vanishing = 0.05
    @Option(name: .customLong("loss-rate"), help: "Share of messages a lossy node drops.") var lossRate = 0.3
    @Flag(name: .customLong("no-invariants"), help: "Do not check the machines' invariants after every event.")
    var noInvariants = false

    func run() throws {
        let seed = self.seed ?? UInt64.random(in: 1...UInt64(UInt32.max))
        var config = FetchSimulationConfig(nodes: nodes, chunks: chunks, retrievals: retrievals, seed: seed)
        config.replication = replication
        config.downloaders = downloaders
        config.chunksPerDownload = downloadChunks
        config.slowFraction = slow
        config.lossyFraction = lossy
        config.lyingFraction = lying
        config.vanishingFraction = vanishing
        config.lossRate = lossRate
        config.checkInvariants = !noInvariants
        if let problem = config.problem { throw ValidationError(problem) }
        Output.note("simulate-fetch: \(nodes) nodes, \(chunks) chunks, \(retrievals) retrievals, \(downloaders) downloads, seed \(seed)")
        let simulator = FetchSimulator(config)
        let (report, seconds) = timed { simulator.run() }
        let c = report.counters
        var line = ResultLine("simulate-fetch")
        line.add("nodes", nodes)
        line.add("seed", seed)
        line.add("retrievals", report.retrievals)
        line.add("local", report.local)
        line.add("retrieved", report.retrieved)
        line.add("retrievable", report.retrievable)
        line.add("retrievable_retrieved", report.retrievableRetrieved)
        line.add("failed", report.failed)
        line.add("concurrent", report.concurrent)
        line.add("hops_p50", report.hopsP50)
        line.add("hops_max", report.hopsMax)
        line.add("downloads", report.downloads)
        line.add("completed", report.downloadsCompleted)
        line.add("downloads_failed", report.downloadsFailed)
        line.add("download_chunks", report.downloadChunks)
        line.add("download_chunks_missing", report.downloadChunksMissing)
        line.add("download_chunks_missing_honest_hint", report.downloadChunksMissingHonestHint)
        line.add("download_longest_s", Double(report.downloadLongestMs) / 1000)
        line.add("download_requests_peak", report.downloadRequestsPeak)
        line.add("download_per_peer_peak", report.downloadPerPeerPeak)
        for (name, list) in report.violations.all { line.add(name, list.count) }
        line.add("violations", report.violations.total)
        line.add("loops_widened", report.widenedLoops.count)
        line.add("sim_seconds", Double(report.simMs) / 1000)
        line.add("seconds", seconds)
        line.add("events", c.events)
        line.add("messages", c.messages)
        line.add("messages_lost", c.messagesLost)
        line.add("faults", c.retrievalFaults + c.downloadFaults)
        line.add("presence_queries", c.presenceQueries)
        line.add("digest", report.digest)
        line.emit()
        Output.note("kinds: " + report.kinds.map { "\($0.kind)=\($0.nodes)" }.joined(separator: " "))
        if !report.failureReasons.isEmpty {
            Output.note("failed retrievals: " + report.failureReasons.map { "\($0.reason)=\($0.count)" }.joined(separator: " "))
        }
        if !c.downloadChunkFailures.isEmpty {
            Output.note("download chunks failed: " + c.downloadChunkFailures.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        }
        if !report.widenedLoops.isEmpty {
            Output.note("loops through a widened fetch (known issue, RetrievalPathTests): \(report.widenedLoops.count), e.g.")
            for example in report.widenedLoops.examples.prefix(2) { Output.note("  \(example)") }
        }
        guard report.violations.total == 0 else {
            Output.note("\(report.violations.total) violations (seed \(seed)); replay with the same options and --seed \(seed):")
            for (name, list) in report.violations.all where !list.isEmpty {
                Output.note("  \(name): \(list.count)")
                for example in list.examples { Output.note("    \(example)") }
            }
            throw ExitCode(1)
        }
    }
}
