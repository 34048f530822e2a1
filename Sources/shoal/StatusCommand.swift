import ArgumentParser

/// `shoal status`: asks a running node's API for `/status` (or `/peers`) and prints the JSON.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Print a running node's status (GET /status) or its peers (GET /peers) as JSON.",
        discussion: CLIExit.readCommandDiscussion
    )

    @OptionGroup var options: APIOptions

    @Flag(help: "Print the connected peers (GET /peers) instead.")
    var peers = false

    func run() throws {
        try runClientCommand { () throws(CommandFailure) in
            let path = peers ? "/peers" : "/status"
            let answer = try options.client(defaultTimeoutSeconds: 10).expectSuccess("GET", path, statuses: [200])
            Terminal.out(jsonLine(answer.body))
        }
    }
}
