import Locking
import Foundation
import LMDB
import ShoalCore
import ShoalStore
import ShoalTestSupport
import Synchronization
import Testing

/// `lmdb-inspect`, run as a real process against stores this test process made.
struct InspectTests {
    // MARK: Reading a store

    @Test func summaryReportsWhatTheStoreHolds() async throws {
        let f = try Fixture()
        let text = try await f.inspect(["summary", f.path])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains(f.overlay.hex))
        #expect(text.stdout.contains("epoch         \(f.epoch)"))
        #expect(text.stdout.contains("chunks        \(f.chunks.count) "))

        let s = try await f.summary()
        #expect(s.schemaVersion == Schema.version)
        #expect(s.epoch == f.epoch)
        #expect(s.overlay == f.overlay.hex)
        #expect(s.chunks == f.chunks.count)
        #expect(s.databases.map(\.name).sorted() == Schema.Name.all.sorted())
        #expect((s.entries("chunks") ?? 0) + (s.entries("landing") ?? 0) == f.chunks.count, "records merged or still landed")
        #expect(s.entries("pull") == f.chunks.count + f.binsUsed.count, "one entry per chunk, one cursor per bin used")
        #expect(s.entries("intervals") == 3)
        #expect(s.entries("fetch") == f.fetchAddresses.count)
        #expect(s.entries("peers") == 2)
        #expect(s.entries("downloads") == 1)
        #expect(s.entries("journal") == f.journal.count)
        #expect(s.bins.count == Proximity.binCount)
        for bin in s.bins {
            #expect(bin.chunks == f.chunksPerBin[bin.bin, default: 0], "bin \(bin.bin)")
            #expect(bin.cursor == UInt64(f.chunksPerBin[bin.bin, default: 0]), "bin \(bin.bin)")
        }
        #expect(s.payload.chunks == f.chunks.count)
        #expect(s.payload.bytes == UInt64(f.chunks.reduce(0) { $0 + $1.payload.count }))
        #expect(s.disk.files.map(\.name) == ["data.mdb", "lock.mdb", "chunks.slots"])
        #expect(s.disk.files.allSatisfy { $0.exists && $0.apparentBytes > 0 })
        #expect(s.map.pageSize == 4096)
        #expect(s.map.usedBytes == s.map.pagesUsed * s.map.pageSize)
        #expect(s.openByPID == nil, "nothing else has the store open")
    }

    @Test func aNodeDataDirectoryIsFoundThroughItsStoreSubdirectory() async throws {
        let f = try Fixture(layout: .nodeDataDirectory)
        let s = try await f.summary(directory: f.dir.path)
        #expect(s.directory.hasSuffix("/store"))
        #expect(s.chunks == f.chunks.count)
    }

    @Test func chunksAreListedPerBinInBinIDOrder() async throws {
        let f = try Fixture()
        let all: ChunkListing = try await f.inspectJSON(["chunks", f.path, "--limit", "0"])
        #expect(all.chunks.count == f.chunks.count)
        #expect(all.truncated == false)
        #expect(Set(all.chunks.map(\.address)) == Set(f.chunks.map(\.address.hex)))
        #expect(all.chunks.map(\.bin) == all.chunks.map(\.bin).sorted())
        #expect(all.chunks.allSatisfy { $0.problem == nil && $0.length == 512 && $0.span == 512 })

        let bin = try #require(f.binsUsed.first)
        let one: ChunkListing = try await f.inspectJSON(["chunks", f.path, "--bin", "\(bin)"])
        #expect(one.chunks.count == f.chunksPerBin[bin])
        #expect(one.chunks.allSatisfy { $0.bin == bin })
        #expect(one.chunks.map(\.binID) == Array(1...UInt64(one.chunks.count)))

        let five: ChunkListing = try await f.inspectJSON(["chunks", f.path, "--limit", "5"])
        #expect(five.chunks.count == 5)
        #expect(five.truncated)
        #expect(five.chunks.map(\.address) == Array(all.chunks.prefix(5).map(\.address)))

        let text = try await f.inspect(["chunks", f.path, "--limit", "3"])
        #expect(text.status == 0)
        #expect(text.stdout.split(separator: "\n").count == 1 + 3 + 1, "header, three rows, footer")
        #expect(text.stdout.contains("more follow"))
    }

    @Test func aStoredChunkIsShownAndReHashed() async throws {
        let f = try Fixture()
        let chunk = f.chunks[5]
        let stored = try #require(f.stored[chunk.address])
        let r: ChunkJSON = try await f.inspectJSON(["chunk", f.path, chunk.address.hex, "--payload"])
        #expect(r.present)
        #expect(r.intact == true)
        #expect(r.indexed == true)
        #expect(r.bin == Int(stored.bin))
        #expect(r.binID == stored.binID)
        #expect(r.length == UInt16(chunk.payload.count))
        #expect(r.payloadHex == hex(chunk.payload))
        #expect(r.problems.isEmpty)
        #expect(r.table == Schema.Name.landing, "the fixture's chunks are not merged yet")

        let text = try await f.inspect(["chunk", f.path, chunk.address.hex.uppercased()])
        #expect(text.status == 0)
        #expect(text.stdout.contains("intact"))
        #expect(text.stdout.contains("not merged into `chunks` yet"))
    }

    @Test func anAbsentChunkExitsOneAndShowsItsFetchEntry() async throws {
        let f = try Fixture()
        let wanted = f.fetchAddresses[0]
        let out = try await f.inspect(["chunk", f.path, wanted.hex, "--json"])
        #expect(out.status == 1)
        let r = try JSONDecoder().decode(ChunkJSON.self, from: Data(out.stdout.utf8))
        #expect(r.present == false)
        #expect(r.fetch?.attempts == 3)

        let text = try await f.inspect(["chunk", f.path, String(repeating: "0", count: 64)])
        #expect(text.status == 1)
        #expect(text.stdout.contains("is not in the store"))
    }

    @Test(arguments: ["abc", String(repeating: "a", count: 63), String(repeating: "a", count: 65),
                      String(repeating: "g", count: 64), ""])
    func aMalformedAddressIsAUsageError(_ address: String) async throws {
        let f = try Fixture()
        let out = try await f.inspect(["chunk", f.path, address])
        #expect(out.status == 64)
        #expect(out.stderr.contains("64 hex digits"))
        #expect(out.stdout.isEmpty)
    }

    @Test func intervalsFetchPeersAndJournalAreListed() async throws {
        let f = try Fixture()
        let intervals: IntervalListing = try await f.inspectJSON(["intervals", f.path])
        #expect(intervals.intervals.count == 3)
        let a1 = try #require(intervals.intervals.first { $0.peer == f.peerA.hex && $0.bin == 1 })
        #expect(a1.epoch == 7)
        #expect(a1.ranges == [[1, 4], [6, 8]])
        #expect(a1.synced == 7)
        let onlyB: IntervalListing = try await f.inspectJSON(["intervals", f.path, "--peer", f.peerB.hex])
        #expect(onlyB.intervals.map(\.peer) == [f.peerB.hex])
        #expect(try await f.inspect(["intervals", f.path, "--peer", "xyz"]).status == 64)

        let fetch: FetchListing = try await f.inspectJSON(["fetch", f.path])
        #expect(Set(fetch.fetch.map(\.address)) == Set(f.fetchAddresses.map(\.hex)))
        #expect(fetch.fetch.allSatisfy { $0.attempts == 3 && $0.hints == [f.peerA.hex] })

        let peers: PeerListing = try await f.inspectJSON(["peers", f.path])
        #expect(Set(peers.peers.map(\.overlay)) == [f.peerA.hex, f.peerB.hex])
        let b = try #require(peers.peers.first { $0.overlay == f.peerB.hex })
        #expect(b.addresses == ["10.0.0.2:1634", "[::1]:1634"])
        #expect(b.score == -5)
        #expect(b.banned)

        let journal: JournalListing = try await f.inspectJSON(["journal", f.path, "--limit", "2"])
        #expect(journal.journal.map(\.text) == Array(f.journal.suffix(2)), "the newest two, oldest first")
        #expect(journal.truncated)
        let fullJournal = try await f.inspect(["journal", f.path])
        #expect(fullJournal.status == 0)
        for line in f.journal { #expect(fullJournal.stdout.contains(line)) }

        let pins: PinListing = try await f.inspectJSON(["pins", f.path])
        #expect(pins.pins.map(\.root) == [f.chunks[1].address.hex])
        #expect(pins.pins.first?.chunks == 3 && pins.pins.first?.bytes == 12_000)

        for command in ["intervals", "fetch", "peers", "downloads", "pins", "journal"] {
            let text = try await f.inspect([command, f.path])
            #expect(text.status == 0, "\(command): \(text.stderr)")
            #expect(!text.stdout.isEmpty)
        }
    }

    // MARK: Agreement with mdb_stat

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: MdbStat.path),
                   "mdb_stat (Debian lmdb-utils) is not installed at /usr/bin/mdb_stat"))
    func countsAgreeWithMdbStat() async throws {
        // A map size other than our default, so agreement cannot come from both using a default.
        let f = try Fixture(mapSize: 64 << 20)
        let s = try await f.summary()
        let stat = try MdbStat.run(["-a", "-e", f.path])
        for database in Schema.Name.all {
            #expect(stat.entries[database] == s.entries(database), "entries of \(database)")
            let ours = try #require(s.databases.first { $0.name == database })
            #expect(stat.databases[database] == ["Tree depth": ours.depth, "Branch pages": ours.branchPages,
                                                 "Leaf pages": ours.leafPages, "Overflow pages": ours.overflowPages,
                                                 "Entries": ours.entries], "\(database)")
        }
        #expect(stat.entries["Main DB"] == s.mainDatabase.entries)
        #expect(stat.environment["Map size"] == "\(s.map.mapSizeBytes)")
        #expect(s.map.mapSizeBytes == 64 << 20)
        #expect(stat.environment["Page size"] == "\(s.map.pageSize)")
        #expect(stat.environment["Max pages"] == "\(s.map.maxPages)")
        #expect(stat.environment["Number of pages used"] == "\(s.map.pagesUsed)")
        #expect(stat.environment["Last transaction ID"] == "\(s.map.lastTransactionID)")
        #expect(stat.environment["Max readers"] == "\(s.readers.maxReaders)")
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: MdbStat.path),
                   "mdb_stat (Debian lmdb-utils) is not installed at /usr/bin/mdb_stat"))
    func readersAgreeWithMdbStatWhileThisProcessHoldsASnapshot() async throws {
        let f = try Fixture()
        let store = try Store(directory: f.path)
        defer { store.close() }
        let (statReaders, s, snapshot) = try store.read { reader in
            (try MdbStat.run(["-r", f.path]).readers,
             try JSONDecoder().decode(SummaryJSON.self, from: Data(Tools.runBlocking("lmdb-inspect", ["summary", f.path, "--json"],
                                                                                    timeoutSeconds: 60).stdout.utf8)),
             reader.transactionID)
        }
        let me = Int(getpid())
        #expect(statReaders.contains { $0.pid == me && $0.transactionID == snapshot })
        #expect(s.readers.active.contains { $0.pid == me && $0.transactionID == snapshot })
        #expect(Set(s.readers.active.map(\.pid)) == Set(statReaders.map(\.pid)))
        #expect(s.openByPID == getpid())
    }

    // MARK: Exit statuses

    @Test func verifyExitsZeroOnAHealthyStore() async throws {
        let f = try Fixture()
        let text = try await f.inspect(["verify", f.path])
        #expect(text.status == 0, "\(text.stdout)\(text.stderr)")
        #expect(text.stdout.hasPrefix("clean: "))
        let json: VerifyJSON = try await f.inspectJSON(["verify", f.path])
        #expect(json.clean)
        #expect(json.problems.isEmpty)
        #expect(json.chunksChecked == f.chunks.count)
        let dryRun = try await f.inspect(["repair", "--dry-run", f.path])
        #expect(dryRun.status == 0)
        #expect(dryRun.stdout.contains("nothing to repair"))
    }

    enum NotAStore: String, CaseIterable, CustomTestStringConvertible {
        case missingDirectory, emptyDirectory, plainFile, bareLMDBEnvironment, schemaTooNew
        var testDescription: String { rawValue }
    }

    @Test(arguments: NotAStore.allCases)
    func whatCannotBeOpenedExitsTwoWithOneLine(_ kind: NotAStore) async throws {
        let dir = try TemporaryDirectory("inspect")
        var path = dir.sub("target")
        var expected = ""
        switch kind {
        case .missingDirectory:
            expected = "no such file or directory"
        case .emptyDirectory:
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
            expected = "holds no data.mdb"
        case .plainFile:
            FileManager.default.createFile(atPath: path, contents: Data("x".utf8))
            expected = "not a directory"
        case .bareLMDBEnvironment:
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
            try Environment(path: path).close()
            expected = "no Shoal store"
        case .schemaTooNew:
            let f = try Fixture()
            path = f.path
            try await withRawEnvironment(path) { env in
                let meta = try env.openDatabase(Schema.Name.meta)
                try env.write { try $0.put(meta, Schema.MetaKey.schemaVersion.lmdbBytes, LEUInt64(Schema.version + 1).lmdbBytes) }
            }
            expected = "schemaTooNew"
            // Keep the fixture's directory alive for the runs below.
            try await checkCannotOpen(path, expected, keepAlive: f)
            return
        }
        try await checkCannotOpen(path, expected, keepAlive: dir)
    }

    private func checkCannotOpen(_ path: String, _ expected: String, keepAlive: AnyObject) async throws {
        for command in [["verify", path], ["summary", path], ["chunks", path], ["repair", "--dry-run", path]] {
            let out = try await Tools.run("lmdb-inspect", command)
            #expect(out.status == 2, "\(command): \(out.stderr)")
            #expect(out.stderr.contains(expected), "\(command): \(out.stderr)")
            #expect(out.stderr.split(separator: "\n").count == 1, "one line: \(out.stderr)")
            #expect(!out.stderr.contains("Fatal error") && !out.stderr.contains("Backtrac"))
        }
        let json = try await Tools.run("lmdb-inspect", ["summary", path, "--json"])
        #expect(json.status == 2)
        let error = try JSONDecoder().decode(ErrorJSON.self, from: Data(json.stdout.utf8))
        #expect(error.error.exitStatus == 2)
        #expect(!error.error.message.isEmpty)
        withExtendedLifetime(keepAlive) {}
    }

    @Test func readOnlyCommandsCreateNothing() async throws {
        let dir = try TemporaryDirectory("inspect")
        let path = dir.sub("empty")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        _ = try await Tools.run("lmdb-inspect", ["summary", path])
        _ = try await Tools.run("lmdb-inspect", ["verify", path])
        #expect(try FileManager.default.contentsOfDirectory(atPath: path).isEmpty)
    }

    // MARK: A live store

    @Test func aStoreThisProcessKeepsWritingToCanBeInspected() async throws {
        let f = try Fixture()
        let store = try Store(directory: f.path)
        defer { store.close() }
        // The writer commits batches until told to stop (at most `batchesMax`), so the
        // inspector runs while commits land.
        let batchesMax = 5_000
        let stop = Atomic<Bool>(false)
        let written = Atomic<Int>(0)
        let writerFailure = Locked<String?>(nil)
        let writes = DispatchGroup()
        writes.enter()
        DispatchQueue.global().async {
            defer { writes.leave() }
            var factory = SeededChunks(seed: 99)
            while !stop.load(ordering: .acquiring) && written.load(ordering: .relaxed) < batchesMax {
                var batch = StoreBatch(chunks: factory.chunks(count: 4, size: 1024))
                batch.journal = ["live write \(written.load(ordering: .relaxed))"]
                do { try store.apply(batch) } catch { writerFailure.withLock { $0 = "\(error)" }; return }
                written.add(1, ordering: .releasing)
            }
        }
        defer {
            stop.store(true, ordering: .releasing)
            _ = writes.wait(timeout: .now() + 60)
        }
        let started = Date()
        while written.load(ordering: .acquiring) == 0 && Date().timeIntervalSince(started) < 30 { usleep(1000) }
        try #require(written.load(ordering: .acquiring) > 0, "the writer got going")

        var seen: [Int] = []
        for _ in 0..<3 {
            let s = try await f.summary()
            #expect(s.openByPID == getpid())
            #expect(s.bins.reduce(0) { $0 + $1.chunks } == s.chunks, "one snapshot: bins and chunks agree")
            #expect((s.entries("chunks") ?? 0) + (s.entries("landing") ?? 0) == s.chunks)
            #expect(s.payload.chunks >= s.chunks, "the payload scan reads the same or a later snapshot")
            seen.append(s.chunks)
        }
        let verify = try await f.inspect(["verify", f.path])
        #expect(verify.status == 0, "a live store verifies clean: \(verify.stdout)\(verify.stderr)")
        let listing = try await f.inspect(["chunks", f.path, "--limit", "0"])
        #expect(listing.status == 0)
        let repair = try await f.inspect(["repair", f.path])
        #expect(repair.status == 2, "repair refuses while the store is open elsewhere")
        #expect(repair.stderr.contains("is open by process \(getpid())"))

        stop.store(true, ordering: .releasing)
        #expect(writes.wait(timeout: .now() + 60) == .success, "the writer stopped")
        #expect(writerFailure.withLock { $0 } == nil)
        #expect(seen == seen.sorted(), "later snapshots never hold fewer chunks")
        #expect(seen.allSatisfy { $0 > f.chunks.count && $0 <= f.chunks.count + 4 * written.load(ordering: .acquiring) })
        #expect(try await f.summary().chunks == f.chunks.count + 4 * written.load(ordering: .acquiring))
    }

    // MARK: Verify, repair, backup

    enum Damage: String, CaseIterable, CustomTestStringConvertible {
        case payloadOverwritten, slotFarBeyondTheFile, pullEntryDeleted, fetchEntryForStoredChunk, intervalsNotCanonical
        var testDescription: String { rawValue }

        /// What verify lists, in order.
        var problems: [String] {
            switch self {
            case .payloadOverwritten: return ["hash-mismatch"]
            // The slot the record pointed to before is now neither used nor free.
            case .slotFarBeyondTheFile: return ["slot-out-of-range", "slot-orphan"]
            case .pullEntryDeleted: return ["pull-missing"]
            case .fetchEntryForStoredChunk: return ["fetch-for-stored-chunk"]
            case .intervalsNotCanonical: return ["interval-not-canonical"]
            }
        }

        var dropsTheChunk: Bool { self == .payloadOverwritten || self == .slotFarBeyondTheFile }
        /// `lmdb-inspect chunk` reports a problem with the chunk itself.
        var showsInChunk: Bool { dropsTheChunk || self == .pullEntryDeleted }

        var action: String {
            switch self {
            case .payloadOverwritten, .slotFarBeyondTheFile: return "drop-chunk"
            case .pullEntryDeleted: return "add-pull-entry"
            case .fetchEntryForStoredChunk: return "delete-fetch-entry"
            case .intervalsNotCanonical: return "reset-intervals"
            }
        }
    }

    @Test(arguments: Damage.allCases)
    func damageIsFoundPlannedAndRepaired(_ damage: Damage) async throws {
        let f = try Fixture()
        let victim = f.chunks[11]
        let stored = try #require(f.stored[victim.address])
        switch damage {
        case .payloadOverwritten:
            let slot = try #require(await f.summaryChunk(victim.address).slot)
            let file = try #require(FileHandle(forUpdatingAtPath: f.path + "/" + Schema.slotFileName))
            try file.seek(toOffset: slot * UInt64(Schema.slotSize) + 10)
            try file.write(contentsOf: Data([0xde, 0xad, 0xbe, 0xef]))
            try file.close()
        case .slotFarBeyondTheFile:
            try await withRawEnvironment(f.path) { env in
                // The record is damaged where it lives: still in `landing`, or merged into `chunks`.
                let chunks = try env.openDatabase(Schema.Name.chunks)
                let landing = try env.openDatabase(Schema.Name.landing)
                let record = ChunkRecord(span: victim.span, slot: .max, binID: stored.binID,
                                         length: UInt16(victim.payload.count), bin: stored.bin)
                try env.write { txn in
                    if try txn.contains(chunks, victim.address.bytes) {
                        try txn.put(chunks, victim.address.bytes, record.lmdbBytes)
                        return
                    }
                    var sequence: [UInt8]?
                    try txn.scan(landing) { key, value in
                        if value.starts(with: victim.address.bytes) { sequence = Array(key) }
                        return sequence == nil
                    }
                    try txn.put(landing, try #require(sequence), victim.address.bytes + record.lmdbBytes)
                }
            }
        case .pullEntryDeleted:
            try await withRawEnvironment(f.path) { env in
                let pull = try env.openDatabase(Schema.Name.pull)
                try env.write { _ = try $0.delete(pull, PullKey(bin: stored.bin, binID: stored.binID).lmdbBytes) }
            }
        case .fetchEntryForStoredChunk:
            try await withRawEnvironment(f.path) { env in
                let fetch = try env.openDatabase(Schema.Name.fetch)
                try env.write { try $0.put(fetch, victim.address.bytes, FetchRecord(attempts: 1).lmdbBytes) }
            }
        case .intervalsNotCanonical:
            try await withRawEnvironment(f.path) { env in
                let intervals = try env.openDatabase(Schema.Name.intervals)
                var record = IntervalRecord(epoch: 7, set: IntervalSet())
                record.ranges = [5...9, 1...6]
                try env.write { try $0.put(intervals, IntervalKey(peer: f.peerB, bin: 9).lmdbBytes, record.lmdbBytes) }
            }
        }

        let found = try await f.inspect(["verify", f.path])
        #expect(found.status == 1, "\(found.stdout)\(found.stderr)")
        let problemLines = found.stdout.split(separator: "\n").dropLast()
        #expect(problemLines.map { String($0.prefix { $0 != " " }) } == damage.problems,
                "one problem per line, then the summary: \(found.stdout)")
        let foundJSON: VerifyJSON = try await f.inspectJSON(["verify", f.path], status: 1)
        #expect(foundJSON.clean == false)
        #expect(foundJSON.problems.map(\.kind) == damage.problems)
        let shown = try await f.inspect(["chunk", f.path, victim.address.hex])
        #expect(shown.status == (damage.showsInChunk ? 1 : 0), "\(shown.stdout)\(shown.stderr)")
        if damage.dropsTheChunk { #expect(shown.stdout.contains("DAMAGED")) }
        if damage == .pullEntryDeleted { #expect(shown.stdout.contains("indexed   no")) }

        let before = try Data(contentsOf: URL(fileURLWithPath: f.path + "/data.mdb"))
        let plan: RepairJSON = try await f.inspectJSON(["repair", "--dry-run", f.path], status: 1)
        #expect(plan.dryRun)
        #expect(plan.plan.actions.contains { $0.kind == damage.action }, "\(plan.plan.actions)")
        let dryText = try await f.inspect(["repair", "--dry-run", f.path])
        #expect(dryText.status == 1)
        #expect(dryText.stdout.contains(damage.action))
        #expect(dryText.stdout.contains("nothing changed"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: f.path + "/data.mdb")) == before, "a dry run writes nothing")
        #expect(try await f.inspect(["verify", f.path]).status == 1, "still damaged after the dry run")

        let repaired: RepairJSON = try await f.inspectJSON(["repair", f.path])
        #expect(repaired.dryRun == false)
        #expect(repaired.plan.actions.map(\.kind) == plan.plan.actions.map(\.kind), "the dry run showed what repair does")
        #expect(repaired.cleanAfter == true)
        let after = try await f.inspect(["verify", f.path])
        #expect(after.status == 0, "\(after.stdout)")

        if damage.dropsTheChunk {
            let gone = try await f.inspect(["chunk", f.path, victim.address.hex])
            #expect(gone.status == 1)
            #expect(gone.stdout.contains("is not in the store"), "the damaged chunk was dropped")
            #expect(try await f.summary().chunks == f.chunks.count - 1)
        } else {
            #expect(try await f.inspect(["chunk", f.path, victim.address.hex]).status == 0)
            #expect(try await f.summary().chunks == f.chunks.count)
        }
    }

    @Test func aListingThatMeetsAnUndecodableRecordFailsWithOneJSONDocument() async throws {
        let f = try Fixture()
        let stored = try #require(f.stored[f.chunks[2].address])
        try await withRawEnvironment(f.path) { env in
            let pull = try env.openDatabase(Schema.Name.pull)
            try env.write { try $0.put(pull, PullKey(bin: stored.bin, binID: stored.binID).lmdbBytes, [1, 2, 3]) }
        }
        let out = try await f.inspect(["chunks", f.path, "--json"])
        #expect(out.status == 2)
        let document = try JSONDecoder().decode(ErrorJSON.self, from: Data(out.stdout.utf8))
        #expect(document.error.code == "corrupt")
        #expect(out.stderr.contains("run `lmdb-inspect verify`"))
        #expect(out.stderr.split(separator: "\n").count == 1)

        let verify: VerifyJSON = try await f.inspectJSON(["verify", f.path], status: 1)
        #expect(verify.problems.contains { $0.kind == "undecodable" && $0.database == "pull" })
        #expect(try await f.inspect(["repair", f.path]).status == 0)
        let listing: ChunkListing = try await f.inspectJSON(["chunks", f.path, "--limit", "0"])
        #expect(listing.chunks.count == f.chunks.count, "the index entry was rebuilt")
    }

    @Test func backupRefusesAStoreWhoseRecordsPointPastTheSlots() async throws {
        let f = try Fixture()
        let victim = f.chunks[4]
        let stored = try #require(f.stored[victim.address])
        try await withRawEnvironment(f.path) { env in
            let chunks = try env.openDatabase(Schema.Name.chunks)
            let record = ChunkRecord(span: victim.span, slot: 1 << 62, binID: stored.binID,
                                     length: UInt16(victim.payload.count), bin: stored.bin)
            try env.write { try $0.put(chunks, victim.address.bytes, record.lmdbBytes) }
        }
        let destination = f.dir.sub("backup")
        let out = try await f.inspect(["backup", f.path, destination])
        #expect(out.status == 2)
        #expect(out.stderr.contains("run `lmdb-inspect verify` and `repair` first"))
        #expect(!FileManager.default.fileExists(atPath: destination), "nothing written")
        #expect(try await f.inspect(["repair", f.path]).status == 0)
        #expect(try await f.inspect(["backup", f.path, destination]).status == 0)
    }

    @Test func aDamagedSlotCounterIsReportedNotCrashedOn() async throws {
        let f = try Fixture()
        try await withRawEnvironment(f.path) { env in
            let meta = try env.openDatabase(Schema.Name.meta)
            try env.write { try $0.put(meta, Schema.MetaKey.slotsNext.lmdbBytes, LEUInt64(1 << 56).lmdbBytes) }
        }
        let verify = try await f.inspect(["verify", f.path])
        #expect(verify.status == 1, "\(verify.stdout)\(verify.stderr)")
        #expect(verify.stdout.hasPrefix("meta-slots-next [meta slots_next]"))
        let json: VerifyJSON? = try? await f.inspectJSON(["verify", f.path], status: 1)
        #expect(json?.problems.map(\.kind) == ["meta-slots-next"])
        let repair = try await f.inspect(["repair", f.path])
        #expect(repair.status == 1)
        #expect(repair.stdout.hasPrefix("cannot repair: meta-slots-next"))
        #expect(try await f.inspect(["summary", f.path]).status == 0, "the summary still shows the store")
    }

    @Test func repairKeepsTheConfiguredCapacity() async throws {
        let f = try Fixture(capacityChunks: 1000)
        #expect(try await f.summary().capacityChunks == 1000)
        let stored = try #require(f.stored[f.chunks[0].address])
        try await withRawEnvironment(f.path) { env in
            let pull = try env.openDatabase(Schema.Name.pull)
            try env.write { _ = try $0.delete(pull, PullKey(bin: stored.bin, binID: stored.binID).lmdbBytes) }
        }
        let out = try await f.inspect(["repair", f.path])
        #expect(out.status == 0, "\(out.stdout)\(out.stderr)")
        #expect(out.stdout.contains("add-pull-entry"))
        #expect(try await f.summary().capacityChunks == 1000)
    }

    @Test func repairingACleanStoreWritesNothing() async throws {
        let f = try Fixture()
        let before = try Data(contentsOf: URL(fileURLWithPath: f.path + "/data.mdb"))
        let out = try await f.inspect(["repair", f.path])
        #expect(out.status == 0)
        #expect(out.stdout.contains("nothing to repair"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: f.path + "/data.mdb")) == before)
    }

    @Test func backupWritesACompactedVerifiedCopyOfTheSameStore() async throws {
        let f = try Fixture()
        let destination = f.dir.sub("backup")
        let out = try await f.inspect(["backup", f.path, destination, "--json"])
        #expect(out.status == 0, "\(out.stdout)\(out.stderr)")
        let report = try JSONDecoder().decode(BackupJSON.self, from: Data(out.stdout.utf8))
        #expect(report.backup.chunks == f.chunks.count)
        #expect(report.copyClean == true)

        let source = try await f.summary(), copy = try await f.summary(directory: destination)
        #expect(copy.epoch == source.epoch)
        #expect(copy.overlay == source.overlay)
        #expect(copy.payload.bytes == source.payload.bytes)
        // The copy holds every record in `chunks`; the source may still have some in `landing`.
        for name in Schema.Name.all where ![Schema.Name.slots, Schema.Name.chunks, Schema.Name.landing].contains(name) {
            #expect(copy.entries(name) == source.entries(name), "\(name)")
        }
        #expect(copy.entries(Schema.Name.chunks) == (source.entries(Schema.Name.chunks) ?? 0) + (source.entries(Schema.Name.landing) ?? 0))
        #expect(copy.entries(Schema.Name.landing) == 0)
        #expect(copy.bins.map(\.cursor) == source.bins.map(\.cursor))
        #expect(try await f.inspect(["verify", destination]).status == 0)

        let again = try await f.inspect(["backup", f.path, destination])
        #expect(again.status == 2, "a backup never overwrites")
        #expect(again.stderr.contains("not empty"))
    }
}

// MARK: - Fixture

/// A closed store with chunks in several bins, intervals, a fetch set, peers, a download and
/// a journal.
final class Fixture: @unchecked Sendable {
    enum Layout { case storeDirectory, nodeDataDirectory }

    let dir: TemporaryDirectory
    /// The LMDB directory.
    let path: String
    let overlay: OverlayAddress
    let epoch: UInt64
    let chunks: [Chunk]
    let stored: [ChunkAddress: StoredChunk]
    let peerA: OverlayAddress
    let peerB: OverlayAddress
    let fetchAddresses: [ChunkAddress]
    let journal: [String]

    var chunksPerBin: [Int: Int] {
        stored.values.reduce(into: [:]) { $0[Int($1.bin), default: 0] += 1 }
    }

    var binsUsed: [Int] { chunksPerBin.keys.sorted() }

    init(layout: Layout = .storeDirectory, mapSize: Int? = nil, capacityChunks: UInt64? = nil, seed: UInt64 = 1) throws {
        dir = try TemporaryDirectory("inspect")
        // A node keeps its store in `<data directory>/store`; a bare store can live anywhere.
        path = layout == .storeDirectory ? dir.sub("shoal-store") : dir.sub("store")
        var random = SplitMix64(seed: seed)
        overlay = Address32(bytes: random.bytes(32))!
        peerA = Address32(bytes: random.bytes(32))!
        peerB = Address32(bytes: random.bytes(32))!
        var factory = SeededChunks(seed: seed &+ 1)
        chunks = factory.chunks(count: 40, size: 512)
        fetchAddresses = factory.chunks(count: 3, size: 64).map(\.address)
        journal = (1...5).map { #"{"decision":"subscribe","bin":\#($0)}"# }

        var options = Store.Options(overlay: overlay, capacityChunks: capacityChunks)
        if let mapSize { options.mapSize = mapSize }
        let store = try Store(directory: path, options: options)
        defer { store.close() }
        epoch = store.epoch
        var batch = StoreBatch(chunks: chunks)
        batch.seals = [
            IntervalSeal(peer: peerA, bin: 0, epoch: 7, range: 1...10),
            IntervalSeal(peer: peerA, bin: 1, epoch: 7, range: 1...4),
            IntervalSeal(peer: peerA, bin: 1, epoch: 7, range: 6...8),
            IntervalSeal(peer: peerB, bin: 3, epoch: 9, range: 1...2),
        ]
        let hint = peerA
        batch.fetchUpserts = fetchAddresses.map { ($0, FetchRecord(attempts: 3, nextAttemptMs: 1_700_000_000_000, hints: [hint])) }
        batch.peerUpserts = [
            (peerA, PeerRecord(addresses: ["10.0.0.1:1634"], lastSeenMs: 1_700_000_000_000, score: 12)),
            (peerB, PeerRecord(addresses: ["10.0.0.2:1634", "[::1]:1634"], lastSeenMs: 1_700_000_000_000, score: -5,
                               banUntilMs: Store.wallClockMs() + 3_600_000)),
        ]
        batch.downloadUpserts = [(chunks[0].address, DownloadRecord(policy: .eagerPin, state: .active, chunksDone: 1,
                                                                    chunksTotal: 40, createdMs: 1_700_000_000_000))]
        batch.journal = journal
        batch.pins = [PinRequest(root: chunks[1].address, chunks: chunks.prefix(3).map(\.address), bytes: 12_000)]
        let result = try store.apply(batch)
        stored = Dictionary(uniqueKeysWithValues: result.stored.map { ($0.address, $0) })
    }

    func inspect(_ arguments: [String]) async throws -> Tools.Output {
        try await Tools.run("lmdb-inspect", arguments, timeoutSeconds: 60)
    }

    /// Runs with `--json`, expects `status`, decodes stdout.
    func inspectJSON<T: Decodable>(_ arguments: [String], status: Int32 = 0,
                                   sourceLocation: SourceLocation = #_sourceLocation) async throws -> T {
        let out = try await inspect(arguments + ["--json"])
        #expect(out.status == status, "\(arguments): \(out.stderr)", sourceLocation: sourceLocation)
        do {
            return try JSONDecoder().decode(T.self, from: Data(out.stdout.utf8))
        } catch {
            Issue.record("\(arguments): stdout is not the expected JSON (\(error)): \(out.stdout.prefix(2000))",
                         sourceLocation: sourceLocation)
            throw error
        }
    }

    func summary(directory: String? = nil) async throws -> SummaryJSON {
        try await inspectJSON(["summary", directory ?? path])
    }

    func summaryChunk(_ address: ChunkAddress) async throws -> ChunkJSON {
        try await inspectJSON(["chunk", path, address.hex])
    }
}

/// Opens the environment with the LMDB module alone (no Store), for damaging it on purpose.
func withRawEnvironment(_ path: String, _ body: (Environment) throws -> Void) async throws {
    var options = Environment.Options()
    options.maxDatabases = 16
    let env = try Environment(path: path, options: options)
    defer { env.close() }
    try body(env)
}

func hex(_ bytes: [UInt8]) -> String {
    bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}

// MARK: - mdb_stat

enum MdbStat {
    static let path = "/usr/bin/mdb_stat"

    struct Parsed {
        /// "Status of NAME" → Entries ("Main DB" for the main database).
        var entries: [String: Int] = [:]
        /// "Status of NAME" → every field of its block ("Tree depth", "Leaf pages", …).
        var databases: [String: [String: Int]] = [:]
        /// "Environment Info" lines.
        var environment: [String: String] = [:]
        var readers: [(pid: Int, transactionID: Int?)] = []
    }

    /// Runs mdb_stat (milliseconds; blocking is fine and lets it run inside a read transaction).
    static func run(_ arguments: [String]) throws -> Parsed {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        // `mdb_stat -r` exits 1 even on success: it returns what `mdb_reader_list` returned,
        // which is the last `fputs` result (lmdb-utils 0.9.24, mdb_stat.c).
        let acceptable: Set<Int32> = arguments.contains("-r") ? [0, 1] : [0]
        #expect(acceptable.contains(process.terminationStatus), "mdb_stat \(arguments)")
        return parse(String(decoding: data, as: UTF8.self))
    }

    static func parse(_ text: String) -> Parsed {
        var parsed = Parsed()
        var section = ""
        for line in text.split(separator: "\n") {
            if !line.hasPrefix(" ") || line.hasPrefix("Status of") {
                section = String(line)
                continue
            }
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if section == "Reader Table Status" {
                // "    pid     thread     txnid" then "   1234 7f12… 5" ("-" for no transaction).
                let fields = trimmed.split(separator: " ", omittingEmptySubsequences: true)
                if fields.count == 3, let pid = Int(fields[0]) {
                    parsed.readers.append((pid, Int(fields[2])))
                }
                continue
            }
            let parts = trimmed.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            if section.hasPrefix("Status of ") {
                let name = String(section.dropFirst("Status of ".count))
                parsed.databases[name, default: [:]][parts[0]] = Int(parts[1])
                if parts[0] == "Entries" { parsed.entries[name] = Int(parts[1]) }
            } else if section == "Environment Info" {
                parsed.environment[parts[0]] = parts[1]
            }
        }
        return parsed
    }
}

// MARK: - The inspector's JSON, as tests read it

struct SummaryJSON: Decodable {
    struct Database: Decodable {
        var name: String; var entries: Int; var depth: Int; var branchPages: Int; var leafPages: Int; var overflowPages: Int
    }
    struct Bin: Decodable { var bin: Int; var chunks: Int; var cursor: UInt64 }
    struct Map: Decodable {
        var mapSizeBytes: Int; var pageSize: Int; var maxPages: Int; var lastPageNumber: Int
        var pagesUsed: Int; var usedBytes: Int; var lastTransactionID: Int
    }
    struct Reader: Decodable { var pid: Int; var transactionID: Int? }
    struct Readers: Decodable { var maxReaders: Int; var slotsUsed: Int; var active: [Reader] }
    struct File: Decodable { var name: String; var exists: Bool; var apparentBytes: UInt64; var allocatedBytes: UInt64 }
    struct Disk: Decodable { var files: [File]; var apparentBytes: UInt64; var allocatedBytes: UInt64 }
    struct Payload: Decodable { var chunks: Int; var bytes: UInt64; var undecodableRecords: Int; var allocatedPerPayloadByte: Double? }

    var directory: String
    var schemaVersion: UInt64
    var epoch: UInt64
    var overlay: String
    var createdAtMs: UInt64
    var storageRadius: Int
    var capacityChunks: UInt64
    var chunks: Int
    var databases: [Database]
    var mainDatabase: Database
    var bins: [Bin]
    var map: Map
    var readers: Readers
    var openByPID: Int32?
    var disk: Disk
    var payload: Payload

    func entries(_ name: String) -> Int? { databases.first { $0.name == name }?.entries }
}

struct ChunkListing: Decodable {
    struct Entry: Decodable {
        var address: String; var bin: Int; var binID: UInt64
        var span: UInt64?; var length: UInt16?; var slot: UInt64?; var problem: String?
    }
    var chunks: [Entry]
    var count: Int
    var truncated: Bool
}

struct FetchJSON: Decodable {
    var address: String; var attempts: UInt32; var nextAttemptMs: UInt64; var group: String?; var hints: [String]
}

struct ChunkJSON: Decodable {
    var address: String
    var present: Bool
    var bin: Int?
    var binID: UInt64?
    var length: UInt16?
    var slot: UInt64?
    var intact: Bool?
    var indexed: Bool?
    var table: String?
    var problems: [String]
    var fetch: FetchJSON?
    var payloadHex: String?
}

struct IntervalListing: Decodable {
    struct Entry: Decodable { var peer: String; var bin: Int; var epoch: UInt64; var ranges: [[UInt64]]; var synced: UInt64 }
    var intervals: [Entry]
}

struct FetchListing: Decodable { var fetch: [FetchJSON] }

struct PeerListing: Decodable {
    struct Entry: Decodable { var overlay: String; var addresses: [String]; var score: Int64; var banned: Bool }
    var peers: [Entry]
}

struct JournalListing: Decodable {
    struct Entry: Decodable { var sequence: UInt64; var text: String }
    var journal: [Entry]
    var truncated: Bool
}

struct PinListing: Decodable {
    struct Entry: Decodable { var root: String; var chunks: UInt64; var bytes: UInt64 }
    var pins: [Entry]
}

struct ProblemJSON: Decodable { var kind: String; var database: String; var key: String; var detail: String }

struct VerifyJSON: Decodable {
    var clean: Bool
    var problems: [ProblemJSON]
    var chunksChecked: Int?
}

struct RepairJSON: Decodable {
    struct Plan: Decodable { var actions: [ProblemJSON]; var problemsFound: Int }
    var dryRun: Bool
    var plan: Plan
    var cleanAfter: Bool?
}

struct BackupJSON: Decodable {
    struct Report: Decodable { var chunks: Int; var payloadBytes: UInt64 }
    var backup: Report
    var copyClean: Bool?
}

struct ErrorJSON: Decodable {
    struct Body: Decodable { var code: String; var message: String; var exitStatus: Int32 }
    var error: Body
}
