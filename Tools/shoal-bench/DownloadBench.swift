import ArgumentParser
import Foundation
import ShoalCore
import ShoalStore

#if canImport(Glibc)
import Glibc
#endif

/// `shoal-bench download`: a light node downloads chunks that several holders all hold, through
/// `POST /downloads`; then, for comparison, a normal node pulls the same chunks from the same
/// holders by pull sync alone.
struct DownloadBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "download",
        abstract: "A light node downloads C chunks held by H holders (POST /downloads); then a normal node pulls them by sync alone.",
        discussion: """
            Steps: fill H data directories with the same C random 4096-byte chunks (before any \
            clock), start the holders (holder i > 0 told of holder 0) and wait until they are \
            connected to each other and their history streams are done; start a light node D \
            (--light, --peer to every holder), wait until it may ask every holder, then time from \
            POST /downloads (every address) until GET /downloads/{id} says completed. Each \
            holder's share is its /status chunksServed delta over the sum. D is stopped, its \
            store checked (every chunk, lmdb-inspect verify); then a fresh normal node E with \
            --peer to every holder is timed from its ready line until its store holds all C. \
            Prints RESULT name=download chunks holders bytes seconds MBps shares share_min \
            share_max served fetched_twice, and RESULT name=download-vs-sync with both rates, \
            their ratio (download over sync) and the holders' shares of the sync. Exit status 1 \
            when a download fails, a chunk is missing, a store fails verify or a node does not \
            stop cleanly.
            """)

    @Option(help: "Chunks every holder holds and D downloads (4,096-byte payloads).") var chunks = 10_000
    @Option(help: "Holders (1…8).") var holders = 4
    @Option(help: "Seed of the chunks.") var seed: UInt64 = 1
    @Option(help: "Seconds each phase (settling, the download, the sync) may take.") var timeout: Double = 600
    @Option(help: "Scratch directory (default: a fresh one, removed at the end unless the run fails).") var dir: String?
    @Option(help: "Path of the shoal executable (default: beside this one).") var shoal: String?
    @Option(name: .customLong("log-level"), help: "The nodes' log level (their logs are DIR/node-i.log).") var logLevel = "warning"
    @Flag(name: .customLong("no-sync"), help: "Skip the comparison with pull sync.") var noSync = false
    @Flag(help: "Keep the scratch directory.") var keep = false

    func validate() throws {
        guard (1...8).contains(holders) else { throw ValidationError("--holders must be 1…8") }
        guard chunks >= 1 else { throw ValidationError("--chunks must be at least 1") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }

    func run() throws {
        let shoal = self.shoal ?? siblingExecutable("shoal")
        let scratch = try dir ?? Files.makeTemporaryDirectory(in: Files.defaultScratchParent(), prefix: "download")
        if dir != nil { try Files.makeDirectory(scratch) }
        var run = DownloadRun(root: scratch, holders: holders, shoal: shoal, logLevel: logLevel)
        defer { run.killAll() }
        var passed = false
        defer {
            if passed && !keep && dir == nil { Files.removeTree(scratch) }
            if !passed { Output.note("download: data directories and logs kept in \(scratch)") }
        }
        let (addresses, d, before, downloadStarted, ids) = try run.startLightDownload("download", chunks: chunks, seed: seed, timeout: timeout)
        try run.waitCompleted(d, ids: ids, deadline: downloadStarted + timeout, restartedSince: false)
        let downloadSeconds = monotonicSeconds() - downloadStarted
        let deltas = zip(try run.served(), before).map { $0 - $1 }
        let held = d.holds(addresses)?.filter { $0 }.count ?? 0
        let stopD = run.stop(d)
        let verifiedD = verifyWithInspector(d.dataDirectory)

        let bytes = chunks * Chunk.payloadMax
        let served = deltas.reduce(0, +)
        let shares = deltas.map { served > 0 ? Double($0) / Double(served) : 0 }
        var line = ResultLine("download")
        line.add("chunks", chunks)
        line.add("holders", holders)
        line.throughput(bytes: bytes, seconds: downloadSeconds)
        line.add("shares", shares.map(ResultLine.format).joined(separator: ","))
        line.add("share_min", shares.min() ?? 0)
        line.add("share_max", shares.max() ?? 0)
        line.add("served", served)
        line.add("fetched_twice", served - chunks)
        line.add("held", held)
        line.emit()
        guard held == chunks, verifiedD, stopD == .exited(0) else {
            throw BenchError("download: D holds \(held) of \(chunks) chunks, verify \(verifiedD ? "clean" : "failed"), stopped with \(stopD.map { "\($0)" } ?? "?")")
        }

        if !noSync {
            // E, a normal node: pull sync alone, from the same holders.
            let e = run.newNode(light: false)
            let beforeSync = try run.served()
            try run.start(e)
            let syncStarted = monotonicSeconds()
            var counter = StoredCounter(dataDirectory: e.dataDirectory)
            var count = 0
            while monotonicSeconds() - syncStarted < timeout {
                count = counter.count()
                if count >= chunks { break }
                usleep(5_000)
            }
            counter.close()
            let syncSeconds = monotonicSeconds() - syncStarted
            let syncDeltas = zip(try run.served(), beforeSync).map { $0 - $1 }
            let stopE = run.stop(e)
            guard count >= chunks else { throw BenchError("download-vs-sync: E holds \(count) of \(chunks) chunks after \(timeout) s") }
            let syncServed = syncDeltas.reduce(0, +)
            let syncShares = syncDeltas.map { syncServed > 0 ? Double($0) / Double(syncServed) : 0 }
            let downloadRate = Double(bytes) / 1e6 / downloadSeconds, syncRate = Double(bytes) / 1e6 / syncSeconds
            var compare = ResultLine("download-vs-sync")
            compare.add("chunks", chunks)
            compare.add("holders", holders)
            compare.add("download_MBps", downloadRate)
            compare.add("download_seconds", downloadSeconds)
            compare.add("sync_MBps", syncRate)
            compare.add("sync_seconds", syncSeconds)
            compare.add("ratio", downloadRate / syncRate)
            compare.add("sync_shares", syncShares.map(ResultLine.format).joined(separator: ","))
            compare.add("sync_share_min", syncShares.min() ?? 0)
            compare.add("sync_share_max", syncShares.max() ?? 0)
            compare.add("sync_served", syncServed)
            compare.emit()
            guard stopE == .exited(0), verifyWithInspector(e.dataDirectory) else {
                throw BenchError("download-vs-sync: E stopped with \(stopE.map { "\($0)" } ?? "?") or failed verify")
            }
        }
        try run.stopHolders()
        passed = true
    }
}

/// `shoal-bench download-crash`: a light node downloading N chunks is SIGKILLed at random
/// moments and restarted on its data directory; the download resumes by itself.
struct DownloadCrash: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "download-crash",
        abstract: "A light node downloads N chunks from H holders and is SIGKILLed K times, restarted each time; checks what survives.",
        discussion: """
            Steps: fill and start H holders as `download` does; start a light node D with \
            --peer to each; POST /downloads for all N addresses (in parts of at most 65,536, the \
            most one download may name); then K times: wait until D's store holds a seeded random \
            count of chunks between what it held at its (re)start and twice its share of what is \
            left (what is left over the kills left, plus one), SIGKILL D at once, run \
            lmdb-inspect verify on its store, restart it on the same data directory and ports, \
            and check from the \
            outside that every download not ended is shown running with its progress \
            (GET /downloads/{id} and GET /downloads; one that ended before the kill is not \
            resumed, and what the API says of it is only noted). Then wait until \
            every download completed, and count: chunks D's store lacks (lost), chunks served \
            beyond one each (fetched_twice: the holders' chunksServed deltas summed, less N), \
            against bound = K × H × requestsPerPeerMax (8): one batch per peer per crash. Prints \
            RESULT name=download-crash kills kills_during_download chunks holders downloads held \
            lost fetched_twice bound verify_failures resumes_shown resumes_checked seconds (from \
            the first POST until every download completed, kills and restarts included) \
            run_seconds (the whole run, filling the holders included); exit \
            status 1 when a chunk is lost, fetched_twice exceeds the bound, a verify fails, a \
            resumed download cannot be seen, or no kill landed during the download.
            """)

    @Option(help: "Chunks D downloads (4,096-byte payloads).") var chunks = 100_000
    @Option(help: "Holders (1…8), each holding every chunk.") var holders = 2
    @Option(help: "SIGKILLs of D during the download.") var kills = 10
    @Option(help: "Seed of the chunks and the kill moments.") var seed: UInt64 = 1
    @Option(help: "Seconds each phase (settling, waiting for progress, the rest of the download) may take.") var timeout: Double = 900
    @Option(help: "Scratch directory (default: a fresh one, removed at the end unless the run fails).") var dir: String?
    @Option(help: "Path of the shoal executable (default: beside this one).") var shoal: String?
    @Option(name: .customLong("log-level"), help: "The nodes' log level (their logs are DIR/node-i.log).") var logLevel = "warning"
    @Flag(help: "Keep the scratch directory.") var keep = false

    func validate() throws {
        guard (1...8).contains(holders) else { throw ValidationError("--holders must be 1…8") }
        guard chunks >= 1, kills >= 1 else { throw ValidationError("--chunks and --kills must be at least 1") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }

    func run() throws {
        let shoal = self.shoal ?? siblingExecutable("shoal")
        let scratch = try dir ?? Files.makeTemporaryDirectory(in: Files.defaultScratchParent(), prefix: "download-crash")
        if dir != nil { try Files.makeDirectory(scratch) }
        var run = DownloadRun(root: scratch, holders: holders, shoal: shoal, logLevel: logLevel)
        defer { run.killAll() }
        var passed = false
        defer {
            if passed && !keep && dir == nil { Files.removeTree(scratch) }
            if !passed { Output.note("download-crash: data directories and logs kept in \(scratch)") }
        }
        let started = monotonicSeconds()
        let (addresses, d, before, downloadStarted, ids) = try run.startLightDownload("download-crash", chunks: chunks, seed: seed, timeout: timeout)

        var rng = SplitMix64(seed: derivedSeed(seed, 3))
        var killsDuring = 0, verifyFailures = 0, resumesShown = 0, resumesChecked = 0
        var counter = StoredCounter(dataDirectory: d.dataDirectory)
        for kill in 1...kills {
            // The moment: when D's store reaches a random count, drawn so that the kills spread
            // over the download and each lands while it runs.
            let base = counter.count()
            let share = max(1, 2 * (chunks - base) / (kills - kill + 2))
            let target = min(chunks, base + 1 + Int(rng.next() % UInt64(share)))
            let targetDeadline = monotonicSeconds() + timeout
            var reached = base
            while reached < target && monotonicSeconds() < targetDeadline {
                usleep(2_000)
                reached = counter.count()
            }
            counter.close()
            run.kill(d)
            let held = storedCount(d.dataDirectory)
            if held < chunks { killsDuring += 1 }
            let clean = verifyWithInspector(d.dataDirectory)
            if !clean { verifyFailures += 1 }
            try run.start(d)
            let shown = try run.resumedDownloads(d, ids: ids, deadline: monotonicSeconds() + 30)
            resumesChecked += shown.checked
            resumesShown += shown.shown
            Output.note("kill \(kill): at \(reached) stored (aimed at \(target)), D held \(held)/\(chunks) after it"
                        + "\(clean ? "" : ", verify FAILED"); after the restart: \(shown.description)")
        }
        try run.waitCompleted(d, ids: ids, deadline: monotonicSeconds() + timeout, restartedSince: true)
        let seconds = monotonicSeconds() - downloadStarted
        let deltas = zip(try run.served(), before).map { $0 - $1 }
        let stopD = run.stop(d)
        let held = d.holds(addresses)?.filter { $0 }.count ?? 0
        d.closeReader()
        if !verifyWithInspector(d.dataDirectory) { verifyFailures += 1 }
        try run.stopHolders()

        let fetchedTwice = deltas.reduce(0, +) - chunks
        let bound = kills * holders * DownloadLimits().requestsPerPeerMax
        var line = ResultLine("download-crash")
        line.add("kills", kills)
        line.add("kills_during_download", killsDuring)
        line.add("chunks", chunks)
        line.add("holders", holders)
        line.add("downloads", ids.count)
        line.add("held", held)
        line.add("lost", chunks - held)
        line.add("fetched_twice", fetchedTwice)
        line.add("bound", bound)
        line.add("verify_failures", verifyFailures)
        line.add("resumes_shown", resumesShown)
        line.add("resumes_checked", resumesChecked)
        line.add("seconds", seconds)
        line.add("run_seconds", monotonicSeconds() - started)
        line.emit()
        guard held == chunks, fetchedTwice <= bound, verifyFailures == 0, resumesShown == resumesChecked, killsDuring > 0,
              stopD == .exited(0) else {
            throw BenchError("download-crash failed: held \(held)/\(chunks), fetched twice \(fetchedTwice) (bound \(bound)), "
                             + "verify failures \(verifyFailures), resumes shown \(resumesShown) of \(resumesChecked), "
                             + "kills during the download \(killsDuring), D \(stopD.map { "\($0)" } ?? "?")")
        }
        passed = true
    }
}

/// The processes of a download bench: H holders of the same chunks (members 0…H-1), then the
/// downloading nodes (members H, H+1, …), each a `ClusterMember` (its ports kept across restarts).
struct DownloadRun {
    let root: String
    let shoal: String
    let logLevel: String
    let holders: [ClusterMember]
    private(set) var others: [ClusterMember] = []
    /// Whether each downloading node is light (`--light`), by member index.
    private var light: [Int: Bool] = [:]

    static let pollSeconds = 0.025

    init(root: String, holders: Int, shoal: String, logLevel: String) {
        self.root = root
        self.shoal = shoal
        self.logLevel = logLevel
        self.holders = (0..<holders).map { ClusterMember(index: $0, root: root) }
    }

    /// Fills the holders with the same chunks, starts them, and waits until they are connected
    /// to each other and none syncs from another any more (their stores are equal, so nothing
    /// is delivered; what is left are offers). Returns the chunks' addresses.
    func prepare(chunks: Int, seed: UInt64, timeout: Double) throws -> [ChunkAddress] {
        Output.note("filling \(holders.count) holders with \(chunks) chunks …")
        let addresses = try fillNodes(dataDirectories: holders.map(\.dataDirectory), chunks: chunks, seed: seed)
        for holder in holders {
            try holder.start(shoal: shoal, bootstrap: holder.index == 0 ? [] : [holders[0].listen], extra: [], logLevel: logLevel)
            watch(holder)
        }
        let deadline = monotonicSeconds() + timeout
        while monotonicSeconds() < deadline {
            if try holders.allSatisfy({ try settled($0) }) { return addresses }
            usleep(100_000)
        }
        throw BenchError("the holders did not connect to each other and finish their history streams within \(timeout) s")
    }

    /// Connected to every other holder, and every bin it syncs from them has its history done.
    private func settled(_ holder: ClusterMember) throws -> Bool {
        guard let port = holder.process?.apiPort,
              let peers = try JSONSerialization.jsonObject(with: Data(HTTP.get(port: port, path: "/peers"))) as? [[String: Any]] else {
            return false
        }
        guard peers.count >= holders.count - 1 else { return false }
        return peers.allSatisfy { peer in
            let bins = peer["bins"] as? [[String: Any]] ?? []
            return !bins.isEmpty && bins.allSatisfy { $0["historyDone"] as? Bool == true }
        }
    }

    /// A fresh downloading node (not started).
    /// What both benches do first: fill the holders, start D (a light node) and wait until it
    /// may ask every holder, then post the downloads. D, the holders' `chunksServed` before,
    /// when the downloads were posted, and their IDs.
    mutating func startLightDownload(_ label: String, chunks: Int, seed: UInt64, timeout: Double) throws
        -> (addresses: [ChunkAddress], d: ClusterMember, servedBefore: [Int], started: Double, ids: [String]) {
        let started = monotonicSeconds()
        let addresses = try prepare(chunks: chunks, seed: seed, timeout: timeout)
        Output.note("# \(label): \(holders.count) holders of \(chunks) chunks ready in \(ResultLine.format(monotonicSeconds() - started)) s")
        // D, the light node: connected to every holder before the clock starts.
        let d = newNode(light: true)
        try start(d)
        try waitUntilItMayAskEveryHolder(d, deadline: monotonicSeconds() + timeout)
        let before = try served()
        let downloadStarted = monotonicSeconds()
        let ids = try startDownloads(d, addresses, deadline: downloadStarted + timeout)
        return (addresses, d, before, downloadStarted, ids)
    }

    mutating func newNode(light: Bool) -> ClusterMember {
        let member = ClusterMember(index: holders.count + others.count, root: root)
        others.append(member)
        self.light[member.index] = light
        return member
    }

    /// Starts (or restarts) a downloading node with `--peer` to every holder.
    func start(_ member: ClusterMember) throws {
        try member.start(shoal: shoal, bootstrap: holders.map(\.listen), extra: light[member.index] == true ? ["--light"] : [],
                         logLevel: logLevel)
        watch(member)
    }

    /// Waits until the node's retrieval counts every holder as a peer it may ask (a session is
    /// established and the downloader was told of it).
    func waitUntilItMayAskEveryHolder(_ member: ClusterMember, deadline: Double) throws {
        while monotonicSeconds() < deadline {
            if let status = try? member.process?.getJSON("/status"), let retrieval = status["retrieval"] as? [String: Any],
               let peers = retrieval["peers"] as? Int, peers >= holders.count {
                return
            }
            usleep(20_000)
        }
        throw BenchError("\(member.name) did not connect to all \(holders.count) holders")
    }

    /// Every holder's `chunksServed` (since it started; holders are never restarted).
    func served() throws -> [Int] {
        try holders.map { holder in
            guard let status = try holder.process?.getJSON("/status"), let served = status["chunksServed"] as? Int else {
                throw BenchError("\(holder.name): no chunksServed in /status")
            }
            return served
        }
    }

    /// `POST /downloads` for every address, in as few parts of equal size as the downloader's
    /// bound on one download allows; the downloads' ids.
    func startDownloads(_ member: ClusterMember, _ addresses: [ChunkAddress], deadline: Double) throws -> [String] {
        guard let port = member.process?.apiPort else { throw BenchError("\(member.name) is not running") }
        let max = DownloadLimits().chunksPerDownloadMax
        let parts = (addresses.count + max - 1) / max
        let size = (addresses.count + parts - 1) / parts
        var ids: [String] = []
        for start in stride(from: 0, to: addresses.count, by: size) {
            let view = try DownloadAPIClient.start(port: port, addresses: Array(addresses[start..<min(start + size, addresses.count)]),
                                                   deadline: deadline)
            ids.append(view.id)
        }
        if parts > 1 { Output.note("\(addresses.count) chunks in \(parts) downloads of at most \(size) (one download names at most \(max))") }
        return ids
    }

    /// Polls `GET /downloads/{id}` until every download completed. After a restart a download
    /// that ended before it is gone from the API; its record in the store says how it ended.
    func waitCompleted(_ member: ClusterMember, ids: [String], deadline: Double, restartedSince: Bool) throws {
        guard let port = member.process?.apiPort else { throw BenchError("\(member.name) is not running") }
        var open = ids
        while !open.isEmpty {
            guard monotonicSeconds() < deadline else {
                let views = open.compactMap { try? DownloadAPIClient.status(port: port, id: $0, deadline: monotonicSeconds() + 10) }
                throw BenchError("\(open.count) downloads not completed by the deadline: "
                                 + views.map { "\($0.id.prefix(16))… \($0.state) \($0.done ?? -1)/\($0.total ?? -1)" }.joined(separator: ", "))
            }
            var still: [String] = []
            for id in open {
                let view = try DownloadAPIClient.status(port: port, id: id, deadline: deadline)
                switch view?.state {
                case "completed": continue
                case "running": still.append(id)
                case nil:
                    guard restartedSince, storedState(member, id) == .done else {
                        throw BenchError("download \(id.prefix(16))… is unknown to \(member.name) and not done in its store")
                    }
                case let other?:
                    throw BenchError("download \(id.prefix(16))… ended \(other), \(view?.missingCount ?? 0) chunks missing")
                }
            }
            open = still
            if !open.isEmpty { usleep(UInt32(Self.pollSeconds * 1e6)) }
        }
    }

    /// What the API shows of the downloads after a restart: each one still running in the
    /// store must be listed by `GET /downloads` and answer `GET /downloads/{id}` as running
    /// with its progress (or completed, if it ended since). One done in the store before the
    /// restart is not resumed: what the API says of it is noted, not checked.
    func resumedDownloads(_ member: ClusterMember, ids: [String], deadline: Double) throws -> ResumeCheck {
        guard let port = member.process?.apiPort else { throw BenchError("\(member.name) is not running") }
        let listed = Dictionary(try DownloadAPIClient.list(port: port, deadline: deadline).map { ($0.id, $0) }) { a, _ in a }
        var check = ResumeCheck()
        for id in ids {
            let view = try DownloadAPIClient.status(port: port, id: id, deadline: deadline)
            let state = storedState(member, id)
            let shownAs = view.map { "\($0.state) \($0.done.map(String.init) ?? "-")/\($0.total.map(String.init) ?? "-")" } ?? "404"
            if state == .done && view?.state != "running" {
                check.parts.append("\(id.prefix(8)) ended before the restart (GET: \(shownAs), listed: \(listed[id] != nil))")
                continue
            }
            check.checked += 1
            if let view, listed[id] != nil, (view.state == "running" && view.done != nil) || view.state == "completed" {
                check.shown += 1
                check.parts.append("\(id.prefix(8)) \(shownAs)")
            } else {
                check.parts.append("\(id.prefix(8)) NOT SHOWN (GET: \(shownAs), listed: \(listed[id] != nil), "
                                   + "store: \(state.map { "\($0)" } ?? "no record"))")
            }
        }
        return check
    }

    struct ResumeCheck: CustomStringConvertible {
        /// Downloads that should be visible, and those that were.
        var checked = 0
        var shown = 0
        var parts: [String] = []
        var description: String { parts.joined(separator: "; ") }
    }

    /// The state of a download's record in the node's store (read-only), nil without one.
    func storedState(_ member: ClusterMember, _ id: String) -> DownloadRecord.State? {
        guard let key = Address32(hex: id),
              let store = try? Store(directory: member.dataDirectory + "/store", options: Store.Options(readOnly: true)) else { return nil }
        defer { store.close() }
        return (try? store.read { try $0.downloads() })?.first { $0.root == key }?.record.state
    }

    /// SIGTERM to every holder; each must exit 0.
    func stopHolders() throws {
        let pids = holders.compactMap { $0.process?.child.pid }
        for holder in holders { holder.beginStop() }
        defer { for pid in pids { CleanupOnSignal.shared.forget(pid) } }
        for holder in holders {
            if let ended = holder.waitStopped(), ended != .exited(0) { throw BenchError("\(holder.name) stopped with \(ended)") }
        }
    }

    /// SIGTERM, and the exit it ends with (nil when it was not running).
    func stop(_ member: ClusterMember) -> ChildProcess.Termination? {
        let pid = member.process?.child.pid
        member.beginStop()
        defer { if let pid { CleanupOnSignal.shared.forget(pid) } }
        return member.waitStopped()
    }

    /// SIGKILL, as in a power cut.
    func kill(_ member: ClusterMember) {
        let pid = member.process?.child.pid
        member.kill()
        if let pid { CleanupOnSignal.shared.forget(pid) }
    }

    func killAll() {
        for member in holders + others where member.isRunning { kill(member) }
    }

    /// A bench killed by SIGTERM (a CI timeout) or SIGINT kills its nodes first.
    private func watch(_ member: ClusterMember) {
        CleanupOnSignal.shared.install()
        if let pid = member.process?.child.pid { CleanupOnSignal.shared.watch(pid) }
    }
}
