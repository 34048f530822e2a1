import ArgumentParser

@main
struct LMDBInspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lmdb-inspect",
        abstract: "Inspect, verify, repair and back up a Shoal store.",
        discussion: """
            DIR is a store directory (it holds data.mdb) or a node's data directory (it holds \
            store/data.mdb).

            Every command but `repair` (without --dry-run) opens the store read-only: it \
            creates, migrates and changes nothing, and is safe while a node runs on the store \
            (LMDB readers do not block the writer). `repair` writes: stop the node first.

            Every command takes --json and then prints one JSON document on stdout. Errors are \
            one line on stderr (with --json, also {"error": …} on stdout).

            Exit status: 0 done (verify: clean); 1 problems found (verify, repair, or a chunk \
            absent or damaged); 2 the store cannot be opened or read (no store, missing \
            directory, schema too new, node running during repair, …); 64 usage error.
            """,
        subcommands: [
            Summary.self, Chunks.self, ChunkCommand.self, Intervals.self, Fetch.self, Peers.self,
            Downloads.self, Pins.self, Journal.self, Verify.self, Repair.self, Backup.self,
        ]
    )
}
