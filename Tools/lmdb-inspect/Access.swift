import ArgumentParser
import Foundation
import LMDB
import ShoalCore
import ShoalStore

/// Exit statuses, the same for every command (see the root command's help).
enum ExitStatus {
    /// Done; for `verify`, the store is clean.
    static let ok: Int32 = 0
    /// Problems found: `verify` found some, `repair` left some, `chunk` is absent or damaged.
    static let problems: Int32 = 1
    /// The store cannot be opened or read (no store, missing directory, schema too new, …).
    static let cannotOpen: Int32 = 2
    // Usage errors exit with ArgumentParser's `ExitCode.validationFailure` (64, EX_USAGE).
}

/// Where the store is. Every command takes it first.
struct StoreLocation: ParsableArguments {
    @Argument(help: ArgumentHelp(
        "A store directory (holds data.mdb) or a node's data directory (holds store/data.mdb).",
        valueName: "dir"))
    var directory: String
}

/// `--json`, on every command.
struct OutputOptions: ParsableArguments {
    @Flag(help: "Print one JSON document on stdout instead of text.")
    var json = false
}

/// A failure the inspector reports itself: one line on stderr, then a given exit status.
struct InspectFailure: Error {
    var code: String
    var message: String
    var status: Int32

    init(_ code: String, _ message: String, status: Int32 = ExitStatus.cannotOpen) {
        (self.code, self.message, self.status) = (code, message, status)
    }

    init(_ error: StoreError) {
        var message = error.underlying.map { "\(error.message) (\($0))" } ?? error.message
        if error.code == .corrupt { message += "; run `lmdb-inspect verify` for every problem" }
        self.init(error.code.rawValue, Self.oneLine(message))
    }

    /// Messages may quote record contents; keep the report on one line.
    static func oneLine(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline).joined(separator: " ")
    }
}

/// Runs one command's body, turning every failure into a one-line message on stderr (and, with
/// `--json`, an `{"error": …}` document on stdout) and the matching exit status. Nothing below
/// the store is allowed to reach ArgumentParser's generic error path or crash the process.
func runReporting(json: Bool, _ body: () throws -> Int32) throws {
    let status: Int32
    do {
        status = try body()
    } catch let failure as InspectFailure {
        report(failure, json: json)
        throw ExitCode(failure.status)
    } catch let error as StoreError {
        report(InspectFailure(error), json: json)
        throw ExitCode(ExitStatus.cannotOpen)
    } catch let error as ExitCode {
        throw error
    } catch {
        // LMDBError, LMDBDecodingError or a system error escaping a read: the store could
        // not be read as the schema says.
        let failure = InspectFailure(error is LMDBDecodingError ? "corrupt" : "read",
                                     InspectFailure.oneLine(String(describing: error)))
        report(failure, json: json)
        throw ExitCode(failure.status)
    }
    if status != ExitStatus.ok { throw ExitCode(status) }
}

private func report(_ failure: InspectFailure, json: Bool) {
    struct ErrorBody: Encodable { var code: String; var message: String; var exitStatus: Int32 }
    struct ErrorDocument: Encodable { var error: ErrorBody }
    let body = ErrorBody(code: failure.code, message: failure.message, exitStatus: failure.status)
    let finishedListing = Listing.active?.abandon(error: body) ?? false
    if json && !finishedListing { Output.json(ErrorDocument(error: body)) }
    Output.error("\(failure.code): \(failure.message)")
}

extension StoreLocation {
    /// The LMDB directory this location resolves to (`Store.locate`).
    var resolved: String { Store.locate(directory) }

    /// Fails clearly when the path does not exist or is not a directory; `Store` would say only
    /// "holds no data.mdb".
    func checkExists() throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) else {
            throw InspectFailure("notFound", "\(directory): no such file or directory")
        }
        guard isDirectory.boolValue else {
            throw InspectFailure("notADirectory", "\(directory) is not a directory")
        }
    }

    /// Opens the store read-only: never creates, migrates or writes anything, and is safe
    /// beside a live node (LMDB readers do not block its writer).
    func openReadOnly() throws -> Store {
        try checkExists()
        var options = Store.Options(readOnly: true)
        // Map size 0: adopt the size recorded in data.mdb, as `mdb_stat` does, instead of
        // imposing ours. (The wrapper adopts a larger map if the writer grows it later.)
        options.mapSize = 0
        return try Store(directory: directory, options: options)
    }

    /// Runs `body` with the store open read-only and closes it after.
    func withReadOnlyStore<R>(_ body: (Store) throws -> R) throws -> R {
        let store = try openReadOnly()
        defer { store.close() }
        return try body(store)
    }
}

// MARK: Processes sharing the environment

enum LockTable {
    /// The ID of another process that has the LMDB environment in `directory` open, or nil.
    ///
    /// Every process with an LMDB environment open holds a shared POSIX lock on the first byte
    /// of `lock.mdb` (`mdb_env_excl_lock` in mdb.c); asking whether an exclusive lock could be
    /// taken (`F_GETLK`) names one holder. Call it only while this process does not have the
    /// environment open: closing any descriptor of `lock.mdb` drops every POSIX lock this
    /// process holds on it, LMDB's included.
    static func otherUser(of directory: String) -> pid_t? {
        let fd = open(directory + "/lock.mdb", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var lock = flock()
        lock.l_type = Int16(F_WRLCK)
        lock.l_whence = Int16(SEEK_SET)
        lock.l_start = 0
        lock.l_len = 1
        guard fcntl(fd, F_GETLK, &lock) == 0, lock.l_type != Int16(F_UNLCK) else { return nil }
        return lock.l_pid
    }
}

// MARK: Arguments

/// Parses a 32-byte address given as 64 hex digits, or fails as a usage error.
func parseAddress(_ text: String, _ what: String) throws -> Address32 {
    guard let address = Address32(hex: text) else {
        let digits = text.count
        throw ValidationError("\(what) must be 64 hex digits (32 bytes); got \(digits) character\(digits == 1 ? "" : "s"): '\(text.prefix(80))'")
    }
    return address
}

/// `--limit`: at most this many entries; 0 for no limit.
struct LimitOption: ParsableArguments {
    @Option(help: "Print at most this many entries (0: all).")
    var limit: Int = 1000

    func validate() throws {
        guard limit >= 0 else { throw ValidationError("--limit must be 0 (all) or more; got \(limit)") }
    }

    /// The limit as a count (no limit: `Int.max`).
    var count: Int { limit == 0 ? Int.max : limit }
}
