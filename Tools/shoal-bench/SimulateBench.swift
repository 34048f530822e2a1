import ArgumentParser
import ShoalCore
import ShoalSimulation

/// `shoal-bench simulate`: many nodes' machines in a deterministic, seeded simulation.
struct SimulateBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Simulate a network of Shoal nodes from one seed until it converges (Docs/Simulation.md).",
        discussion: """
            Prints one line:
              RESULT name=simulate nodes=N chunks=C seed=S converged=0|1 sim_seconds=… wall_seconds=…
                     messages=… chunks_delivered_twice=… digest=<hex> …
            The same seed and options print the same digest. Exits 1 when the run did not
            converge, after printing its seed and what failed to stderr.
            """)

    @Option(help: "Nodes.") var nodes = 100
    @Option(help: "Chunks uploaded to random nodes early in the run.") var chunks = 1_000
    @Option(help: "Seed (default: a random one, printed).") var seed: UInt64?
    @Option(name: .customLong("latency-ms"), help: "One-way link latency range, e.g. 1-50.") var latency = "1-50"
    @Option(name: .customLong("bandwidth-kbps"), help: "Link bandwidth each way in kilobytes per second (default unlimited).")
    var bandwidth: UInt64?
    @Option(name: .customLong("resets-per-minute"), help: "Connection resets per node and minute while faults last.")
    var resetsPerMinute: Double = 0
    @Option(help: "Cut a share of nodes off: START-END:FRACTION in seconds, e.g. 10-30:0.25 (repeatable).")
    var partition: [String] = []
    @Option(help: "Nodes that crash (between store writes) and restart.") var crashes = 0
    @Option(name: .customLong("faults-until"), help: "Resets and crashes happen until this simulated second.")
    var faultsUntil: Double = 30
    @Option(name: .customLong("max-sim-seconds"), help: "Give up (not converged) at this simulated time.")
    var maxSimSeconds: UInt64 = 600
    @Flag(name: .customLong("no-invariants"), help: "Do not check every machine's invariants after every event.")
    var noInvariants = false

    func run() throws {
        let seed = self.seed ?? UInt64.random(in: 1...UInt64(UInt32.max))
        var config = SimulationConfig(nodes: nodes, chunks: chunks, seed: seed)
        let bounds = latency.split(separator: "-").compactMap { UInt64($0) }
        guard bounds.count == 2, bounds[0] <= bounds[1] else { throw ValidationError("bad --latency-ms \(latency)") }
        guard nodes >= 1, chunks >= 0 else { throw ValidationError("--nodes must be at least 1") }
        config.latencyMs = bounds[0]...bounds[1]
        config.bandwidthBytesPerMs = bandwidth
        config.resetsPerMinute = resetsPerMinute
        config.crashes = crashes
        config.faultsUntilMs = UInt64(faultsUntil * 1000)
        config.maxSimSeconds = maxSimSeconds
        config.checkInvariants = !noInvariants
        for text in partition {
            guard let p = SimulationConfig.Partition(parsing: text) else { throw ValidationError("bad --partition \(text)") }
            config.partitions.append(p)
        }
        Output.note("simulate: \(nodes) nodes, \(chunks) chunks, seed \(seed)")
        let simulator = Simulator(config)
        let (report, seconds) = timed { simulator.run() }
        let c = report.counters
        var line = ResultLine("simulate")
        line.add("nodes", nodes)
        line.add("chunks", chunks)
        line.add("seed", seed)
        line.add("converged", report.converged ? 1 : 0)
        line.add("sim_seconds", Double(report.simMs) / 1000)
        line.add("wall_seconds", seconds)
        line.add("messages", c.messages)
        line.add("chunks_delivered_twice", c.chunksDeliveredTwice)
        line.add("events", c.events)
        line.add("connections", c.connections)
        line.add("dials", c.dials)
        line.add("dials_failed", c.dialsFailed)
        line.add("pruned", c.pruned)
        line.add("depth_changes", c.depthChanges)
        line.add("resets", c.resets)
        line.add("crashes", c.crashes)
        line.add("writes_lost", c.writesLost)
        line.add("seals_skipped", c.sealsSkipped)
        line.add("penalties", c.penalties)
        line.add("drops", c.drops.values.reduce(0, +))
        line.add("digest", report.digest)
        line.emit()
        if !c.drops.isEmpty {
            Output.note("peers dropped for faults: " + c.drops.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        }
        guard report.converged else {
            Output.note("not converged (seed \(seed)); replay with the same options and --seed \(seed):")
            for failure in report.failures { Output.note("  \(failure)") }
            throw ExitCode(1)
        }
    }
}
