import ArgumentParser

/// Benchmarks and crash tests of Shoal's store, run as a real process.
///
/// Figures are `RESULT name=… key=value …` lines on stdout, in the format of the peer
/// benchmarks in `../shared/peers`, so both can be summarized side by side; progress goes to
/// stderr.
@main
struct ShoalBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shoal-bench",
        abstract: "Benchmarks and crash tests of Shoal's store.",
        subcommands: [StoreBench.self, CrashWriter.self, CrashLoop.self, Sync2Node.self, SyncCrash.self, Flood.self, ErasureBench.self,
                      FilesBench.self, FileAPIBench.self, SlowLink.self, PeersBench.self, SimulateBench.self, ClusterBench.self,
                      RetrievalBench.self, DownloadBench.self, DownloadCrash.self, SimulateFetchBench.self])
}
