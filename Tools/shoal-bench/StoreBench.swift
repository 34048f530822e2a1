import ArgumentParser
import LMDB
import ShoalCore
import ShoalStore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `shoal-bench store`: durable puts, random gets, disk use and reopen time of the chunk store,
/// with the raw-LMDB reference (`peers/lmdb_write.py`) run in the same pass.
struct StoreBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Benchmark the chunk store (release build): puts, gets, disk use, reopen.",
        discussion: """
            Every figure is one RESULT line on stdout (progress goes to stderr):
              chunk-hash                    SHA-256 addressing of the chunks, one core, before any clock
              store-put-durable             StoreWriter group commits, --writers tasks of --batch-chunks each
              store-put-batch1000-durable   one caller, Store.apply per 1000 chunks (lmdb_write.py's shape)
              store-get-random-txn          every chunk once, shuffled, in one read transaction (readPayload)
              store-get-random              the same through Store.get (a transaction, a copy and a hash each)
              store-disk                    st_blocks × 512 of data.mdb + chunks.slots + lock.mdb ÷ payload
              store-reopen-first-read       Store(directory:) then one get, warm page cache (also -readonly, -cold)
              lmdb_*                        peers/lmdb_write.py's own lines, unchanged
              store-put-vs-lmdb             store-put-durable puts/s ÷ lmdb_put_batch1000_durable puts/s
            """)

    @Option(help: "Chunks of 4096 random bytes to store.")
    var chunks = 100_000

    @Option(help: "Parent directory for the scratch stores (default: ./.tmp-bench in a package, else /tmp).")
    var dir: String?

    @Flag(help: "Keep the scratch stores.")
    var keep = false

    @Option(name: .customLong("batch-chunks"), help: "Chunks per batch each writer task submits.")
    var batchChunks = 1000

    @Option(help: "Concurrent writer tasks submitting to one StoreWriter.")
    var writers = 4

    @Option(name: .customLong("group-chunks-max"),
            help: "StoreWriter.Limits.groupChunksMax: most chunks in one group commit (default: the StoreWriter's).")
    var groupChunksMax: Int?

    @Option(help: "Seed of the chunk contents and of the read order.")
    var seed: UInt64 = 1

    @Option(name: .customLong("peers-dir"),
            help: "Directory of lmdb_write.py (default: ../shared/peers from the working directory).")
    var peersDir: String?

    @Flag(name: .customLong("no-lmdb"), help: "Skip the raw-LMDB reference run.")
    var noLMDB = false

    @Option(name: .customLong("lmdb-max-seconds"), help: "lmdb_write.py's --max-seconds (its capped cases).")
    var lmdbMaxSeconds: Double = 3

    @Flag(name: .customLong("skip-apply"), help: "Skip the single-caller Store.apply figure (for profiling).")
    var skipApply = false

    @Flag(name: .customLong("skip-reads"), help: "Skip the get and reopen figures (for profiling).")
    var skipReads = false

    func validate() throws {
        guard chunks >= 1 else { throw ValidationError("--chunks must be at least 1") }
        guard batchChunks >= 1 else { throw ValidationError("--batch-chunks must be at least 1") }
        guard writers >= 1 && writers <= 1024 else { throw ValidationError("--writers must be 1…1024") }
    }

    static let payloadBytes = 4096
    static let applyBatchChunks = 1000
    static let overlay = Address32(bytes: [UInt8](repeating: 0x5a, count: 32))!

    func run() async throws {
        #if DEBUG
        Output.note("# note: this is a debug build; figures mean nothing (swift build -c release --product shoal-bench)")
        #endif
        let parent = dir ?? Files.defaultScratchParent()
        let root = try Files.makeTemporaryDirectory(in: parent, prefix: "store-bench")
        Output.note("# scratch stores in \(root)")
        var shoalPutsPerSecond: (group: Double, apply: Double?) = (0, nil)
        do {
            shoalPutsPerSecond = try await measureStore(root: root)
        } catch {
            if !keep { Files.removeTree(root) }
            throw error
        }
        if keep {
            Output.note("# kept \(root)")
        } else {
            Files.removeTree(root)
        }
        if !noLMDB { try runReference(shoal: shoalPutsPerSecond) }
    }

    // MARK: Shoal

    private func measureStore(root: String) async throws -> (group: Double, apply: Double?) {
        let payloadBytes = StoreBench.payloadBytes
        let totalBytes = chunks * payloadBytes

        // Chunks are made before any clock, as lmdb_write.py does: payload bytes from one
        // seeded generator per batch, then SHA-256 addressing, timed on its own.
        Output.note("# preparing \(chunks) chunks of \(payloadBytes) bytes")
        var all: [Chunk] = []
        all.reserveCapacity(chunks)
        var hashSeconds = 0.0
        var batchIndex: UInt64 = 0
        while all.count < chunks {
            var generator = SplitMix64(seed: derivedSeed(seed, batchIndex))
            let n = min(StoreBench.applyBatchChunks, chunks - all.count)
            let payloads = (0..<n).map { _ in generator.bytes(payloadBytes) }
            let (made, seconds) = timed { payloads.map { try! Chunk(payload: $0) } }
            hashSeconds += seconds
            all.append(contentsOf: made)
            batchIndex += 1
        }
        var hash = ResultLine("chunk-hash")
        hash.add("chunks", chunks)
        hash.throughput(bytes: totalBytes, seconds: hashSeconds)
        hash.add("chunks_per_s", Double(chunks) / hashSeconds)
        hash.emit()

        var groupBatches = stride(from: 0, to: chunks, by: batchChunks).map {
            StoreBatch(chunks: Array(all[$0..<min(chunks, $0 + batchChunks)]))
        }
        var applyBatches = stride(from: 0, to: chunks, by: StoreBench.applyBatchChunks).map {
            StoreBatch(chunks: Array(all[$0..<min(chunks, $0 + StoreBench.applyBatchChunks)]))
        }
        var addresses = all.map(\.address)
        all = []

        // Group-committed durable puts: `writers` tasks, each awaiting its batch's commit.
        let groupDir = root + "/group"
        var store = try Store(directory: groupDir, options: Store.Options(overlay: StoreBench.overlay))
        Output.note("# store-put-durable: \(writers) writer tasks × batches of \(batchChunks)")
        let writtenBefore = Files.deviceWrittenBytes(root)
        let (groupStored, groupSeconds, groupCommits) = try await putConcurrently(store: store, batches: groupBatches)
        let groupWritten = Files.deviceWrittenBytes(root) - writtenBefore
        try check(groupStored == chunks, "group commit stored \(groupStored) chunks, want \(chunks)")
        let counted = try store.count()
        try check(counted == chunks, "store holds \(counted) chunks after the group-commit run, want \(chunks)")
        var put = ResultLine("store-put-durable")
        put.add("chunks", chunks)
        put.throughput(bytes: totalBytes, seconds: groupSeconds)
        put.add("puts_per_s", Double(chunks) / groupSeconds)
        put.add("writers", writers)
        put.add("batch_chunks", batchChunks)
        put.add("group_chunks_max", groupChunksMax ?? StoreWriter.Limits().groupChunksMax)
        put.add("commits", groupCommits)
        put.add("chunks_per_commit", Double(chunks) / Double(max(1, groupCommits)))
        put.add("device_written_bytes", groupWritten)
        put.add("device_written_per_payload", Double(groupWritten) / Double(totalBytes))
        put.emit()

        // One caller, one Store.apply per 1000 chunks: the shape of lmdb_put_batch1000_durable.
        var applyPutsPerSecond: Double?
        if !skipApply {
            let applyDir = root + "/apply"
            Output.note("# store-put-batch1000-durable: Store.apply, one caller")
            let applyStore = try Store(directory: applyDir, options: Store.Options(overlay: StoreBench.overlay))
            var applyStored = 0
            let applyWrittenBefore = Files.deviceWrittenBytes(root)
            let (_, applySeconds) = try timed {
                for batch in applyBatches { applyStored += try applyStore.apply(batch).stored.count }
            }
            try check(applyStored == chunks, "Store.apply stored \(applyStored) chunks, want \(chunks)")
            applyStore.close()
            Files.removeTree(applyDir)
            var apply = ResultLine("store-put-batch1000-durable")
            apply.add("chunks", chunks)
            apply.throughput(bytes: totalBytes, seconds: applySeconds)
            apply.add("puts_per_s", Double(chunks) / applySeconds)
            apply.add("commits", applyBatches.count)
            let applyWritten = Files.deviceWrittenBytes(root) - applyWrittenBefore
            apply.add("device_written_bytes", applyWritten)
            apply.add("device_written_per_payload", Double(applyWritten) / Double(totalBytes))
            apply.emit()
            applyPutsPerSecond = Double(chunks) / applySeconds
        }
        // Only the addresses are needed from here on; give the payloads' memory back.
        groupBatches = []
        applyBatches = []
        _ = mallocTrim(0)

        if skipReads {
            store.close()
            return (Double(chunks) / groupSeconds, applyPutsPerSecond)
        }

        // Random gets of every stored chunk, shuffled, page cache warm: the store's files are
        // read through once first, because this VM evicts page cache idle for about a minute
        // (a DAMON pageout scheme), which a 1M-chunk put phase outlasts.
        let (warmed, warmSeconds) = timed {
            ["data.mdb", "chunks.slots"].reduce(0) { $0 + Files.readThrough(groupDir + "/" + $1) }
        }
        Output.note("# random gets (read \(warmed) bytes of the store's files first, \(ResultLine.format(warmSeconds)) s)")
        var generator = SplitMix64(seed: derivedSeed(seed, 0xF00D))
        addresses.shuffle(using: &generator)
        let ((found, gotBytes), txnSeconds) = try timed {
            try store.read { reader -> (Int, Int) in
                var buffer = [UInt8](repeating: 0, count: payloadBytes)
                var found = 0, bytes = 0
                try buffer.withUnsafeMutableBytes { raw in
                    for address in addresses {
                        if let record = try reader.readPayload(address, into: raw) {
                            found += 1
                            bytes += Int(record.length)
                        }
                    }
                }
                return (found, bytes)
            }
        }
        try check(found == chunks && gotBytes == totalBytes, "one-transaction gets found \(found) of \(chunks) chunks")
        var getTxn = ResultLine("store-get-random-txn")
        getTxn.add("gets", chunks)
        getTxn.throughput(bytes: gotBytes, seconds: txnSeconds)
        getTxn.add("gets_per_s", Double(chunks) / txnSeconds)
        getTxn.emit()

        addresses.shuffle(using: &generator)
        let (foundByGet, getSeconds) = try timed {
            var found = 0
            for address in addresses where try store.get(address) != nil { found += 1 }
            return found
        }
        try check(foundByGet == chunks, "Store.get found \(foundByGet) of \(chunks) chunks")
        var get = ResultLine("store-get-random")
        get.add("gets", chunks)
        get.throughput(bytes: totalBytes, seconds: getSeconds)
        get.add("gets_per_s", Double(chunks) / getSeconds)
        get.emit()

        // Disk: what `du` counts, per payload byte.
        let lmdbUsed = (store.environment.info().lastPageNumber + 1) * store.environment.stat().pageSize
        let dataBytes = Files.allocatedBytes(groupDir + "/data.mdb")
        let slotBytes = Files.allocatedBytes(groupDir + "/chunks.slots")
        let lockBytes = Files.allocatedBytes(groupDir + "/lock.mdb")
        let diskBytes = dataBytes + slotBytes + lockBytes
        var disk = ResultLine("store-disk")
        disk.add("chunks", chunks)
        disk.add("payload_bytes", totalBytes)
        disk.add("data_mdb_bytes", dataBytes)
        disk.add("slots_bytes", slotBytes)
        disk.add("lock_bytes", lockBytes)
        disk.add("lmdb_used_bytes", lmdbUsed)
        disk.add("disk_bytes", diskBytes)
        disk.add("ratio", Double(diskBytes) / Double(totalBytes))
        disk.emit()

        // Reopen and serve the first read: writable (as a node restarts), read-only (as
        // lmdb-inspect opens), and writable again with the store's files out of the page cache.
        store.close()
        for variant in ["store-reopen-first-read", "store-reopen-first-read-readonly", "store-reopen-first-read-cold"] {
            let address = addresses[Int(generator.next() % UInt64(addresses.count))]
            if variant.hasSuffix("-cold") {
                for file in ["data.mdb", "chunks.slots", "lock.mdb"] { Files.dropFromPageCache(groupDir + "/" + file) }
            }
            let options = variant.hasSuffix("-readonly")
                ? Store.Options(readOnly: true) : Store.Options(overlay: StoreBench.overlay)
            let ((reopened, chunk), seconds) = try timed { () throws -> (Store, Chunk?) in
                let s = try Store(directory: groupDir, options: options)
                return (s, try s.get(address))
            }
            try check(chunk?.address == address, "\(variant): the chunk read back is not the one stored")
            var reopen = ResultLine(variant)
            reopen.add("chunks", chunks)
            reopen.add("seconds", seconds)
            reopen.add("stale_readers_cleared", reopened.environment.staleReadersCleared)
            reopen.emit()
            reopened.close()
            store = reopened
        }
        return (Double(chunks) / groupSeconds, applyPutsPerSecond)
    }

    /// Submits `batches` from `writers` concurrent tasks to one StoreWriter; returns chunks
    /// stored, seconds from the first submit to the last commit, and group commits done.
    private func putConcurrently(store: Store, batches: [StoreBatch]) async throws -> (Int, Double, Int) {
        var limits = StoreWriter.Limits()
        if let groupChunksMax { limits.groupChunksMax = groupChunksMax }
        let writer = StoreWriter(store: store, limits: limits)
        let ticket = Ticket()
        let start = monotonicSeconds()
        let stored = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<writers {
                group.addTask {
                    var stored = 0
                    while true {
                        let i = ticket.take()
                        guard i < batches.count else { return stored }
                        stored += try await writer.apply(batches[i]).stored.count
                    }
                }
            }
            return try await group.reduce(0, +)
        }
        let seconds = monotonicSeconds() - start
        writer.stop()
        return (stored, seconds, writer.groupCommits)
    }

    private func check(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        if !condition { throw BenchError("check failed: \(message())") }
    }

    // MARK: Raw LMDB reference

    /// Runs `lmdb_write.py` on the same number of chunks, passes its RESULT lines through, and
    /// prints Shoal's put rate over its `lmdb_put_batch1000_durable` rate. A missing python3 or
    /// py-lmdb is reported on stderr and skips the ratio.
    private func runReference(shoal: (group: Double, apply: Double?)) throws {
        let peers = peersDir ?? Files.currentDirectory() + "/../shared/peers"
        let script = peers + "/lmdb_write.py"
        guard Files.exists(script) else {
            Output.note("# note: \(script) not found (pass --peers-dir); raw-LMDB ratio skipped")
            return
        }
        guard let python = ChildProcess.which("python3") else {
            Output.note("# note: python3 not found; raw-LMDB ratio skipped")
            return
        }
        let probe = try ChildProcess.run(python, ["-c", "import lmdb"], timeoutSeconds: 30)
        guard probe.termination == .exited(0) else {
            Output.note("# note: python3 cannot import lmdb (pip install lmdb); raw-LMDB ratio skipped")
            return
        }
        let size = chunks * StoreBench.payloadBytes
        Output.note("# raw-LMDB reference: python3 \(script) \(size) --max-seconds \(lmdbMaxSeconds)")
        // Bounded: generous for the slowest disk seen here (a 1M-chunk run takes a few minutes).
        let timeout = 300 + Double(chunks) / 1000
        let child = try ChildProcess.run(python, [script, String(size), "--max-seconds", String(lmdbMaxSeconds)],
                                         timeoutSeconds: timeout)
        var rawPutsPerSecond: Double?
        for line in child.stdoutLines {
            guard let parsed = ResultLine.parse(line) else { continue }
            Output.line(String(line))
            if parsed.name == "lmdb_put_batch1000_durable" { rawPutsPerSecond = parsed.fields["puts_per_s"].flatMap(Double.init) }
        }
        guard child.termination == .exited(0), let raw = rawPutsPerSecond, raw > 0 else {
            Output.note("# note: lmdb_write.py ended with \(child.termination.map(String.init(describing:)) ?? "?") "
                        + "and no lmdb_put_batch1000_durable figure; raw-LMDB ratio skipped\n" + child.stderrText)
            return
        }
        var ratio = ResultLine("store-put-vs-lmdb")
        ratio.add("ratio", shoal.group / raw)
        ratio.add("store_puts_per_s", shoal.group)
        ratio.add("lmdb_puts_per_s", raw)
        ratio.emit()
        if let apply = shoal.apply {
            var applyRatio = ResultLine("store-put-batch1000-vs-lmdb")
            applyRatio.add("ratio", apply / raw)
            applyRatio.add("store_puts_per_s", apply)
            applyRatio.add("lmdb_puts_per_s", raw)
            applyRatio.emit()
        }
    }
}

/// glibc's `malloc_trim` (<malloc.h> is not in the Glibc module): returns freed heap memory to
/// the system, so the raw-LMDB run that follows has the machine's memory.
@_silgen_name("malloc_trim")
private func mallocTrim(_ pad: Int) -> Int32

/// Hands out 0, 1, 2, … to concurrent tasks.
final class Ticket: Sendable {
    private let next = Atomic<Int>(0)
    func take() -> Int { next.add(1, ordering: .relaxed).oldValue }
}
