// Presence queries (`WantHave → Presence`) for chunks nobody can be asked for, and the claims
// peers make (offers, presence bits) that turn out false.
extension DownloadMachine {
    /// Fills the free query slots: takes waiting chunks in queue order and puts each into a
    /// query to the connected peer closest to its address that it may ask (not a hint of it,
    /// not asked or told about it yet, not backing off or distrusted, no query out), at most
    /// `presenceBatchMax` chunks a query and one query a peer. Looks at `scheduleScanMax`
    /// chunks at most; a chunk whose peers all have queries out stays queued.
    mutating func queryPresence(now: UInt64, _ fx: inout Effects) {
        let slots = limits.presenceQueriesInFlightMax - presenceQueries.count
        guard slots > 0, !presenceQueue.isEmpty else { return }
        var batches: [(peer: OverlayAddress, addresses: [ChunkAddress])] = []
        var batchOf: [OverlayAddress: Int] = [:]
        var kept: [ReadyEntry] = []
        // The queue may hold a chunk twice (queued again under a new key while it waited): it
        // goes into one query of this pass, not two (it is marked as in a query only below).
        var taken = Set<ChunkAddress>()
        var scanned = 0
        while scanned < limits.scheduleScanMax, let top = presenceQueue.popMin() {
            guard !taken.contains(top.address), let fetch = fetches[top.address], mayQuery(top.address, fetch) else { continue }
            scanned += 1
            var chosen: OverlayAddress?
            var busy = false
            for peer in closestConnected(to: top.address, count: limits.presencePeersPerChunkMax)
            where mayAskPresence(peer, about: fetch, now: now) {
                if let i = batchOf[peer] {
                    if batches[i].addresses.count < limits.presenceBatchMax { chosen = peer; break }
                    busy = true
                } else if peers[peer]!.presenceOut != nil || batches.count >= slots {
                    busy = true
                } else {
                    chosen = peer
                    break
                }
            }
            if let peer = chosen {
                taken.insert(top.address)
                if let i = batchOf[peer] {
                    batches[i].addresses.append(top.address)
                } else {
                    batchOf[peer] = batches.count
                    batches.append((peer, [top.address]))
                }
            } else if busy {
                kept.append(top)
            }
            // Nobody at all to ask: dropped from the queue; it comes back when it waits anew
            // (the peers changed).
            if batches.count == slots && batches.allSatisfy({ $0.addresses.count >= limits.presenceBatchMax }) { break }
        }
        for entry in kept { presenceQueue.push(entry) }
        for (peer, addresses) in batches {
            let id = nextRequestID
            nextRequestID += 1
            let deadline = now &+ limits.presenceTimeoutMs
            presenceQueries[id] = PresenceOut(peer: peer, addresses: addresses, sentMs: now, deadlineMs: deadline)
            peers[peer]!.presenceOut = id
            for address in addresses {
                fetches[address]!.inPresence = id
                fetches[address]!.presenceAsked += 1
            }
            counters.presenceQueries += 1
            fx.emit(.askPresence(PresenceQuery(id: id, peer: peer, addresses: addresses, deadlineMs: deadline)))
        }
    }

    /// Whether the chunk waits for a peer and may go into a presence query.
    func mayQuery(_ address: ChunkAddress, _ fetch: Fetch) -> Bool {
        limits.presenceQueriesInFlightMax > 0 && waiting.contains(address) && fetch.inPresence == nil
            && fetch.presenceAsked < limits.presencePeersPerChunkMax
    }

    /// Queues a chunk that now waits for a peer for a presence query, when it may go into one.
    mutating func queueForPresence(_ address: ChunkAddress) {
        guard let fetch = fetches[address], mayQuery(address, fetch) else { return }
        presenceQueue.push(ReadyEntry(key: fetch.key, address: address))
    }

    /// Whether `peer` may be asked whether it has the chunk: connected, answering, trusted,
    /// no query out, and neither a hint of the chunk nor a peer asked for it or told about it
    /// already (its answer is in the chunk's tries).
    func mayAskPresence(_ peer: OverlayAddress, about fetch: Fetch, now: UInt64) -> Bool {
        guard let record = peers[peer], record.connected, !record.dropped, record.backoffUntilMs == nil,
              !record.isDistrusted(at: now) else { return false }
        return !fetch.hints.contains { $0.peer == peer } && !fetch.tries.contains { $0.peer == peer }
    }

    /// `peer` answered our presence query `id`: bit `i` (LSB first in each byte) set when it
    /// stores the query's address `i`. A peer that has a chunk becomes a confirmed hint of it
    /// (and is asked for it); one that lacks it is not asked for it for `absentRetryMs`. An
    /// answer of the wrong length, or with bits set past the count, is a fault, and the
    /// peer's claims are ignored for `distrustHoldMs`. An answer
    /// for a query no longer out (timed out, from another peer) is ignored.
    public mutating func presence(id: UInt64, from peer: OverlayAddress, bitvector: [UInt8], now: UInt64) -> [DownloadAction] {
        let now = advance(now)
        var fx = Effects()
        guard let query = presenceQueries[id], query.peer == peer else {
            counters.lateAnswers += 1
            return finish(&fx, now: now)
        }
        endPresence(id)
        let count = query.addresses.count
        if let problem = Self.bitvectorProblem(bitvector, count: count) {
            counters.presenceMalformed += 1
            // Whatever the shell does with the fault, this peer's claims are not believed, nor
            // is it asked again, for a while.
            peers[peer]!.distrustedUntilMs = now &+ limits.distrustHoldMs
            fx.emit(.fault(peer, .malformedOffer("presence answer: \(problem)")))
            return finish(&fx, now: now)
        }
        counters.presenceAnswers += 1
        let bits = (0..<count).map { bitvector[$0 / 8] & (1 << UInt8($0 % 8)) != 0 }
        applyPresence(peer, addresses: query.addresses, bits: bits, now: now)
        return finish(&fx, now: now)
    }

    /// What is wrong with a presence bitvector for `count` addresses, if anything: it must be
    /// `ceil(count / 8)` bytes with the bits past `count` zero (Protocol.md §4.20).
    static func bitvectorProblem(_ bitvector: [UInt8], count: Int) -> String? {
        let bytes = (count + 7) / 8
        guard bitvector.count == bytes else { return "\(bitvector.count) bytes for \(count) addresses, \(bytes) expected" }
        if count % 8 != 0, let last = bitvector.last, last >> UInt8(count % 8) != 0 {
            return "bits set past the \(count) addresses asked"
        }
        return nil
    }

    /// The peer's presence bits for these addresses: chunks it has take it as a confirmed hint
    /// (unless its claims are distrusted); chunks it lacks do not ask it for `absentRetryMs`.
    mutating func applyPresence(_ peer: OverlayAddress, addresses: [ChunkAddress], bits: [Bool], now: UInt64) {
        responded(peer, now: now)
        let trusted = peers[peer]?.dropped != true && peers[peer]?.isDistrusted(at: now) != true
        let absentUntil = now &+ limits.absentRetryMs
        for (address, has) in zip(addresses, bits) where fetches[address] != nil {
            if has {
                if trusted { addHint(peer, to: address, now: now) }
            } else {
                fetches[address]!.hints.removeAll { $0.peer == peer }
                // Advice only: it never pushes out what asking cost.
                updateTry(address, peer, evict: false) { t in
                    t.notBeforeMs = max(t.notBeforeMs, absentUntil)
                    if t.attempts == 0 { t.lastFailure = .absent }
                }
            }
        }
    }

    /// Forgets a presence query (answered, timed out, void): its peer may be asked again, and
    /// its chunks that still wait go back into the presence queue.
    mutating func endPresence(_ id: UInt64) {
        let query = presenceQueries.removeValue(forKey: id)!
        if peers[query.peer]?.presenceOut == id { peers[query.peer]!.presenceOut = nil }
        for address in query.addresses where fetches[address]?.inPresence == id {
            fetches[address]!.inPresence = nil
            queueForPresence(address)
        }
    }

    /// Presence queries past their deadline: each is a silence of its peer, as a request's is.
    mutating func presenceTimedOut(now: UInt64, _ fx: inout Effects) {
        for id in presenceQueries.filter({ $0.value.deadlineMs <= now }).keys.sorted() {
            guard let late = presenceQueries[id] else { continue }  // ended by a drop just now
            endPresence(id)
            counters.presenceTimeouts += 1
            fx.emit(.cancelPresence(PresenceQuery(id: id, peer: late.peer, addresses: late.addresses, deadlineMs: late.deadlineMs)))
            silent(late.peer, since: late.sentMs, now: now, &fx)
        }
    }

    /// Ends the peer's query (it disconnected, or was dropped); `cancel`: tell the shell.
    mutating func endPresence(of peer: OverlayAddress, cancel: Bool, _ fx: inout Effects) {
        guard let id = peers[peer]?.presenceOut, let query = presenceQueries[id] else { return }
        endPresence(id)
        if cancel { fx.emit(.cancelPresence(PresenceQuery(id: id, peer: peer, addresses: query.addresses, deadlineMs: query.deadlineMs))) }
    }

    /// `peer` answered not-found for a chunk it had claimed (a confirmed hint). After
    /// `falseClaimsMax` such answers with no delivery in between, its claims are ignored and
    /// it is asked no presence for `distrustHoldMs`, and its confirmed hints go: not a fault,
    /// because an honest peer may evict between its claim and our request.
    mutating func falseClaim(by peer: OverlayAddress, now: UInt64) {
        guard var record = peers[peer] else { return }
        counters.falseClaims += 1
        record.falseClaims += 1
        guard record.falseClaims >= limits.falseClaimsMax else {
            peers[peer] = record
            return
        }
        record.falseClaims = 0
        record.distrustedUntilMs = now &+ limits.distrustHoldMs
        peers[peer] = record
        counters.peersDistrusted += 1
        for i in fetches.values.indices { fetches.values[i].hints.removeAll { $0.peer == peer && $0.confirmed } }
    }
}
