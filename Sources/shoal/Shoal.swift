import ArgumentParser

/// `shoal`: the Shoal storage node.
@main
struct Shoal: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shoal",
        abstract: "A peer-to-peer storage node: content-addressed chunks, pull sync, one LMDB store.",
        subcommands: [Start.self, StatusCommand.self]
    )
}
