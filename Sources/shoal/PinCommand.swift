import ArgumentParser

/// `shoal pin add|rm|ls|check`: keeps files from eviction and checks they are whole
/// (/pins and /stewardship).
struct PinCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pin",
        abstract: "Pin, unpin, list and check files on a running node.",
        discussion: """
            Exit status: 0 done, 1 the API refused (e.g. rm of a file not pinned; its message on \
            stderr), 2 usage, 3 the API cannot be reached, 5 check found chunks missing. See \
            Docs/CLI.md.
            """,
        subcommands: [Add.self, Remove.self, List.self, Check.self]
    )

    /// `shoal pin add REF`: POST /pins/{ref}.
    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add",
            abstract: "Pin a file: its chunks are never evicted. Prints 'pinned REF' or 'already pinned REF'."
        )

        @OptionGroup var target: PinTarget

        func run() throws {
            try runClientCommand { () throws(CommandFailure) in
                let answer = try target.options.client().expectSuccess("POST", "/pins/\(target.reference.hex)")
                Terminal.out(answer.status == 201 ? "pinned \(target.reference.hex)" : "already pinned \(target.reference.hex)")
            }
        }
    }

    /// `shoal pin rm REF`: DELETE /pins/{ref}.
    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm",
            abstract: "Unpin a file (its chunks may be evicted again). Prints 'unpinned REF'; exit 1 if it was not pinned."
        )

        @OptionGroup var target: PinTarget

        func run() throws {
            try runClientCommand { () throws(CommandFailure) in
                _ = try target.options.client().expectSuccess("DELETE", "/pins/\(target.reference.hex)", statuses: [200, 204])
                Terminal.out("unpinned \(target.reference.hex)")
            }
        }
    }

    /// `shoal pin ls [REF]`: GET /pins, or GET /pins/{ref}.
    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ls",
            abstract: "List the pinned references, one per line; with REF, print that pin's JSON (exit 1 if not pinned)."
        )

        @OptionGroup var options: APIOptions
        @Argument(help: ArgumentHelp("One pin to show.", valueName: "ref"))
        var reference: Reference?

        struct Answer: Decodable {
            var references: [String]
        }

        func run() throws {
            try runClientCommand { () throws(CommandFailure) in
                let client = try options.client()
                if let reference {
                    let answer = try client.expectSuccess("GET", "/pins/\(reference.hex)", statuses: [200])
                    Terminal.out(jsonLine(answer.body))
                    return
                }
                let answer = try client.expectSuccess("GET", "/pins", statuses: [200])
                for reference in try decodeAnswer(Answer.self, answer.body, from: "GET /pins").references {
                    Terminal.out(reference)
                }
            }
        }
    }

    /// `shoal pin check REF`: GET /stewardship/{ref}.
    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check",
            abstract: "Check that every chunk of a file is retrievable; print the API's JSON. Exit 0 if so, 5 if not."
        )

        @OptionGroup var target: PinTarget

        struct Answer: Decodable {
            var isRetrievable: Bool
        }

        func run() throws {
            try runClientCommand { () throws(CommandFailure) in
                let path = "/stewardship/\(target.reference.hex)"
                let answer = try target.options.client().expectSuccess("GET", path, statuses: [200])
                Terminal.out(jsonLine(answer.body))
                if !(try decodeAnswer(Answer.self, answer.body, from: "GET \(path)").isRetrievable) {
                    throw CommandFailure(CLIExit.notRetrievable, nil)
                }
            }
        }
    }
}

/// The API and the file a pin subcommand acts on.
struct PinTarget: ParsableArguments {
    @OptionGroup var options: APIOptions
    @Argument(help: ArgumentHelp("The file's reference: 64 hex digits.", valueName: "ref"))
    var reference: Reference
}

/// A JSON body as one line of output (without its trailing newline).
func jsonLine(_ body: [UInt8]) -> String {
    var text = String(decoding: body, as: UTF8.self)
    while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
    return text
}
