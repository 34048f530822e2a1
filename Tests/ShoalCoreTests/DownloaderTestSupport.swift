import ShoalCore

/// A chunk address spread over the address space like a hash.
func chunk(_ i: Int) -> ChunkAddress { spread(UInt64(i), salt: 0xC0FF_EE00) }

/// A peer's overlay, likewise.
func peer(_ i: Int) -> OverlayAddress { spread(UInt64(i), salt: 0xBEE5_0000) }

func download(_ i: Int) -> DownloadID { DownloadID(spread(UInt64(i), salt: 0xD0_0000)) }

private func spread(_ i: UInt64, salt: UInt64) -> Address32 {
    var g = SplitMix64(seed: i &* 0x1_0000_0001 ^ salt)
    return Address32(w0: g.next(), w1: g.next(), w2: g.next(), w3: g.next())
}

extension DownloadAction {
    var request: FetchRequest? { if case .request(let r) = self { return r }; return nil }
    var cancelled: FetchRequest? { if case .cancelRequest(let r) = self { return r }; return nil }
    var dialled: OverlayAddress? { if case .dial(let p) = self { return p }; return nil }
    var storing: ChunkAddress? { if case .storeChunk(let a) = self { return a }; return nil }
    var removedFetch: ChunkAddress? { if case .removeFetch(let a) = self { return a }; return nil }
    var savedFetch: (ChunkAddress, FetchEntry)? { if case .saveFetch(let a, let e) = self { return (a, e) }; return nil }
    var finished: (DownloadID, DownloadOutcome)? { if case .finished(let id, let o) = self { return (id, o) }; return nil }
    var progress: (DownloadID, DownloadProgress)? { if case .progress(let id, let p) = self { return (id, p) }; return nil }
}

/// One `DownloadMachine`, a manual clock, and the actions it returned since the last `take`.
/// Every event is followed by both invariant checks.
struct DownloaderHarness {
    var machine: DownloadMachine
    var now: UInt64 = 0
    var actions: [DownloadAction] = []

    init(limits: DownloadLimits = DownloadLimits(), seed: UInt64 = 1) {
        machine = DownloadMachine(limits: limits, seed: seed)
    }

    @discardableResult
    mutating func record(_ produced: [DownloadAction]) -> [DownloadAction] {
        machine.checkInvariants()
        machine.checkKeepsPeersBusy()
        actions += produced
        return produced
    }

    @discardableResult
    mutating func start(_ id: DownloadID, _ chunks: [ChunkAddress], policy: DownloadPolicy = .eagerPin,
                        hints: [OverlayAddress] = [], delayMs: UInt64 = 0,
                        stored: Set<ChunkAddress> = []) throws(DownloadRejected) -> [DownloadAction] {
        let produced = try machine.start(id, addresses: chunks, policy: policy, hints: hints, initialDelayMs: delayMs,
                                         now: now, isStored: { stored.contains($0) })
        return record(produced)
    }

    mutating func connect(_ peers: OverlayAddress...) {
        for p in peers { record(machine.peerConnected(p, now: now)) }
    }

    @discardableResult
    mutating func deliver(_ address: ChunkAddress, from p: OverlayAddress) -> [DownloadAction] {
        record(machine.delivered(address, from: p, now: now))
    }

    @discardableResult
    mutating func store(_ address: ChunkAddress) -> [DownloadAction] {
        record(machine.stored(address, now: now))
    }

    @discardableResult
    mutating func notFound(_ address: ChunkAddress, from p: OverlayAddress) -> [DownloadAction] {
        record(machine.notFound(address, from: p, now: now))
    }

    @discardableResult
    mutating func cancel(_ id: DownloadID) -> [DownloadAction] {
        record(machine.cancel(id, now: now))
    }

    /// Moves the clock and ticks.
    @discardableResult
    mutating func advance(to time: UInt64) -> [DownloadAction] {
        now = max(now, time)
        return record(machine.tick(now: now))
    }

    /// Ticks at the machine's next deadline; false when it has none.
    @discardableResult
    mutating func advanceToNextDeadline() -> Bool {
        guard let next = machine.nextDeadline else { return false }
        advance(to: next)
        return true
    }

    /// Ticks at the machine's next deadline; throws when it has none (it waits for nothing,
    /// so a test that expects it to go on is stuck).
    mutating func tickAtNextDeadline() throws {
        guard advanceToNextDeadline() else { throw Stuck(now: now) }
    }

    struct Stuck: Error, CustomStringConvertible {
        var now: UInt64
        var description: String { "no deadline left at \(now) ms" }
    }

    @discardableResult
    mutating func take() -> [DownloadAction] {
        defer { actions = [] }
        return actions
    }

    /// The requests sent since the last take; everything else is dropped.
    mutating func takeRequests() -> [FetchRequest] { take().compactMap(\.request) }

    var inFlightPerPeer: [OverlayAddress: Int] {
        machine.requestsInFlight.reduce(into: [:]) { $0[$1.peer, default: 0] += 1 }
    }
}
