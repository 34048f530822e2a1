// Events about downloads and chunks: start, add, cancel, answers to requests, store commits.
extension DownloadMachine {
    /// A caller wants `addresses` (repeats count once). `hints`: peers that may have any of
    /// them. `initialDelayMs`: none of them is asked for before then (pull sync may bring them
    /// first). `isStored` asks the store; stored chunks count as done at once. Throws, and
    /// changes nothing, when the ID is live or a budget would be exceeded.
    public mutating func start(
        _ id: DownloadID, addresses: [ChunkAddress], policy: DownloadPolicy, hints: [OverlayAddress] = [],
        initialDelayMs: UInt64 = 0, createdMs: UInt64? = nil, now: UInt64,
        isStored: (ChunkAddress) -> Bool = { _ in false }
    ) throws(DownloadRejected) -> [DownloadAction] {
        let now = advance(now)
        guard downloads[id] == nil else { throw DownloadRejected(.duplicateDownload, "\(id) is already downloading") }
        guard downloads.count < limits.downloadsMax else {
            throw DownloadRejected(.tooManyDownloads, "\(downloads.count) downloads, at most \(limits.downloadsMax)")
        }
        let (unique, stored) = try admit(addresses, known: [:], isStored: isStored)
        var download = Download(sequence: nextSequence, policy: policy, createdMs: createdMs ?? now,
                                startAtMs: now &+ initialDelayMs, chunks: [], position: [:], total: 0, hints: [])
        nextSequence += 1
        download.hints = merged(download.hints, hints.filter { peers[$0]?.dropped != true }, max: limits.hintsPerDownloadMax)
        downloads[id] = download
        downloadOrder.append(id)
        var fx = Effects()
        fx.touched.insert(id)
        join(unique, stored: stored, to: id, now: now, &fx)
        return finish(&fx, now: now)
    }

    /// More chunks for a live download (a file's tree is found level by level), and more hints.
    public mutating func add(
        _ addresses: [ChunkAddress], to id: DownloadID, hints: [OverlayAddress] = [], now: UInt64,
        isStored: (ChunkAddress) -> Bool = { _ in false }
    ) throws(DownloadRejected) -> [DownloadAction] {
        let now = advance(now)
        guard let download = downloads[id] else { throw DownloadRejected(.unknownDownload, "\(id) is not downloading") }
        let (unique, stored) = try admit(addresses, known: download.position, isStored: isStored)
        var fx = Effects()
        fx.touched.insert(id)
        let before = download.hints
        downloads[id]!.hints = merged(before, hints.filter { peers[$0]?.dropped != true }, max: limits.hintsPerDownloadMax)
        if downloads[id]!.hints != before { wakeWaiting(now: now) }
        join(unique, stored: stored, to: id, now: now, &fx)
        return finish(&fx, now: now)
    }

    /// The addresses a download would add, each once and not already in it, and which of them
    /// are stored; throws when they do not fit.
    private func admit(
        _ addresses: [ChunkAddress], known: [ChunkAddress: Int], isStored: (ChunkAddress) -> Bool
    ) throws(DownloadRejected) -> ([ChunkAddress], [Bool]) {
        var seen = Set<ChunkAddress>()
        let unique = addresses.filter { known[$0] == nil && seen.insert($0).inserted }
        guard known.count + unique.count <= limits.chunksPerDownloadMax else {
            throw DownloadRejected(.tooManyChunks, "\(known.count + unique.count) chunks, at most \(limits.chunksPerDownloadMax) a download")
        }
        var stored: [Bool] = []
        stored.reserveCapacity(unique.count)
        var new = 0
        for address in unique {
            let isNew = fetches[address] == nil
            let have = isNew && isStored(address)
            stored.append(have)
            if isNew && !have { new += 1 }
        }
        guard fetches.count + new <= limits.fetchSetMax else {
            throw DownloadRejected(.fetchSetFull, "\(fetches.count) chunks wanted, \(new) more would pass \(limits.fetchSetMax)")
        }
        return (unique, stored)
    }

    /// `id` wants these chunks too: each joins the chunk's fetch, or starts one.
    private mutating func join(_ addresses: [ChunkAddress], stored: [Bool], to id: DownloadID, now: UInt64, _ fx: inout Effects) {
        let sequence = downloads[id]!.sequence
        for (address, have) in zip(addresses, stored) {
            let position = downloads[id]!.chunks.count
            downloads[id]!.chunks.append(address)
            downloads[id]!.position[address] = position
            downloads[id]!.total += 1
            if have {
                downloads[id]!.done += 1
                continue
            }
            if var fetch = fetches[address] {
                let index = fetch.groups.firstIndex { downloads[$0]!.sequence > sequence } ?? fetch.groups.count
                fetch.groups.insert(id, at: index)
                fetch.key = key(of: address, groups: fetch.groups)
                fetches[address] = fetch
                switch fetch.state {
                case .failed:
                    // A new caller gets a fresh budget, and so do the downloads that counted it failed.
                    for group in fetch.groups where group != id {
                        downloads[group]!.failed -= 1
                        fx.touched.insert(group)
                    }
                    fetches[address]!.attempts = 0
                    fetches[address]!.tries = []
                    fetches[address]!.presenceAsked = 0
                    fetches[address]!.noProviderSince = nil
                    makeReady(address, now: now)
                case .ready, .delayed, .parked:
                    makeReady(address, now: now)  // a new key, the new download's hints, maybe no delay
                case .inFlight, .storing:
                    break
                }
            } else {
                fetches[address] = Fetch(state: .ready, groups: [id], key: key(of: address, groups: [id]))
                makeReady(address, now: now)
            }
            fx.emit(.saveFetch(address, entry(for: fetches[address]!)))
        }
    }

    /// The caller cancels its download. Its chunks no other download wants leave the fetch
    /// set, and their requests are cancelled; chunks others want go on for them. An unknown
    /// ID (ended already) changes nothing.
    public mutating func cancel(_ id: DownloadID, now: UInt64) -> [DownloadAction] {
        let now = advance(now)
        var fx = Effects()
        guard let download = downloads[id] else { return finish(&fx, now: now) }
        for address in download.chunks { leave(address, id, now: now, &fx) }
        downloads[id] = nil
        downloadOrder.removeAll { $0 == id }
        fx.emit(.removeDownload(id))
        fx.emit(.finished(id, .cancelled))
        return finish(&fx, now: now)
    }

    /// `id` no longer wants the chunk; without any download left, it leaves the fetch set.
    mutating func leave(_ address: ChunkAddress, _ id: DownloadID, now: UInt64, _ fx: inout Effects) {
        guard var fetch = fetches[address], let index = fetch.groups.firstIndex(of: id) else { return }
        fetch.groups.remove(at: index)
        guard !fetch.groups.isEmpty else {
            fetches[address] = fetch
            drop(address, &fx)
            return
        }
        fetch.key = key(of: address, groups: fetch.groups)
        fetches[address] = fetch
        if fetch.state == .ready { ready.push(ReadyEntry(key: fetch.key, address: address)) }
        fx.emit(.saveFetch(address, entry(for: fetch)))
    }

    /// The chunk leaves the fetch set; a request for it is cancelled.
    private mutating func drop(_ address: ChunkAddress, _ fx: inout Effects) {
        guard let fetch = fetches.removeValue(forKey: address) else { return }
        waiting.remove(address)
        if case .inFlight(let id) = fetch.state { fx.emit(.cancelRequest(endRequest(id))) }
        releaseSlot(of: fetch)
        fx.emit(.removeFetch(address))
    }

    /// A chunk that was being stored as the answer to a request no longer is: its peer's slot
    /// is free again.
    mutating func releaseSlot(of fetch: Fetch) {
        guard fetch.state == .storing, let peer = fetch.deliveredBy else { return }
        peers[peer]!.storing -= 1
    }

    // MARK: Answers

    /// `peer` delivered the chunk and the shell verified it (re-hashed). Whether asked of this
    /// peer, asked of another, or not asked at all: if a download wants it, the shell stores it
    /// (`storeChunk`) and reports `stored`. The peer is preferred for the rest of its downloads.
    public mutating func delivered(_ address: ChunkAddress, from peer: OverlayAddress, now: UInt64) -> [DownloadAction] {
        let now = advance(now)
        var fx = Effects()
        responded(peer, now: now)
        if peers[peer] != nil { peers[peer]!.falseClaims = 0 }
        guard let fetch = fetches[address] else {
            counters.deliveredUnwanted += 1
            return finish(&fx, now: now)
        }
        switch fetch.state {
        case .storing:
            counters.deliveredUnwanted += 1
            return finish(&fx, now: now)
        case .inFlight(let id):
            let request = endRequest(id)
            if request.peer != peer {
                counters.deliveredUnasked += 1
                fx.emit(.cancelRequest(request))
            } else {
                // Its slot stays taken until the commit.
                peers[peer]!.storing += 1
                fetches[address]!.deliveredBy = peer
            }
        case .failed:
            for group in fetch.groups {
                downloads[group]!.failed -= 1
                fx.touched.insert(group)
            }
            counters.deliveredUnasked += 1
        case .ready, .delayed, .parked:
            waiting.remove(address)
            counters.deliveredUnasked += 1
        }
        counters.delivered += 1
        fetches[address]!.state = .storing
        var newServer = false
        // A dropped peer's late delivery is stored, but does not bring it back into any list.
        for group in fetch.groups where peers[peer]?.dropped != true {
            var served = downloads[group]!.servedBy
            if let i = served.firstIndex(of: peer) { served.remove(at: i) } else { newServer = true }
            if limits.groupPeersMax > 0 {
                served.insert(peer, at: 0)
                if served.count > limits.groupPeersMax { served.removeLast() }
            }
            downloads[group]!.servedBy = served
        }
        if newServer && limits.groupPeersMax > 0 { wakeWaiting(now: now) }
        fx.emit(.storeChunk(address))
        return finish(&fx, now: now)
    }

    /// `peer` answered that it does not have the chunk. It is not asked for it again until
    /// its back-off for the chunk ends, and is no longer a hint for it. Had it claimed the
    /// chunk (offered it, or said it has it), that claim was false (`falseClaimsMax`).
    public mutating func notFound(_ address: ChunkAddress, from peer: OverlayAddress, now: UInt64) -> [DownloadAction] {
        let now = advance(now)
        var fx = Effects()
        responded(peer, now: now)
        guard let id = requestID(for: address, to: peer) else {
            counters.lateAnswers += 1
            return finish(&fx, now: now)
        }
        counters.notFound += 1
        _ = endRequest(id)
        if fetches[address]!.hints.contains(where: { $0.peer == peer && $0.confirmed }) { falseClaim(by: peer, now: now) }
        fetches[address]!.hints.removeAll { $0.peer == peer }
        tryFailed(address, peer, .notFound, now: now, &fx)
        return finish(&fx, now: now)
    }

    /// The request to `peer` failed without an answer about the chunk (a stream error, a
    /// refusal). It counts as an attempt; the peer is not taken for unresponsive.
    public mutating func requestFailed(_ address: ChunkAddress, peer: OverlayAddress, now: UInt64) -> [DownloadAction] {
        let now = advance(now)
        var fx = Effects()
        guard let id = requestID(for: address, to: peer) else {
            counters.lateAnswers += 1
            return finish(&fx, now: now)
        }
        counters.requestsFailed += 1
        _ = endRequest(id)
        tryFailed(address, peer, .failed, now: now, &fx)
        return finish(&fx, now: now)
    }

    /// `peer` answered the request for `address` with another chunk (`got`, what the shell's
    /// re-hash gave): a fault no honest peer makes, and a failed attempt of the chunk.
    public mutating func wrongChunk(_ address: ChunkAddress, from peer: OverlayAddress, got: ChunkAddress,
                                    now: UInt64) -> [DownloadAction] {
        [.fault(peer, .invalidChunk("download of \(address.hex.prefix(16)) answered with \(got.hex.prefix(16))"))]
            + requestFailed(address, peer: peer, now: now)
    }

    /// The store committed the chunk, which removed it from the fetch set in the same
    /// transaction: delivered by a request of ours, or by pull sync. Every download wanting it
    /// counts it done. The one event that completes a chunk.
    public mutating func stored(_ address: ChunkAddress, now: UInt64) -> [DownloadAction] {
        let now = advance(now)
        var fx = Effects()
        guard let fetch = fetches.removeValue(forKey: address) else { return finish(&fx, now: now) }
        waiting.remove(address)
        if case .inFlight(let id) = fetch.state { fx.emit(.cancelRequest(endRequest(id))) }
        releaseSlot(of: fetch)
        let wasFailed = if case .failed = fetch.state { true } else { false }
        for group in fetch.groups {
            downloads[group]!.done += 1
            if wasFailed { downloads[group]!.failed -= 1 }
            fx.touched.insert(group)
        }
        counters.stored += 1
        return finish(&fx, now: now)
    }

    /// Storing the delivered chunk failed (a store error): it is fetched again, which costs
    /// one of its attempts.
    public mutating func storeFailed(_ address: ChunkAddress, now: UInt64) -> [DownloadAction] {
        let now = advance(now)
        var fx = Effects()
        guard let fetch = fetches[address], fetch.state == .storing else { return finish(&fx, now: now) }
        releaseSlot(of: fetch)
        fetches[address]!.deliveredBy = nil
        counters.storesFailed += 1
        // A chunk delivered after it had failed may have its budget spent already.
        fetches[address]!.attempts = min(fetches[address]!.attempts + 1, limits.attemptsPerChunkMax)
        if fetches[address]!.attempts >= limits.attemptsPerChunkMax {
            fail(address, reason(fetches[address]!), &fx)
        } else {
            makeReady(address, now: now)
            fx.emit(.saveFetch(address, entry(for: fetches[address]!)))
        }
        return finish(&fx, now: now)
    }

    // MARK: Hints

    /// `peer` has these chunks: it offered them (pull sync), or announced them. Each one
    /// wanted takes the peer as a confirmed hint (unless it is dropped, or its claims are
    /// distrusted after false ones); hints are not saved until the chunk's entry changes for
    /// another reason.
    public mutating func hinted(_ addresses: [ChunkAddress], by peer: OverlayAddress, now: UInt64) -> [DownloadAction] {
        let now = advance(now)
        var fx = Effects()
        if peers[peer]?.dropped != true && peers[peer]?.isDistrusted(at: now) != true {
            for address in addresses where fetches[address] != nil { addHint(peer, to: address, now: now) }
        }
        return finish(&fx, now: now)
    }

    /// `peer` said which of `addresses` it has (`bits[i]` for `addresses[i]`), outside a query
    /// of ours (`presence(id:from:bitvector:now:)` takes the answers to those). A peer that has
    /// a chunk becomes a confirmed hint; one that lacks it is not asked for it for
    /// `absentRetryMs`. An answer of the wrong length is a fault.
    public mutating func presence(_ peer: OverlayAddress, addresses: [ChunkAddress], bits: [Bool], now: UInt64) -> [DownloadAction] {
        let now = advance(now)
        var fx = Effects()
        guard addresses.count == bits.count else {
            fx.emit(.fault(peer, .malformedOffer("presence answer of \(bits.count) bits for \(addresses.count) addresses")))
            return finish(&fx, now: now)
        }
        applyPresence(peer, addresses: addresses, bits: bits, now: now)
        return finish(&fx, now: now)
    }

    /// Puts `peer` first among the chunk's confirmed hints, and wakes the chunk if it waits.
    mutating func addHint(_ peer: OverlayAddress, to address: ChunkAddress, now: UInt64) {
        var hints = fetches[address]!.hints
        hints.removeAll { $0.peer == peer }
        hints.insert(Hint(peer: peer, confirmed: true), at: 0)
        if hints.count > limits.hintsPerChunkMax { hints.removeLast(hints.count - limits.hintsPerChunkMax) }
        fetches[address]!.hints = hints
        if waiting.contains(address) { makeReady(address, now: now) }
    }

    // MARK: Helpers

    /// The ID of the request out for the chunk to `peer`, if there is one.
    func requestID(for address: ChunkAddress, to peer: OverlayAddress) -> UInt64? {
        guard let fetch = fetches[address], case .inFlight(let id) = fetch.state, requests[id]?.peer == peer else { return nil }
        return id
    }

    /// Forgets a request (answered, timed out, cancelled); the peer's slot is free again.
    mutating func endRequest(_ id: UInt64) -> FetchRequest {
        let request = requests.removeValue(forKey: id)!
        peers[request.peer]!.inFlight -= 1
        return FetchRequest(id: id, address: request.address, peer: request.peer, deadlineMs: request.deadlineMs)
    }

    /// Asking `peer` for the chunk failed (its request is already ended): the peer backs off
    /// for this chunk, the chunk spends an attempt, and fails when its budget is spent.
    mutating func tryFailed(_ address: ChunkAddress, _ peer: OverlayAddress, _ failure: TryFailure, now: UInt64, _ fx: inout Effects) {
        guard fetches[address] != nil else { return }
        var attempts = 0
        updateTry(address, peer) { t in
            t.attempts += 1
            t.lastFailure = failure
            attempts = t.attempts
        }
        let delay = retryDelay(afterAttempts: attempts)
        updateTry(address, peer) { t in t.notBeforeMs = max(t.notBeforeMs, now &+ delay) }
        fetches[address]!.attempts += 1
        if fetches[address]!.attempts >= limits.attemptsPerChunkMax {
            fail(address, reason(fetches[address]!), &fx)
        } else {
            makeReady(address, now: now)
            fx.emit(.saveFetch(address, entry(for: fetches[address]!)))
        }
    }

    /// Changes (or starts) the record of asking `peer` for the chunk. When the chunk's list is
    /// full, a new record takes the place of the one whose back-off ends first among peers
    /// with attempts left (a spent peer is forgotten only when all are spent: the chunk's own
    /// budget still bounds it); with `evict` false the new record is not kept at all.
    mutating func updateTry(_ address: ChunkAddress, _ peer: OverlayAddress, evict: Bool = true, _ change: (inout PeerTry) -> Void) {
        var tries = fetches[address]!.tries
        if let i = tries.firstIndex(where: { $0.peer == peer }) {
            change(&tries[i])
        } else {
            if tries.count >= limits.peersTriedPerChunkMax {
                guard evict else { return }
                let spent = limits.attemptsPerPeerMax
                let victim = tries.indices.min {
                    (tries[$0].attempts >= spent ? 1 : 0, tries[$0].notBeforeMs, tries[$0].peer)
                        < (tries[$1].attempts >= spent ? 1 : 0, tries[$1].notBeforeMs, tries[$1].peer)
                }!
                tries.remove(at: victim)
            }
            var t = PeerTry(peer: peer, attempts: 0, notBeforeMs: 0, lastFailure: .absent)
            change(&t)
            tries.append(t)
        }
        fetches[address]!.tries = tries
    }

    /// Exponential from `retryDelayMinMs`, doubling, ±25 % jitter, at most `retryDelayMaxMs`.
    mutating func retryDelay(afterAttempts attempts: Int) -> UInt64 {
        let shift = UInt64(min(max(attempts - 1, 0), 40))
        let base = min(limits.retryDelayMaxMs, limits.retryDelayMinMs << shift)
        let spread = base / 2
        let jittered = base - base / 4 + (spread == 0 ? 0 : rng.next() % (spread + 1))
        return min(limits.retryDelayMaxMs, jittered)
    }

    /// Why the chunk failed, from what asking cost.
    func reason(_ fetch: Fetch) -> FetchFailure {
        let asked = fetch.tries.filter { $0.attempts > 0 }
        if fetch.attempts == 0 { return .noProvider }
        if !asked.isEmpty && asked.allSatisfy({ $0.lastFailure == .notFound }) { return .notFound(peers: asked.count) }
        return .attemptsExhausted(attempts: fetch.attempts)
    }

    /// The chunk cannot be fetched (no request of it is out): each download wanting it counts
    /// it failed and hears why.
    mutating func fail(_ address: ChunkAddress, _ reason: FetchFailure, _ fx: inout Effects) {
        waiting.remove(address)
        fetches[address]!.state = .failed(reason)
        let fetch = fetches[address]!
        for group in fetch.groups {
            downloads[group]!.failed += 1
            fx.touched.insert(group)
            fx.emit(.chunkFailed(group, MissingChunk(address: address, reason: reason)))
        }
        counters.chunksFailed += 1
        fx.emit(.saveFetch(address, entry(for: fetch)))
    }

    /// The chunk's place in the queue: its best download's.
    func key(of address: ChunkAddress, groups: [DownloadID]) -> FetchKey {
        var best: FetchKey?
        for group in groups {
            let d = downloads[group]!
            let k = FetchKey(rank: d.policy == .onRead ? 0 : 1, download: d.sequence, position: d.position[address]!)
            if best == nil || k < best! { best = k }
        }
        return best!
    }

    /// `extra` after `existing`, each once, at most `max`.
    func merged(_ existing: [OverlayAddress], _ extra: [OverlayAddress], max: Int) -> [OverlayAddress] {
        var out = existing
        for peer in extra where out.count < max && !out.contains(peer) { out.append(peer) }
        return out
    }
}
