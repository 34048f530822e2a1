import Locking
import ArgumentParser
import LMDB
import ShoalCore
import ShoalStore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `shoal-bench crash-writer`: commits batches until killed, and says so after each commit.
///
/// After `StoreWriter.apply` returns for batch n, and only then, one line goes to stdout (in one
/// `write(2)`): `COMMITTED batch=<n> chunks=<count> first=<hex> last=<hex> digest=<hex>`.
/// `crash-loop` regenerates batch n from the seed and holds the store to every line.
/// Meanwhile a reader thread re-reads committed chunks with verification, holding its read
/// transaction for a while, so that a kill often leaves a reader slot behind (a dead
/// process's slot, which the next open must clear).
struct CrashWriter: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crash-writer",
        abstract: "Commit batches to a store until killed; print each committed batch.",
        discussion: """
            Batch contents come from (seed, batch number) alone. Each batch journals \
            "crash-writer batch=<n>" in its own transaction; a restarted writer continues after \
            the largest batch number in the journal. The digest is the hex SHA-256 of a zero \
            span (8 bytes) followed by the batch's addresses, i.e. Chunk.address(span: 0, payload: addresses). \
            Exit status 3: the reader found a committed chunk missing or damaged.
            """)

    @Option(help: "Store directory (created if absent).")
    var dir: String

    @Option(help: "Seed of the batch contents.")
    var seed: UInt64 = 1

    @Option(help: "Concurrent tasks submitting batches to one StoreWriter.")
    var writers = 2

    @Option(name: .customLong("capacity-chunks"), help: "Store capacity (evictions happen); default unbounded.")
    var capacityChunks: UInt64?

    @Option(help: "Stop after this many batches (default: run until killed).")
    var batches: UInt64?

    @Flag(name: .customLong("no-reader"), help: "Do not run the verifying reader thread.")
    var noReader = false

    func validate() throws {
        guard writers >= 1 && writers <= 64 else { throw ValidationError("--writers must be 1…64") }
    }

    func run() async throws {
        let store = try Store(directory: dir, options: Store.Options(overlay: CrashPlan.overlay,
                                                                     capacityChunks: capacityChunks))
        let plan = CrashPlan(seed: seed)
        let last = try store.read { r in
            try r.journal(limit: 1024).compactMap { CrashPlan.batchNumber(journalText: $0.entry.text) }.max() ?? 0
        }
        Output.note("# crash-writer pid \(getpid()): resuming after batch \(last), \(try store.count()) chunks stored, "
                    + "stale readers cleared at open: \(store.environment.staleReadersCleared)")
        let recent = RecentAddresses()
        if !noReader {
            ReaderThread.start(store: store, recent: recent, capacityMode: capacityChunks != nil)
        }
        let writer = StoreWriter(store: store)
        let numbers = Ticket()
        let limit = batches
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<writers {
                group.addTask {
                    while true {
                        let n = last + 1 + UInt64(numbers.take())
                        if let limit, n > last + limit { return }
                        let planned = plan.batch(n)
                        let result = try await writer.apply(planned.batch)
                        guard result.stored.count + result.duplicates == planned.addresses.count else {
                            throw BenchError("batch \(n): \(result.stored.count) stored + \(result.duplicates) duplicates "
                                             + "≠ \(planned.addresses.count) chunks")
                        }
                        guard result.unsealed.isEmpty else {
                            throw BenchError("batch \(n): seals \(result.unsealed) not applied, though the chunks they "
                                             + "require were stored by the same transaction")
                        }
                        Output.line(planned.committedLine)
                        recent.add(planned.addresses)
                    }
                }
            }
            try await group.waitForAll()
        }
        writer.stop()
    }
}

/// The most recently committed addresses (a bounded ring), for the reader to re-read.
final class RecentAddresses: Sendable {
    static let countMax = 65_536
    private let state = Locked<(ring: [ChunkAddress], next: Int)>(([], 0))

    func add(_ addresses: [ChunkAddress]) {
        state.withLock { s in
            for a in addresses {
                if s.ring.count < RecentAddresses.countMax {
                    s.ring.append(a)
                } else {
                    s.ring[s.next] = a
                    s.next = (s.next + 1) % RecentAddresses.countMax
                }
            }
        }
    }

    func sample(_ n: Int, using g: inout SplitMix64) -> [ChunkAddress] {
        state.withLock { s in
            s.ring.isEmpty ? [] : (0..<n).map { _ in s.ring[Int(g.next() % UInt64(s.ring.count))] }
        }
    }
}

/// A thread that re-reads committed chunks with verification. It keeps each read transaction
/// open for a few milliseconds (as a slow API reader would), so a SIGKILL usually finds a
/// reader slot in use. A committed chunk missing or damaged ends the process with status 3.
enum ReaderThread {
    static let chunksPerTransaction = 8
    static let holdMicroseconds: UInt32 = 3_000
    static let pauseMicroseconds: UInt32 = 500

    static func start(store: Store, recent: RecentAddresses, capacityMode: Bool) {
        let body: @Sendable () -> Void = {
            var g = SplitMix64(seed: UInt64(getpid()))
            while true {
                let sample = recent.sample(chunksPerTransaction, using: &g)
                if !sample.isEmpty {
                    do {
                        try store.read { r in
                            let radius = try r.radius()
                            for address in sample {
                                if try r.chunk(address, verify: true) == nil {
                                    let bin = Proximity.bin(of: address, relativeTo: store.overlay)
                                    if capacityMode && bin < Int(radius) { continue }
                                    throw BenchError("committed chunk \(address) (bin \(bin), radius \(radius)) is missing")
                                }
                            }
                            usleep(holdMicroseconds)
                        }
                    } catch {
                        Output.note("READER FAILURE: \(error)")
                        exit(3)
                    }
                }
                usleep(pauseMicroseconds)
            }
        }
        let box = Unmanaged.passRetained(Box(body))
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { context in
            Unmanaged<Box>.fromOpaque(context!).takeRetainedValue().body()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
        pthread_detach(thread)
    }

    private final class Box: Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
}
