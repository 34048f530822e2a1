import ArgumentParser
import Foundation
import LMDB
import ShoalCore
import ShoalStore

// MARK: verify

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the whole store; list every problem found.",
        discussion: """
            Re-hashes every chunk's payload against its address, checks chunks ↔ pull both ways, \
            payload slots (in range, used once, used or free), cursors, interval sets, the fetch \
            set, and that every record decodes. Read-only and safe on a live node: it reads one \
            snapshot.

            Prints one problem per line (kind [database key]: detail), then a summary line. Exit \
            status 0 clean, 1 problems found, 2 the store cannot be opened.
            """)

    @OptionGroup var location: StoreLocation
    @OptionGroup var output: OutputOptions

    func run() throws {
        try runReporting(json: output.json) {
            let (directory, guardProblem, report) = try location.withReadOnlyStore { store in
                if let problem = try SlotBounds.implausibleSlotsNext(store) { return (store.directory, Optional(problem), VerifyReport?.none) }
                return (store.directory, nil, try store.verify())
            }
            guard let report else {
                let problem = guardProblem!
                if output.json {
                    Output.json(GuardDocument(directory: directory, clean: false, problems: [problem]))
                } else {
                    Output.line(problem.description)
                    Output.line("1 problem: \(directory); nothing else could be checked")
                }
                return ExitStatus.problems
            }
            if output.json {
                Output.json(VerifyDocument(directory: directory, report: report))
            } else {
                for problem in report.problems { Output.line(InspectFailure.oneLine(problem.description)) }
                Output.line(Verify.summaryLine(report, directory: directory))
            }
            return report.isClean ? ExitStatus.ok : ExitStatus.problems
        }
    }

    static func summaryLine(_ r: VerifyReport, directory: String) -> String {
        let checked = [
            Format.count(r.chunksChecked, "chunk"), Format.count(r.pullEntriesChecked, "pull entry", "pull entries"),
            Format.count(r.freeSlotsChecked, "free slot") + " (of \(r.slotsNext) handed out)",
            Format.count(r.intervalRecordsChecked, "interval record"), Format.count(r.fetchEntriesChecked, "fetch entry", "fetch entries"),
            Format.count(r.peerRecordsChecked, "peer"), Format.count(r.downloadRecordsChecked, "download"),
            Format.count(r.journalEntriesChecked, "journal entry", "journal entries"),
        ].joined(separator: ", ")
        let verdict = r.isClean ? "clean" : Format.count(r.problems.count, "problem")
        return "\(verdict): \(directory) (snapshot \(r.transactionID)); checked \(checked)"
    }
}

/// A verify report as one JSON object: the report's own members plus `directory` and `clean`.
struct VerifyDocument: Encodable {
    var directory: String
    var report: VerifyReport

    private enum Keys: String, CodingKey { case directory, clean }

    func encode(to encoder: any Encoder) throws {
        try report.encode(to: encoder)
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(directory, forKey: .directory)
        try container.encode(report.isClean, forKey: .clean)
    }
}

// MARK: repair

struct Repair: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mend what verify finds. Stop the node first; run with --dry-run first.",
        discussion: """
            With --dry-run, prints the plan and changes nothing (read-only; safe on a live node). \
            Without it, opens the store writable and applies the plan in one LMDB transaction \
            (all of it or none), then verifies again. The node must be stopped: repair refuses \
            to run while another process has the store open.

            Repair drops chunks that cannot be trusted (payload does not re-hash, slot missing, \
            record undecodable) together with the synced intervals that may cover them, so pull \
            sync fetches them again; it rebuilds index entries and cursors from the chunks that \
            check out, and returns unaccounted payload slots to the free list.

            Exit status: --dry-run 0 nothing to do, 1 actions planned; repair 0 clean after \
            repair, 1 problems remain; 2 the store cannot be opened or is in use.
            """)

    @OptionGroup var location: StoreLocation
    @Flag(help: "Print the plan; change nothing.") var dryRun = false
    @OptionGroup var output: OutputOptions

    struct Document: Encodable {
        var directory: String
        var dryRun: Bool
        var plan: RepairPlan
        /// Verify after the repair (not on a dry run).
        var verifyAfter: VerifyReport?
        var cleanAfter: Bool?
    }

    func run() throws {
        try runReporting(json: output.json) {
            try location.checkExists()
            if !dryRun, let pid = LockTable.otherUser(of: location.resolved) {
                throw InspectFailure("inUse", "\(location.resolved) is open by process \(pid); stop the node before repairing (--dry-run is safe while it runs)")
            }
            // A read-only pass first: it refuses what is not a store, a newer schema, or a store
            // needing migration without writing anything; makes the plan; and reads the
            // configured capacity, so that the writable open below leaves it as it was.
            let (directory, capacity, guardProblem, plan) = try location.withReadOnlyStore { store in
                if let problem = try SlotBounds.implausibleSlotsNext(store) {
                    return (store.directory, UInt64(0), Optional(problem), RepairPlan?.none)
                }
                return (store.directory, try store.read { try $0.capacityChunks() }, nil, try store.repairPlan())
            }
            guard let plan else {
                // Repair plans from a verify pass, which cannot run on this store.
                let problem = guardProblem!
                if output.json {
                    Output.json(GuardDocument(directory: directory, clean: false, problems: [problem]))
                } else {
                    Output.line("cannot repair: " + problem.description)
                }
                return ExitStatus.problems
            }
            if dryRun || (plan.isEmpty && plan.unrepairable.isEmpty) {
                // Nothing to do is reported without opening the store for writing at all.
                print(Document(directory: directory, dryRun: dryRun, plan: plan))
                return plan.isEmpty && plan.unrepairable.isEmpty ? ExitStatus.ok : ExitStatus.problems
            }
            // Again: the read-only pass may have taken long enough for a node to start.
            if let pid = LockTable.otherUser(of: directory) {
                throw InspectFailure("inUse", "\(directory) is open by process \(pid); stop the node before repairing (--dry-run is safe while it runs)")
            }
            let store = try Repair.openWritable(directory, capacity: capacity)
            defer { store.close() }
            let applied = try store.repair()
            let after = try store.verify()
            print(Document(directory: directory, dryRun: false, plan: applied, verifyAfter: after, cleanAfter: after.isClean))
            return after.isClean ? ExitStatus.ok : ExitStatus.problems
        }
    }

    /// The writer lock closes the gap between the check above and this open: a node that
    /// opened the store meanwhile holds it, and a node that starts later is refused.
    private static func openWritable(_ directory: String, capacity: UInt64) throws -> Store {
        let options = Store.Options(capacityChunks: capacity == 0 ? nil : capacity)
        let opened: Result<Store, StoreError> = Result { () throws(StoreError) in try Store(directory: directory, options: options) }
        if case .failure(let error) = opened, error.code == .inUse {
            throw InspectFailure("inUse", "\(error.message) (--dry-run is safe while it runs)")
        }
        return try opened.get()
    }

    private func print(_ d: Document) {
        if output.json {
            Output.json(d)
            return
        }
        for action in d.plan.actions { Output.line(InspectFailure.oneLine(action.description)) }
        for problem in d.plan.unrepairable { Output.line("cannot repair: " + InspectFailure.oneLine(problem.description)) }
        let actions = Format.count(d.plan.actions.count, "action")
        let from = "from " + Format.count(d.plan.problemsFound, "problem")
        if d.plan.isEmpty && d.plan.unrepairable.isEmpty && d.plan.transactionID == 0 {
            Output.line("nothing to repair: \(d.directory)")
        } else if d.dryRun {
            Output.line("dry run: \(actions) planned \(from) in \(d.directory); nothing changed")
        } else {
            Output.line("repaired \(d.directory): \(actions) applied \(from) in transaction \(d.plan.transactionID)")
            if let after = d.verifyAfter {
                for problem in after.problems { Output.line("still: " + InspectFailure.oneLine(problem.description)) }
                Output.line("after repair, " + Verify.summaryLine(after, directory: d.directory))
            }
        }
    }
}

// MARK: backup

struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a compacted copy of the store to a new directory, then verify the copy.",
        discussion: """
            The copy is taken from one read snapshot, so it is safe on a live node. Payloads are \
            renumbered into dense slots and free space is left behind; epoch, overlay, bin IDs, \
            cursors and sync records are kept, so the copy is the same store. DEST must not exist \
            or be empty. A copy interrupted half-way is not marked as a store; remove it and run \
            again.

            Exit status: 0 copy written and verified clean, 1 the copy has problems (verify the \
            source), 2 the store cannot be opened or the copy cannot be written.
            """)

    @OptionGroup var location: StoreLocation
    @Argument(help: ArgumentHelp("Directory to write the copy to (must not exist, or be empty).", valueName: "dest"))
    var destination: String
    @Flag(help: "Do not verify the copy after writing it.") var noVerify = false
    @OptionGroup var output: OutputOptions

    struct Document: Encodable {
        var source: String
        var backup: BackupReport
        /// Verify of the copy (unless --no-verify).
        var copyVerify: VerifyReport?
        var copyClean: Bool?
    }

    func run() throws {
        try runReporting(json: output.json) {
            try location.checkExists()
            if let entries = try? FileManager.default.contentsOfDirectory(atPath: destination), !entries.isEmpty {
                throw InspectFailure("destinationNotEmpty", "\(destination) is not empty; back up into a new directory")
            }
            let (source, report) = try location.withReadOnlyStore { store in
                if let damage = try SlotBounds.firstRecordOutOfBounds(store) {
                    throw InspectFailure("corrupt", "\(damage); a backup would copy the damage: run `lmdb-inspect verify` and `repair` first (or, with the node stopped, copy the directory)")
                }
                return (store.directory, try store.backup(to: destination))
            }
            var document = Document(source: source, backup: report)
            if !noVerify {
                let copy = StoreLocation(directory: destination)
                document.copyVerify = try copy.withReadOnlyStore { try $0.verify() }
                document.copyClean = document.copyVerify?.isClean
            }
            if output.json {
                Output.json(document)
            } else {
                Output.line("backed up \(source) (snapshot \(report.transactionID)) to \(report.destination): "
                            + "\(report.chunks) chunks, \(report.payloadBytes) payload bytes (\(Format.bytes(report.payloadBytes)))")
                if let v = document.copyVerify {
                    for problem in v.problems { Output.line("copy: " + InspectFailure.oneLine(problem.description)) }
                    Output.line("copy " + Verify.summaryLine(v, directory: destination))
                }
            }
            return document.copyClean == false ? ExitStatus.problems : ExitStatus.ok
        }
    }
}

extension StoreLocation {
    init(directory: String) {
        self.init()
        self.directory = directory
    }
}

// MARK: slot bounds

/// Checks a chunk record's slot before anything reads it: a damaged record can point far past
/// the slot file, and ShoalStore's `SlotFile.read` traps (rather than throws) on an offset
/// beyond `Int64`.
enum SlotBounds {
    static func isHandedOut(_ slot: UInt64, slotsNext: UInt64) -> Bool {
        slot < slotsNext && slot <= UInt64(Int64.max) / UInt64(Schema.slotSize)
    }

    /// The problem when `meta.slots_next` counts more slots than `chunks.slots` holds, else nil. Every slot below `slots_next` was written before the commit that handed it out
    /// (or lies below one that was), so the file spans at least that many slots. ShoalStore's
    /// verify allocates a byte per slot below `slots_next`, and would abort on a damaged value.
    static func implausibleSlotsNext(_ store: Store) throws -> GuardProblem? {
        let slotsNext = try store.read { try $0.slotsNext() }
        var st = stat()
        let fileBytes = stat(store.directory + "/" + Schema.slotFileName, &st) == 0 ? UInt64(st.st_size) : 0
        let fileSlots = fileBytes / UInt64(Schema.slotSize) + (fileBytes % UInt64(Schema.slotSize) == 0 ? 0 : 1)
        guard slotsNext > fileSlots else { return nil }
        return GuardProblem(kind: "meta-slots-next", database: Schema.Name.meta, key: Schema.MetaKey.slotsNext,
                            detail: "slots_next \(slotsNext) exceeds the \(fileSlots) slots of \(Schema.slotFileName) (\(fileBytes) bytes)")
    }

    /// A description of the first chunk record whose slot was never handed out or that does
    /// not decode, or nil. Reads records only (not payloads), in one snapshot with `slots_next`.
    static func firstRecordOutOfBounds(_ store: Store) throws -> String? {
        let meta = try store.environment.openDatabase(Schema.Name.meta)
        let chunks = try store.environment.openDatabase(Schema.Name.chunks)
        let landing = try store.environment.openDatabase(Schema.Name.landing)
        return try store.environment.read { txn -> String? in
            let slotsNext = try txn.withValue(meta, Schema.MetaKey.slotsNext.lmdbBytes) { raw in
                try raw.map { try LEUInt64(decodingLMDB: $0).value } ?? 0
            }
            var found: String?
            try txn.scan(chunks) { key, value in
                let address = Address32(raw: key)?.hex ?? Format.hex(key)
                guard let record = try? ChunkRecord(decodingLMDB: value) else {
                    found = "the record of chunk \(address) does not decode"
                    return false
                }
                guard isHandedOut(record.slot, slotsNext: slotsNext) else {
                    found = "chunk \(address) points to slot \(record.slot), beyond the \(slotsNext) slots handed out"
                    return false
                }
                return true
            }
            guard found == nil else { return found }
            try txn.scan(landing) { key, value in
                guard let entry = try? LandingEntry(decodingLMDB: value) else {
                    found = "landing entry \(Format.hex(key)) does not decode"
                    return false
                }
                guard isHandedOut(entry.record.slot, slotsNext: slotsNext) else {
                    found = "chunk \(entry.address.hex) points to slot \(entry.record.slot), beyond the \(slotsNext) slots handed out"
                    return false
                }
                return true
            }
            return found
        }
    }
}

/// A problem found by the inspector's own guard, shaped like `VerifyReport.Problem`.
struct GuardProblem: Encodable, CustomStringConvertible {
    var kind: String
    var database: String
    var key: String
    var detail: String

    var description: String { "\(kind) [\(database) \(key)]: \(detail)" }
}

/// What `verify` and `repair` print when the guard stops them: the problem, in the members a
/// verify report uses.
struct GuardDocument: Encodable {
    var directory: String
    var clean: Bool
    var problems: [GuardProblem]
}
