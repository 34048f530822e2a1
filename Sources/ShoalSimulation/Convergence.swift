import ShoalCore

/// What happened in a run, summed over every node and connection.
public struct SimulationCounters: Sendable, Equatable {
    public var events: UInt64 = 0
    /// Messages sent (sync and hive).
    public var messages = 0
    public var connections = 0
    public var dials = 0, dialsFailed = 0
    public var resets = 0, pruned = 0, crashes = 0
    /// Writes submitted but not committed when their node crashed.
    public var writesLost = 0
    public var chunksServed = 0
    /// Chunks newly stored from sync, and chunks delivered that the store already held.
    public var chunksStored = 0
    public var chunksDeliveredTwice = 0
    /// Seals the store skipped (a required chunk not stored yet), and seals that covered a
    /// chunk the node did not hold (must stay 0).
    public var sealsSkipped = 0
    public var sealViolations = 0
    public var intervalResets = 0
    /// Hive entries a session's hive machine did not accept (rate, own overlay, …).
    public var hiveDropped = 0
    public var depthChanges = 0
    /// From the sessions' machines, when they end.
    public var lateReplies = 0
    public var penalties = 0
    /// Peers dropped for a fault, by the fault's kind.
    public var drops: [String: Int] = [:]

    mutating func record(fault: PeerFault) {
        let kind = "\(fault)".prefix { $0 != ":" && $0 != " " }
        drops[String(kind), default: 0] += 1
    }
}

/// The outcome of a run.
public struct SimulationReport: Sendable {
    public var config: SimulationConfig
    public var converged: Bool
    /// Simulated milliseconds when the run stopped.
    public var simMs: UInt64
    public var counters: SimulationCounters
    /// When not converged: what failed (a few examples).
    public var failures: [String]
    /// SHA-256 over the canonical encoding of the final state (`Simulator.digest`), hex.
    public var digest: String
}

extension Simulator {
    /// What keeps the run from counting as converged, at most `examplesMax` lines (empty:
    /// converged). Converged: every node runs; every node's depth has been the same for
    /// `depthStableMs`; every chunk whose upload committed is held by every node whose
    /// neighbourhood holds it (PO(chunk, node) ≥ the node's depth); no seal ever covered a
    /// chunk its node did not hold, and no sealed interval covers one now.
    func convergenceFailures(examplesMax: Int) -> [String] {
        var out: [String] = []
        func fail(_ text: String) -> Bool {
            out.append(text)
            return out.count >= examplesMax
        }
        if now < config.quietFromMs && fail("faults or uploads still under way at \(now) ms") { return out }
        for v in sealViolations where fail("seal over a missing chunk: \(v)") { return out }
        for node in nodes where !node.alive {
            if fail("node \(node.index) is down") { return out }
        }
        for node in nodes where node.alive && now - node.depthChangedMs < config.depthStableMs {
            if fail("node \(node.index): depth \(node.depth) changed at \(node.depthChangedMs) ms") { return out }
        }
        guard out.isEmpty else { return out }
        for (c, chunk) in chunks.enumerated() where uploaded[c] {
            for node in nodes {
                let po = chunk.address.proximity(to: node.overlay)
                if po >= node.depth && !node.store.has(chunk.address) {
                    if fail("node \(node.index) (depth \(node.depth)) misses chunk \(c) \(chunk.address.hex.prefix(16)) at PO \(po)") { return out }
                }
            }
        }
        for node in nodes {
            for text in sealedButMissing(node, examplesMax: examplesMax - out.count) where fail(text) { return out }
        }
        return out
    }

    /// Bin IDs that `node` sealed of a peer's bin (same epoch) whose chunks it does not hold.
    private func sealedButMissing(_ node: SimNode, examplesMax: Int) -> [String] {
        var out: [String] = []
        for peer in node.store.intervals.keys.sorted() {
            guard let p = index(of: peer) else { continue }
            let peerStore = nodes[p].store
            for (bin, record) in node.store.intervals(of: peer).sorted(by: { $0.key < $1.key }) where record.epoch == peerStore.epoch {
                for range in record.set.ranges {
                    for id in range {
                        guard let address = peerStore.address(bin: Int(bin), binID: id) else {
                            out.append("node \(node.index) sealed node \(p)'s bin \(bin) up to \(range.upperBound), beyond its cursor \(peerStore.cursor(bin: Int(bin)))")
                            break
                        }
                        if !node.store.has(address) {
                            out.append("node \(node.index) sealed node \(p)'s bin \(bin) ID \(id) but misses chunk \(address.hex.prefix(16))")
                        }
                        if out.count >= examplesMax { return out }
                    }
                }
            }
        }
        return out
    }

    /// SHA-256 over the final state, per node in overlay order: its overlay, its depth, its
    /// chunks' addresses sorted, and its intervals (per peer in overlay order, per bin: the
    /// epoch and the ranges). Hex.
    func digest() -> String {
        var bytes: [UInt8] = []
        func put(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        for node in nodes.sorted(by: { $0.overlay < $1.overlay }) {
            node.overlay.append(to: &bytes)
            put(UInt64(node.depth))
            let held = node.store.chunks.keys.sorted()
            put(UInt64(held.count))
            for address in held { address.append(to: &bytes) }
            let peers = node.store.intervals.keys.sorted()
            put(UInt64(peers.count))
            for peer in peers {
                peer.append(to: &bytes)
                let bins = node.store.intervals(of: peer).sorted { $0.key < $1.key }
                put(UInt64(bins.count))
                for (bin, record) in bins {
                    put(UInt64(bin))
                    put(record.epoch)
                    put(UInt64(record.set.ranges.count))
                    for range in record.set.ranges {
                        put(range.lowerBound)
                        put(range.upperBound)
                    }
                }
            }
        }
        // ShoalCore's SHA-256 (the chunk hash): SHA-256(length as UInt64 LE ‖ encoding).
        return Chunk.address(span: UInt64(bytes.count), payload: bytes).hex
    }
}
