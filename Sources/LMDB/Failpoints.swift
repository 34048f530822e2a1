import Locking
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// **Test-only.** Makes a chosen write of the store fail with a chosen `errno`, so tests can
/// see what the store does on an I/O error (`Docs/Decisions/0011-io-errors-and-fsync.md`).
///
/// Three sites can fail: the `pwrite` and the `fdatasync` of the payload slot file, and
/// `mdb_txn_commit` of a write transaction. `arm(.fdatasync, after: 2, errno: EIO)` lets two
/// calls at that site pass and fails the third (and, with `times`, the ones after it). A failed
/// commit is simulated as LMDB reports one: the transaction is aborted, nothing of it is
/// visible, and the errno comes back as LMDB's error code.
///
/// An arming can be scoped to a directory (`under:`): only calls on files in it count and fail,
/// so a test that arms for its own temporary store cannot disturb tests running beside it.
///
/// Nothing is armed unless a test arms it, or the process was started with
/// `SHOAL_FAILPOINTS` set (read once, at the first call of a site): a comma-separated list
/// of `site:after:errno[:times]`, e.g. `SHOAL_FAILPOINTS=fdatasync:3:EIO` (site `pwrite`,
/// `fdatasync` or `commit`; errno `EIO`, `ENOSPC` or a number). Such a process says so on
/// stderr. When nothing is armed a site costs one relaxed atomic load.
public enum _Failpoints {
    public enum Site: String, Sendable, CaseIterable {
        /// `pwrite` of staged payload slots (`SlotFile`).
        case pwrite
        /// `fdatasync` of the slot file before a commit (`SlotFile.sync`).
        case fdatasync
        /// `mdb_txn_commit` of a write transaction (`Environment.write`).
        case commit
    }

    struct Arming {
        var site: Site
        var passesLeft: Int
        var failuresLeft: Int
        var errno: Int32
        /// Directories (as given and canonical) whose files count; empty: every file.
        var scope: [String]

        func covers(_ path: String) -> Bool {
            scope.isEmpty || scope.contains { path == $0 || path.hasPrefix($0 + "/") }
        }
    }

    private static let armings = Locked<[Arming]>([])
    /// How many armings are live. The only thing a site reads when nothing is armed; its first
    /// read arms what `SHOAL_FAILPOINTS` asks for.
    private static let armedCount = Atomic<Int>(_Failpoints.armFromEnvironment())
    /// Faults injected so far, by the directory they were armed for ("" for everywhere), for
    /// tests to check that theirs fired.
    private static let injected = Locked<[String: Int]>([:])

    /// Fails the call at `site` that comes after `passes` calls that pass, and `times - 1` more
    /// after it. With `directory`, only calls on files under it count.
    public static func arm(_ site: Site, after passes: Int, errno code: Int32, times: Int = 1,
                           under directory: String? = nil) {
        precondition(passes >= 0 && times >= 1, "arm(\(site), after: \(passes), times: \(times))")
        var scope: [String] = []
        if let directory {
            scope.append(directory)
            var resolved = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            if realpath(directory, &resolved) != nil {
                let canonical = String(decoding: resolved.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if canonical != directory { scope.append(canonical) }
            }
        }
        _ = armedCount.load(ordering: .relaxed)  // the environment's armings first
        armings.withLock { list in
            list.append(Arming(site: site, passesLeft: passes, failuresLeft: times, errno: code, scope: scope))
            armedCount.store(list.count, ordering: .relaxed)
        }
    }

    /// Disarms what was armed for `directory` (as given to `arm`), or everything when nil.
    public static func disarm(under directory: String? = nil) {
        armings.withLock { list in
            list.removeAll { directory == nil || $0.scope.first == directory }
            armedCount.store(list.count, ordering: .relaxed)
        }
    }

    /// Faults injected so far for armings under `directory` (as given to `arm`), or for
    /// armings without a directory when nil.
    public static func injectedCount(under directory: String? = nil) -> Int {
        injected.withLock { $0[directory ?? "", default: 0] }
    }

    /// The errno the call at `site` on `path` is to fail with, or nil to make the real call.
    @inline(__always)
    public static func fault(_ site: Site, path: String) -> Int32? {
        guard armedCount.load(ordering: .relaxed) > 0 else { return nil }
        return armedFault(site, path: path)
    }

    private static func armedFault(_ site: Site, path: String) -> Int32? {
        armings.withLock { list in
            guard let i = list.firstIndex(where: { $0.site == site && $0.covers(path) }) else { return nil }
            if list[i].passesLeft > 0 {
                list[i].passesLeft -= 1
                return nil
            }
            let code = list[i].errno
            list[i].failuresLeft -= 1
            let key = list[i].scope.first ?? ""
            if list[i].failuresLeft == 0 { list.remove(at: i) }
            armedCount.store(list.count, ordering: .relaxed)
            injected.withLock { $0[key, default: 0] += 1 }
            return code
        }
    }

    // MARK: SHOAL_FAILPOINTS

    private static func armFromEnvironment() -> Int {
        guard let raw = getenv("SHOAL_FAILPOINTS") else { return 0 }
        let text = String(cString: raw)
        guard !text.isEmpty else { return 0 }
        let parsed: [Arming]
        do {
            parsed = try parse(text)
        } catch {
            // A test that sets this and gets no fault would pass for the wrong reason.
            fatalError("SHOAL_FAILPOINTS=\(text): \(error.message)")
        }
        let notice = Array("shoal: SHOAL_FAILPOINTS=\(text): test failpoints armed; writes will fail on purpose\n".utf8)
        _ = notice.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        armings.withLock { $0 = parsed }
        return parsed.count
    }

    struct ParseError: Error { var message: String }

    /// Parses `site:after:errno[:times]`, comma-separated.
    static func parse(_ text: String) throws(ParseError) -> [Arming] {
        var result: [Arming] = []
        for item in text.split(separator: ",") {
            let fields = item.split(separator: ":").map(String.init)
            guard fields.count == 3 || fields.count == 4 else {
                throw ParseError(message: "'\(item)' is not site:after:errno[:times]")
            }
            let site: Site
            switch fields[0] {
            case "pwrite": site = .pwrite
            case "fdatasync": site = .fdatasync
            case "commit", "mdb_txn_commit": site = .commit
            default: throw ParseError(message: "unknown site '\(fields[0])' (pwrite, fdatasync, commit)")
            }
            guard let passes = Int(fields[1]), passes >= 0 else {
                throw ParseError(message: "'\(fields[1])' is not a count of calls to let pass")
            }
            let code: Int32
            switch fields[2] {
            case "EIO": code = EIO
            case "ENOSPC": code = ENOSPC
            case "EDQUOT": code = EDQUOT
            default:
                guard let n = Int32(fields[2]), n > 0 else { throw ParseError(message: "unknown errno '\(fields[2])'") }
                code = n
            }
            let times = fields.count == 4 ? Int(fields[3]) ?? 0 : 1
            guard times >= 1 else { throw ParseError(message: "'\(fields[3])' is not a count of failures") }
            result.append(Arming(site: site, passesLeft: passes, failuresLeft: times, errno: code, scope: []))
        }
        return result
    }
}
