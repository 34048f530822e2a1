import ShoalCore
import Testing

@testable import ShoalSimulation

/// Small networks run through the same machines as the real node, from a seed: they converge
/// with and without faults, a seed replays its run exactly, and a broken store model is caught.
@Suite struct SimulationTests {
    /// 20 nodes, 200 chunks; faults over by 30 s of simulated time.
    static func small(seed: UInt64, _ adjust: (inout SimulationConfig) -> Void = { _ in }) -> SimulationConfig {
        var config = SimulationConfig(nodes: 20, chunks: 200, seed: seed)
        config.maxSimSeconds = 300
        adjust(&config)
        return config
    }

    static func expectConverged(_ report: SimulationReport, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(report.converged, "seed \(report.config.seed) did not converge: \(report.failures)", sourceLocation: sourceLocation)
        #expect(report.counters.sealViolations == 0, "seed \(report.config.seed)", sourceLocation: sourceLocation)
    }

    @Test func aQuietNetworkConverges() {
        let report = Simulator(Self.small(seed: 11)).run()
        Self.expectConverged(report)
        #expect(report.counters.chunksStored > 0)
    }

    @Test func itConvergesThroughConnectionResets() {
        let report = Simulator(Self.small(seed: 12) { $0.resetsPerMinute = 6 }).run()
        Self.expectConverged(report)
        #expect(report.counters.resets > 10, "only \(report.counters.resets) resets")
    }

    @Test func itConvergesAfterAPartitionHeals() {
        let report = Simulator(Self.small(seed: 13) { $0.partitions = [.init(startMs: 4_000, endMs: 20_000, fraction: 0.3)] }).run()
        Self.expectConverged(report)
    }

    @Test func itConvergesWhenNodesCrashBetweenStoreWrites() {
        let report = Simulator(Self.small(seed: 14) { $0.crashes = 4 }).run()
        Self.expectConverged(report)
        #expect(report.counters.crashes == 4)
    }

    @Test func theSameSeedGivesTheSameRun() {
        // Stopped at 30 s, converged or not: the digest of any state must repeat.
        let config = Self.small(seed: 15) { $0.resetsPerMinute = 3; $0.crashes = 1; $0.maxSimSeconds = 30 }
        let first = Simulator(config).run()
        let second = Simulator(config).run()
        #expect(first.digest == second.digest)
        #expect(first.simMs == second.simMs && first.counters == second.counters)
        let other = Simulator(Self.small(seed: 16) { $0.resetsPerMinute = 3; $0.crashes = 1; $0.maxSimSeconds = 30 }).run()
        #expect(other.digest != first.digest)
    }

    /// With seals applied over missing chunks the check must fail: it can.
    @Test func aStoreThatSealsOverMissingChunksIsCaught() {
        let report = Simulator(Self.small(seed: 17) { $0.breakage = .sealsIgnoreRequirements; $0.maxSimSeconds = 60 }).run()
        #expect(!report.converged)
        #expect(report.counters.sealViolations > 0)
        #expect(report.failures.contains { $0.contains("seal over a missing chunk") }, "\(report.failures)")
    }

    @Test func theMemoryStoreSkipsASealWhoseRequiredChunkIsMissing() throws {
        let me = OverlayAddress(w0: 0, w1: 0, w2: 0, w3: 1), peer = OverlayAddress(w0: 1, w1: 0, w2: 0, w3: 0)
        var store = MemoryStore(overlay: me, epoch: 7)
        let a = try Chunk(payload: [1]), b = try Chunk(payload: [2])
        var batch = MemoryStore.Batch(chunks: [a])
        batch.seals = [MemoryStore.Seal(peer: peer, bin: 3, epoch: 9, range: 1...4, requires: [b.address])]
        let first = store.apply(batch)
        #expect(first.unsealed == [0] && store.intervals(of: peer).isEmpty)
        batch.chunks = [b]
        let second = store.apply(batch)
        #expect(second.unsealed.isEmpty && store.intervals(of: peer)[3]?.set == IntervalSet([1...4]))
        #expect(store.apply(MemoryStore.Batch(chunks: [a, b])).duplicates == 2)
        // A seal of another epoch replaces what the old one sealed.
        batch = MemoryStore.Batch()
        batch.seals = [MemoryStore.Seal(peer: peer, bin: 3, epoch: 10, range: 6...6, requires: [])]
        _ = store.apply(batch)
        #expect(store.intervals(of: peer)[3] == MemoryStore.Intervals(epoch: 10, set: IntervalSet([6...6])))
        store.checkInvariants()
    }

    @Test func eventsAtTheSameMillisecondRunInSchedulingOrder() {
        var queue = EventQueue<Int>()
        for (i, t) in [5, 3, 5, 1, 3, 5].enumerated() { queue.push(i, at: UInt64(t)) }
        queue.checkInvariants()
        var order: [Int] = []
        while let (_, i) = queue.pop() { order.append(i) }
        #expect(order == [3, 1, 4, 0, 2, 5])
    }

    /// Pushes and pops interleaved as the simulator makes them (events scheduled at the time
    /// being run, later, and now and then earlier): the order is always (time, scheduling order).
    @Test func theQueueRunsEventsInTimeThenSchedulingOrder() {
        var rng = SplitMix64(seed: 99)
        var queue = EventQueue<Int>()
        var pending: [(time: UInt64, id: Int)] = []
        var now: UInt64 = 0, nextID = 0
        for step in 0..<20_000 {
            if rng.next() % 3 != 0 || pending.isEmpty {
                let time = rng.next() % 17 == 0 ? now / 2 : now + rng.next() % 6
                queue.push(nextID, at: time)
                pending.append((time, nextID))
                nextID += 1
            } else {
                let expected = pending.indices.min { (pending[$0].time, pending[$0].id) < (pending[$1].time, pending[$1].id) }!
                let popped = queue.pop()
                #expect(popped?.time == pending[expected].time && popped?.payload == pending[expected].id)
                now = max(now, pending[expected].time)
                pending.remove(at: expected)
            }
            if step % 997 == 0 { queue.checkInvariants() }
            #expect(queue.count == pending.count)
        }
        while queue.pop() != nil {}
        queue.checkInvariants()
        #expect(queue.isEmpty)
    }
}
