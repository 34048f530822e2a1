import ArgumentParser
import LMDB
import ShoalCore
import ShoalStore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `shoal-bench crash-loop`: kill -9 a writer at random moments and hold the store to what it
/// acknowledged.
///
/// Each cycle starts `crash-writer` on the same directory, reads its `COMMITTED` lines, and
/// SIGKILLs it after a seeded random delay. Then: every batch it printed is regenerated from
/// the seed and must be in the store (every chunk present and re-hashing to its address, every
/// interval seal covered), `lmdb-inspect verify DIR` must exit 0, and no reader slot may be
/// left after the reopen (the dead writer's slots are cleared at open).
struct CrashLoop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crash-loop",
        abstract: "Run crash-writer, SIGKILL it at random moments, and check the store after each kill.",
        discussion: """
            Ends with RESULT name=crash-loop cycles=<N> lost=<batches printed but missing> \
            verify_failures=<n> reader_slots_left=<n> seconds=<s>, then a crash-loop-detail line. \
            Exit status 1 when anything was lost, a check failed, a writer died on its own, or a \
            reader slot was left.
            """)

    @Option(help: "Store directory (created by the first writer if absent).")
    var dir: String

    @Option(help: "Kill cycles to run.")
    var cycles: Int

    @Option(help: "Seed of the writer's batches and of the kill moments.")
    var seed: UInt64 = 1

    @Option(name: .customLong("kill-min-ms"), help: "Earliest kill, milliseconds after the writer starts.")
    var killMinMs = 50

    @Option(name: .customLong("kill-max-ms"), help: "Latest kill, milliseconds after the writer starts.")
    var killMaxMs = 700

    @Option(help: "Concurrent tasks in each writer.")
    var writers = 2

    @Option(name: .customLong("capacity-chunks"),
            help: "Give the store a capacity (evictions and slot reuse happen; chunks below the radius may go).")
    var capacityChunks: UInt64?

    @Option(name: .customLong("inspect"), help: "lmdb-inspect binary (default: beside this executable).")
    var inspectPath: String?

    @Option(name: .customLong("step-timeout"), help: "Seconds any one step (writer exit, inspect) may take.")
    var stepTimeoutSeconds: Double = 120

    func validate() throws {
        guard cycles >= 1 else { throw ValidationError("--cycles must be at least 1") }
        guard killMinMs >= 0 && killMaxMs >= killMinMs else { throw ValidationError("need 0 ≤ --kill-min-ms ≤ --kill-max-ms") }
    }

    /// What the loop has seen so far.
    struct Tally {
        var lost = Set<UInt64>()
        var verifyFailures = 0
        var readerSlotsLeft = 0
        var staleReadersCleared = 0
        var staleSlotsSeen = 0
        var observedCycles = 0
        var writerFailures = 0
        var cyclesWithoutCommit = 0
        var chunksChecked = 0
        var sealsChecked = 0
        var evictedAllowed = 0
        var failed: Bool { !lost.isEmpty || verifyFailures > 0 || readerSlotsLeft > 0 || writerFailures > 0 }
    }

    func run() async throws {
        let started = monotonicSeconds()
        let exe = Files.executablePath()
        let inspect = inspectPath ?? (exe.split(separator: "/", omittingEmptySubsequences: false).dropLast()
            .joined(separator: "/") + "/lmdb-inspect")
        var delays = SplitMix64(seed: derivedSeed(seed, 0xC1A5))
        var ledger = Ledger(plan: CrashPlan(seed: seed))
        var tally = Tally()
        Output.note("# crash-loop: \(cycles) cycles on \(dir), seed \(seed), kill after \(killMinMs)…\(killMaxMs) ms; inspector \(inspect)")

        for cycle in 1...cycles {
            let delayMs = killMinMs + Int(delays.next() % UInt64(killMaxMs - killMinMs + 1))
            var notes: [String] = []
            ledger.startCycle()
            // Every other cycle an observer holds the environment open (read-only, as
            // lmdb-inspect beside a running node) across the kill. Then LMDB does not reset its
            // lock file at the next open, so the dead writer's reader slot and write mutex must be
            // recovered for real: the observer clears the slot, and a second writer must commit
            // while the observer is still open.
            let observer: Store? = cycle % 2 == 0 && Files.exists(dir + "/data.mdb")
                ? try? Store(directory: dir, options: Store.Options(readOnly: true)) : nil

            let child = try ChildProcess(exe, writerArguments())
            child.pump(until: monotonicSeconds() + Double(delayMs) / 1000)
            child.signal(SIGKILL)
            let (ended, inTime) = child.wait(until: monotonicSeconds() + stepTimeoutSeconds)
            if !inTime {
                tally.verifyFailures += 1
                notes.append("writer did not die within \(stepTimeoutSeconds) s of SIGKILL")
            }
            // The writer runs until killed: any other end (a thrown error, the reader's exit 3,
            // a trap) is a failure.
            if ended != .signalled(SIGKILL) {
                tally.writerFailures += 1
                notes.append("writer ended on its own (\(ended)) before the kill:\n\(child.stderrText)")
            }
            ledger.take(child.stdoutLines, tally: &tally, notes: &notes)
            if ledger.thisCycle.isEmpty { tally.cyclesWithoutCommit += 1 }

            var observed = ""
            if let observer {
                observed = observe(observer, exe: exe, ledger: &ledger, tally: &tally, notes: &notes)
                observer.close()
            }

            // Reopen as a node would after a crash, and hold the store to every printed batch:
            // this cycle's in full, earlier cycles' by presence.
            let checkStart = monotonicSeconds()
            var staleCleared = 0, slotsLeft = 0
            do {
                let store = try Store(directory: dir, options: Store.Options(overlay: CrashPlan.overlay,
                                                                             capacityChunks: capacityChunks))
                // Closed on every path: the next cycle's writer and this process's next open need it.
                defer { store.close() }
                staleCleared = store.environment.staleReadersCleared
                slotsLeft = store.environment.readers().count
                notes += try check(store, ledger.batches(ledger.thisCycle), full: true, tally: &tally)
                notes += try check(store, ledger.batches(ledger.earlier), full: false, tally: &tally)
                slotsLeft = max(slotsLeft, store.environment.readers().count)
            } catch {
                tally.verifyFailures += 1
                notes.append("reopening or reading the store failed: \(error)")
            }
            tally.staleReadersCleared += staleCleared
            tally.readerSlotsLeft += slotsLeft
            if slotsLeft > 0 { notes.append("\(slotsLeft) reader slot(s) left after the reopen") }

            let inspected = inspectVerify(inspect)
            if !inspected.ok {
                tally.verifyFailures += 1
                notes.append("lmdb-inspect verify: \(inspected.summary)")
            }
            Output.note("# cycle \(cycle)/\(cycles): killed after \(delayMs) ms (\(ended)), \(ledger.thisCycle.count) batches printed "
                        + "(\(ledger.printed.count) in all), \(observed)stale readers cleared at reopen \(staleCleared), "
                        + "reader slots left \(slotsLeft), check \(ResultLine.format(monotonicSeconds() - checkStart)) s, "
                        + "inspect \(inspected.ok ? inspected.summary : "FAILED")"
                        + (tally.lost.isEmpty ? "" : ", LOST so far \(tally.lost.count)"))
            for note in notes { Output.note("#   \(note)") }
        }
        let printed = ledger.printed

        // Last, every printed batch in full once more.
        do {
            let store = try Store(directory: dir, options: Store.Options(overlay: CrashPlan.overlay,
                                                                         capacityChunks: capacityChunks))
            defer { store.close() }
            for note in try check(store, printed.keys.sorted().compactMap { printed[$0] }, full: true, tally: &tally) {
                Output.note("#   final check: \(note)")
            }
        } catch {
            tally.verifyFailures += 1
            Output.note("#   final check: reopening or reading the store failed: \(error)")
        }

        var result = ResultLine("crash-loop")
        result.add("cycles", cycles)
        result.add("lost", tally.lost.count)
        result.add("verify_failures", tally.verifyFailures)
        result.add("reader_slots_left", tally.readerSlotsLeft)
        result.add("seconds", monotonicSeconds() - started)
        result.emit()
        var detail = ResultLine("crash-loop-detail")
        detail.add("batches", printed.count)
        detail.add("chunks", printed.values.reduce(0) { $0 + $1.addresses.count })
        detail.add("chunks_checked", tally.chunksChecked)
        detail.add("seals_checked", tally.sealsChecked)
        detail.add("evicted_allowed", tally.evictedAllowed)
        detail.add("observed_cycles", tally.observedCycles)
        detail.add("stale_slots_seen", tally.staleSlotsSeen)
        detail.add("stale_readers_cleared", tally.staleReadersCleared)
        detail.add("writer_failures", tally.writerFailures)
        detail.add("cycles_without_commit", tally.cyclesWithoutCommit)
        detail.add("seed", seed)
        detail.emit()
        if tally.failed { throw ExitCode(1) }
    }

    private func writerArguments(batches: Int? = nil) -> [String] {
        var arguments = ["crash-writer", "--dir", dir, "--seed", String(seed), "--writers", String(writers)]
        if let capacityChunks { arguments += ["--capacity-chunks", String(capacityChunks)] }
        if let batches { arguments += ["--batches", String(batches), "--no-reader"] }
        return arguments
    }

    /// With `observer` open across the kill: counts the dead writer's reader slots, clears them
    /// (`mdb_reader_check`), requires none left, then runs a writer for one batch while the
    /// observer still holds the environment (it must take over the dead writer's write mutex),
    /// and checks this cycle's batches through the observer's own handle.
    private func observe(_ observer: Store, exe: String, ledger: inout Ledger, tally: inout Tally,
                         notes: inout [String]) -> String {
        let me = Int(getpid())
        let slots = observer.environment.readers()
        let stale = slots.filter { $0.pid != me && kill(pid_t($0.pid), 0) != 0 && errno == ESRCH }.count
        var cleared = 0
        do {
            cleared = try observer.environment.clearStaleReaders()
        } catch {
            tally.verifyFailures += 1
            notes.append("observer: mdb_reader_check failed: \(error)")
        }
        let left = observer.environment.readers().count
        tally.staleSlotsSeen += stale
        tally.staleReadersCleared += cleared
        tally.readerSlotsLeft += left
        tally.observedCycles += 1
        if left > 0 { notes.append("observer: \(left) reader slot(s) left after mdb_reader_check: \(observer.environment.readers())") }

        var followUp = "failed"
        do {
            let child = try ChildProcess.run(exe, writerArguments(batches: 1), timeoutSeconds: stepTimeoutSeconds)
            if child.termination == .exited(0) && child.stdoutLines.count == 1 {
                followUp = "ok"
            } else {
                tally.writerFailures += 1
                notes.append("observer: a writer beside the observer ended \(child.termination!) with "
                             + "\(child.stdoutLines.count) batches (want exit 0, 1 batch; bound \(stepTimeoutSeconds) s):\n\(child.stderrText)")
            }
            ledger.take(child.stdoutLines, tally: &tally, notes: &notes)
        } catch {
            tally.writerFailures += 1
            notes.append("observer: could not run a writer: \(error)")
        }
        do {
            notes += try check(observer, ledger.batches(ledger.thisCycle), full: true, tally: &tally)
        } catch {
            tally.verifyFailures += 1
            notes.append("observer: reading the store failed: \(error)")
        }
        return "observer saw \(stale) dead reader slot(s), cleared \(cleared), left \(left), next writer \(followUp); "
    }

    /// Every batch a writer printed, by number, each checked against the plan when read.
    struct Ledger {
        let plan: CrashPlan
        private(set) var printed: [UInt64: CrashPlan.Batch] = [:]
        private(set) var thisCycle: [UInt64] = []

        init(plan: CrashPlan) { self.plan = plan }

        mutating func startCycle() { thisCycle = [] }

        var earlier: [UInt64] {
            let now = Set(thisCycle)
            return printed.keys.filter { !now.contains($0) }.sorted()
        }

        func batches(_ numbers: [UInt64]) -> [CrashPlan.Batch] { numbers.compactMap { printed[$0] } }

        /// Takes a writer's complete stdout lines: each must be a `COMMITTED` claim that matches
        /// the plan, and no batch number may come twice.
        mutating func take(_ lines: [Substring], tally: inout Tally, notes: inout [String]) {
            for line in lines {
                guard let claim = CrashPlan.Claim(line) else {
                    tally.verifyFailures += 1
                    notes.append("unparseable writer line: \(line)")
                    continue
                }
                let batch = plan.batch(claim.number)
                if CrashPlan.Claim(batch) != claim {
                    tally.verifyFailures += 1
                    notes.append("writer's batch \(claim.number) differs from the plan (seed \(plan.seed)): \(line)")
                    continue
                }
                if printed[claim.number] != nil {
                    // A restarted writer numbers after the largest journaled batch: a printed
                    // number coming again means its journal entry was lost.
                    tally.lost.insert(claim.number)
                    notes.append("batch \(claim.number) printed twice: its journal entry did not survive")
                }
                printed[claim.number] = batch
                thisCycle.append(claim.number)
            }
        }
    }

    /// Checks `batches` in one snapshot. `full`: every chunk re-read and re-hashed
    /// (`get(verify: true)`), every seal covered; otherwise presence only. Returns problems;
    /// a batch with any is recorded as lost.
    private func check(_ store: Store, _ batches: [CrashPlan.Batch], full: Bool, tally: inout Tally) throws -> [String] {
        let capacityMode = capacityChunks != nil
        var problems: [String] = []
        var local = tally
        try store.read { r in
            let radius = Int(try r.radius())
            for batch in batches {
                var missing = 0, damaged = 0, sealsMissing = 0
                for address in batch.addresses {
                    local.chunksChecked += 1
                    let present: Bool
                    if full {
                        do {
                            present = try r.chunk(address, verify: true) != nil
                        } catch {
                            damaged += 1
                            problems.append("batch \(batch.number): chunk \(address) unreadable: \(error)")
                            continue
                        }
                    } else {
                        present = try r.has(address)
                    }
                    if !present {
                        if capacityMode && Proximity.bin(of: address, relativeTo: store.overlay) < radius {
                            local.evictedAllowed += 1
                        } else {
                            missing += 1
                        }
                    }
                }
                // Eviction resets intervals, so seals are held only without a capacity.
                if full && !capacityMode {
                    for seal in batch.seals {
                        local.sealsChecked += 1
                        let record = try r.intervals(peer: seal.peer, bin: seal.bin)
                        if record?.epoch != seal.epoch || !(record?.set.contains(seal.range) ?? false) { sealsMissing += 1 }
                    }
                }
                if missing + damaged + sealsMissing > 0 {
                    local.lost.insert(batch.number)
                    problems.append("batch \(batch.number) LOST: \(missing) chunks missing, \(damaged) damaged, "
                                    + "\(sealsMissing) seals missing (of \(batch.addresses.count) chunks, \(batch.seals.count) seals)")
                }
            }
        }
        tally = local
        return problems
    }

    /// Runs `lmdb-inspect verify DIR`; ok only on exit 0.
    private func inspectVerify(_ inspect: String) -> (ok: Bool, summary: String) {
        guard access(inspect, X_OK) == 0 else { return (false, "\(inspect) not found or not executable") }
        do {
            let child = try ChildProcess.run(inspect, ["verify", dir], timeoutSeconds: stepTimeoutSeconds)
            let t = child.termination!
            if t == .exited(0) { return (true, "exit 0") }
            let output = (String(decoding: child.stdout, as: UTF8.self) + child.stderrText)
                .split(separator: "\n").suffix(20).joined(separator: "\n    ")
            return (false, "\(t) (bound \(stepTimeoutSeconds) s):\n    \(output)")
        } catch {
            return (false, "could not run: \(error)")
        }
    }
}
