import ArgumentParser

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `shoal`: the Shoal storage node.
@main
struct Shoal: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shoal",
        abstract: "A peer-to-peer storage node: content-addressed chunks, pull sync, one LMDB store.",
        subcommands: [Start.self, StatusCommand.self, TopologyCommand.self, PeersCommand.self, UploadCommand.self, DownloadCommand.self,
                      DownloadsCommand.self, PinCommand.self]
    )

    /// ArgumentParser's own entry point, except that a usage error of a client command exits
    /// with `CLIExit.usage` (2) instead of 64, the status scripts of HTTP clients expect
    /// (decision 0018); `shoal start` keeps 64.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            if exitCode(for: error) == .validationFailure,
               let subcommand = CommandLine.arguments.dropFirst().first, CLIExit.clientCommands.contains(subcommand) {
                Terminal.err(fullMessage(for: error))
                #if canImport(Glibc)
                Glibc.exit(CLIExit.usage)
                #else
                Darwin.exit(CLIExit.usage)
                #endif
            }
            exit(withError: error)
        }
    }
}
