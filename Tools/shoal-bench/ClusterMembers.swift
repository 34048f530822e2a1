import Foundation
import ShoalCore
import ShoalStore

#if canImport(Glibc)
import Glibc
#endif

/// One node of a `shoal-bench cluster` network across its lives: the process now running (if
/// any), where it listens (fixed after its first start, so a restarted node is found where its
/// peers knew it), and what its `/status` said last.
final class ClusterMember {
    let index: Int
    let dataDirectory: String
    let logPath: String
    private(set) var process: NodeProcess?
    /// "127.0.0.1:PORT" for peers and the API port, both from the first start.
    private(set) var listen = "127.0.0.1:0"
    private(set) var apiAddress = "127.0.0.1:0"
    private(set) var overlay: OverlayAddress?
    /// From the last `/status` this life answered.
    private(set) var depth = 0
    private(set) var peers = 0
    private var duplicatesNow = 0
    private var receivedNow = 0
    /// `chunksDuplicate` and `chunksReceived` of earlier lives (the counters start at 0 with
    /// each process; what a life counted after its last poll is lost with it).
    private var duplicatesBefore = 0
    private var receivedBefore = 0
    private(set) var starts = 0
    /// A read-only open of the store, kept across polls of one life.
    private var reader: Store?

    init(index: Int, root: String) {
        self.index = index
        dataDirectory = "\(root)/node-\(index)"
        logPath = "\(root)/node-\(index).log"
    }

    var name: String { "node \(index)" }
    var isRunning: Bool { process != nil }
    var duplicates: Int { duplicatesBefore + duplicatesNow }
    var received: Int { receivedBefore + receivedNow }
    var overlayPrefix: String { overlay.map { String($0.hex.prefix(8)) } ?? "?" }

    /// Starts (or restarts) the node and waits for its ready line. A restart asks for the ports
    /// of the first start; one of them may have been taken meanwhile, so it tries a few times.
    func start(shoal: String, bootstrap: [String], extra: [String], logLevel: String) throws {
        precondition(process == nil, "\(name) is already running")
        var lastError: Error?
        for attempt in 0..<ClusterMember.restartAttemptsMax {
            if attempt > 0 { usleep(1_000_000) }
            do {
                let started = try NodeProcess.start(name, shoal: shoal, dataDirectory: dataDirectory, peers: bootstrap,
                                                    extra: extra, logPath: logPath, logLevel: logLevel,
                                                    listen: listen, api: apiAddress)
                process = started
                listen = started.listen
                apiAddress = "127.0.0.1:\(started.apiPort)"
                starts += 1
                duplicatesNow = 0
                receivedNow = 0
                if let status = try? started.getJSON("/status"), let hex = status["overlay"] as? String {
                    overlay = Address32(hex: hex)
                }
                return
            } catch {
                lastError = error
            }
        }
        throw lastError ?? BenchError("\(name) did not start")
    }

    static let restartAttemptsMax = 3

    /// SIGKILL: the process dies between any two instructions, as in a power cut.
    func kill() {
        closeReader()
        process?.kill()
        process = nil
        duplicatesBefore += duplicatesNow
        receivedBefore += receivedNow
        duplicatesNow = 0
        receivedNow = 0
    }

    /// SIGTERM without waiting: all nodes are told at once, so that none syncs from the others
    /// while they leave one by one (its depth falling as its peers go).
    func beginStop() {
        closeReader()
        process?.child.signal(SIGTERM)
    }

    /// Waits (bounded) for the exit `beginStop` asked for; nil when it was not running.
    func waitStopped(timeout: Double = 30) -> ChildProcess.Termination? {
        defer { process = nil }
        return process?.child.wait(until: monotonicSeconds() + timeout).termination
    }

    /// Reads `/status`: depth, peers and the delivery counters. False when it did not answer.
    @discardableResult
    func poll() -> Bool {
        guard let process, let status = try? process.getJSON("/status") else { return false }
        depth = status["depth"] as? Int ?? depth
        peers = status["peers"] as? Int ?? peers
        duplicatesNow = status["chunksDuplicate"] as? Int ?? duplicatesNow
        receivedNow = status["chunksReceived"] as? Int ?? receivedNow
        if overlay == nil, let hex = status["overlay"] as? String { overlay = Address32(hex: hex) }
        return true
    }

    /// Which of `addresses` the store holds, read-only (the node may be running); nil while
    /// the store cannot be opened.
    func holds(_ addresses: [ChunkAddress]) -> [Bool]? {
        if reader == nil {
            guard Files.exists(dataDirectory + "/store/data.mdb") else { return nil }
            reader = try? Store(directory: dataDirectory + "/store", options: Store.Options(readOnly: true))
        }
        return try? reader?.has(addresses)
    }

    func closeReader() {
        reader?.close()
        reader = nil
    }

    /// Bytes the store occupies on disk (LMDB file and slot file, as `du` counts them).
    var storeDiskBytes: Int {
        ["data.mdb", "chunks.slots"].reduce(0) { $0 + Files.allocatedBytes(dataDirectory + "/store/" + $1) }
    }
}

/// What the stores hold against what each node's neighbourhood needs.
struct ClusterCoverage {
    struct Gap {
        let node: Int
        let chunk: ChunkAddress
        let po: Int
    }

    /// Per node: chunks held, held beyond its neighbourhood (PO < depth), missing from it.
    var held: [Int]
    var beyond: [Int]
    var missing: [Int]
    /// Up to `examplesMax` missing (node, chunk) pairs, node by node.
    var examples: [Gap]
    /// Per chunk, the nodes holding it (for explaining a gap).
    var holders: [ChunkAddress: [Int]]

    static let examplesMax = 8

    var converged: Bool { missing.allSatisfy { $0 == 0 } }
    var missingTotal: Int { missing.reduce(0, +) }

    /// Checks every chunk against every node: a node whose depth is `d` must hold every chunk
    /// at PO ≥ `d` to its overlay. Nil when a node's store or overlay cannot be read yet.
    static func check(_ members: [ClusterMember], chunks: [ChunkAddress], depths: [Int]) -> ClusterCoverage? {
        var coverage = ClusterCoverage(held: [], beyond: [], missing: [], examples: [], holders: [:])
        for (member, depth) in zip(members, depths) {
            guard let overlay = member.overlay, let has = member.holds(chunks) else { return nil }
            var held = 0, beyond = 0, missing = 0
            for (chunk, present) in zip(chunks, has) {
                let po = chunk.proximity(to: overlay)
                if present {
                    held += 1
                    if po < depth { beyond += 1 }
                    coverage.holders[chunk, default: []].append(member.index)
                } else if po >= depth {
                    missing += 1
                    if coverage.examples.count < examplesMax { coverage.examples.append(Gap(node: member.index, chunk: chunk, po: po)) }
                }
            }
            coverage.held.append(held)
            coverage.beyond.append(beyond)
            coverage.missing.append(missing)
        }
        return coverage
    }

    /// A few lines naming what is missing where.
    func describeGaps(_ members: [ClusterMember], depths: [Int], uploadedTo: [ChunkAddress: Int]) -> String {
        var lines = ["missing \(missingTotal) chunk copies; per node (index: missing/held, depth, peers):"]
        lines.append(members.indices.map { "\($0): \(missing[$0])/\(held[$0]) d\(depths[$0]) p\(members[$0].peers)" }
            .joined(separator: ", "))
        for gap in examples {
            let member = members[gap.node]
            let holders = (holders[gap.chunk] ?? []).map(String.init).joined(separator: ",")
            lines.append("  node \(gap.node) (\(member.overlayPrefix)…, depth \(depths[gap.node]), \(member.peers) peers) lacks "
                         + "\(gap.chunk.hex.prefix(16))… at PO \(gap.po); uploaded to node \(uploadedTo[gap.chunk].map(String.init) ?? "?"), "
                         + "held by nodes [\(holders)]")
        }
        return lines.joined(separator: "\n")
    }
}

/// N real nodes on 127.0.0.1 that each know only node 0 and find the rest through hive, with
/// the run's seed and deadline: what the benches that run a network (`cluster`, `retrieval`)
/// share.
struct LocalCluster {
    let members: [ClusterMember]
    let shoal: String
    let logLevel: String
    let seed: UInt64
    let started = monotonicSeconds()
    let deadline: Double

    init(nodes: Int, root: String, shoal: String, logLevel: String, seed: UInt64, timeout: Double) {
        members = (0..<nodes).map { ClusterMember(index: $0, root: root) }
        self.shoal = shoal
        self.logLevel = logLevel
        self.seed = seed
        deadline = started + timeout
    }

    /// Every node may be connected to every other, all from 127.0.0.1.
    private var limitFlags: [String] {
        let inbound = String(2 * members.count + 16)
        return ["--inbound-per-ip-max", inbound, "--inbound-per-subnet-max", inbound,
                "--inbound-max", String(max(256, 2 * members.count + 16))]
    }

    /// Starts (or restarts) a member, told of node 0 unless it is node 0.
    func start(_ member: ClusterMember) throws {
        let bootstrap = member.index == 0 ? [] : [members[0].listen]
        try member.start(shoal: shoal, bootstrap: bootstrap, extra: limitFlags, logLevel: logLevel)
    }

    func killAll() {
        for member in members where member.isRunning { member.kill() }
    }

    /// The run's `i`-th chunk: 4,096 bytes drawn from the seed, the same in every run of it.
    func chunk(_ i: Int) throws -> Chunk {
        var payloadRandom = SplitMix64(seed: derivedSeed(seed, 2, UInt64(i)))
        return try Chunk(payload: payloadRandom.bytes(Chunk.payloadMax))
    }
}
