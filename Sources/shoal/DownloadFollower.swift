import ShoalAPI

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Set by SIGINT while a command follows a download; read between polls.
nonisolated(unsafe) private var interruptSeen: sig_atomic_t = 0

/// Follows a node's download (`GET /downloads/{id}`) until it ends, drawing its progress in
/// chunks. The node does the work: ending the command (Ctrl-C) ends only the watching, unless
/// `cancelOnInterrupt` asks for `DELETE /downloads/{id}` too.
struct DownloadFollower {
    /// Between two polls: a line a second is what `plain` draws at most, a bar ten times a second;
    /// five polls a second keep the bar moving and cost the node nothing much.
    static let pollIntervalMs: UInt32 = 200
    /// The exit status after Ctrl-C (128 + SIGINT, as a shell reports it).
    static let interruptedStatus: Int32 = 130

    let client: HTTPClient
    let progress: ProgressMode
    let cancelOnInterrupt: Bool
    /// "fetch" (`shoal download --fetch`) or "download" (`shoal downloads start --wait`).
    var label = "fetch"

    /// Polls `started` (the answer of `POST /downloads`) until it ends. Returns the last view
    /// of a completed download; a failed one is `CLIExit.notRetrievable` (5), one cancelled
    /// elsewhere `CLIExit.apiError` (1), Ctrl-C `interruptedStatus` (130).
    func follow(_ started: DownloadView) throws(CommandFailure) -> DownloadView {
        let reporter = ProgressReporter(mode: progress, label: label, total: started.total.map(UInt64.init), unit: .chunks)
        reporter.note((label == "download" ? "download: \(started.id)" : "\(label): download \(started.id)")
                      + (started.root.map { " of file \($0)" } ?? "")
                      + (started.total.map { ", " + ProgressFormat.amount(UInt64($0), .chunks) } ?? ""))
        interruptSeen = 0
        let previous = signal(SIGINT) { _ in
            interruptSeen = 1
            // A second Ctrl-C ends the command at once.
            signal(SIGINT, SIG_DFL)
        }
        defer { signal(SIGINT, previous) }
        // A process started from a thread that blocks signals (as a test runner's threads may)
        // inherits the mask: the handler above would never run.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)

        var view = started
        var lastTotal = started.total
        while true {
            if let done = view.done { reporter.update(UInt64(done), total: view.total.map(UInt64.init)) }
            lastTotal = view.total ?? lastTotal
            switch view.state {
            case "running":
                break
            case "completed":
                if let total = lastTotal { reporter.update(UInt64(total), total: UInt64(total)) }
                reporter.finish()
                return view
            case "failed":
                reporter.abandon()
                let count = view.missingCount ?? view.errors.count
                let first = view.errors.first.map { ", first \($0.address): \($0.reason)" } ?? ""
                throw CommandFailure(CLIExit.notRetrievable,
                                     "download \(view.id) failed: \(ProgressFormat.amount(UInt64(count), .chunks)) could not be fetched\(first)")
            case "cancelled":
                reporter.abandon()
                throw CommandFailure(CLIExit.apiError, "download \(view.id) was cancelled")
            default:
                reporter.abandon()
                throw CommandFailure(CLIExit.unreachable, "GET /downloads/\(view.id): unknown state '\(view.state.prefix(40))'")
            }
            usleep(Self.pollIntervalMs * 1000)
            if interruptSeen != 0 { try interrupted(view.id, reporter) }
            do throws(CommandFailure) {
                let answer = try client.expectSuccess("GET", "/downloads/\(view.id)", statuses: [200])
                view = try decodeAnswer(DownloadView.self, answer.body, from: "GET /downloads/\(view.id)")
            } catch {
                reporter.abandon()
                throw error
            }
            if interruptSeen != 0 { try interrupted(view.id, reporter) }
        }
    }

    private func interrupted(_ id: String, _ reporter: ProgressReporter) throws(CommandFailure) -> Never {
        reporter.abandon()
        guard cancelOnInterrupt else {
            throw CommandFailure(Self.interruptedStatus,
                                 "interrupted; download \(id) goes on on the node (shoal downloads show \(id); shoal downloads cancel \(id))")
        }
        do throws(CommandFailure) {
            _ = try client.expectSuccess("DELETE", "/downloads/\(id)", statuses: [204])
        } catch {
            throw CommandFailure(Self.interruptedStatus, "interrupted; cancelling download \(id) failed: \(error.message ?? "")")
        }
        throw CommandFailure(Self.interruptedStatus, "interrupted; download \(id) cancelled")
    }
}
