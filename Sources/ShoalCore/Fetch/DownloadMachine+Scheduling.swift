// Which peer is asked for which chunk, and when; how an event ends.
extension DownloadMachine {
    /// What can be done for one chunk now.
    struct Evaluation {
        /// The best peer that can be asked now.
        var best: OverlayAddress?
        /// A connected peer that could be asked, but has no request to spare (or no request is
        /// left over all peers).
        var busy = false
        /// The first time a peer that is backing off (for this chunk, or altogether) may be asked.
        var later: UInt64?
        /// A connected peer is backing off after silences: the chunk waits for it (its back-off
        /// steps are bounded, and it is dropped after the last) rather than giving up.
        var connectedBackingOff = false
        /// A hinted peer that is not connected and could be dialled.
        var dialable: OverlayAddress?
        /// A hinted peer is being dialled.
        var dialing = false
    }

    /// The peers that may have the chunk, best first, each with its class: 0 served one of its
    /// downloads, 1 a confirmed hint, 2 a caller's hint, 3 one of the connected peers closest
    /// to the address. Then, of those that can be asked now, the best by (served first, fewest
    /// requests out, class, order).
    func evaluate(_ address: ChunkAddress, _ fetch: Fetch, now: UInt64) -> Evaluation {
        var e = Evaluation()
        var seen: [OverlayAddress] = []
        var bestScore = (Int.max, Int.max, Int.max, Int.max)
        let full = requests.count >= limits.requestsInFlightMax

        func consider(_ peer: OverlayAddress, _ kind: Int) {
            guard !seen.contains(peer) else { return }
            seen.append(peer)
            let order = seen.count
            let tried = fetch.tries.first { $0.peer == peer }
            if let tried, tried.attempts >= limits.attemptsPerPeerMax { return }
            let record = peers[peer]
            if let record {
                if record.dropped { return }
                if let until = record.backoffUntilMs {
                    e.later = min(e.later ?? .max, until)
                    if record.connected { e.connectedBackingOff = true }
                    return
                }
            }
            if let tried, tried.notBeforeMs > now {
                e.later = min(e.later ?? .max, tried.notBeforeMs)
                return
            }
            guard let record, record.connected else {
                if record?.dialDeadlineMs != nil {
                    e.dialing = true
                } else if kind < 3 && e.dialable == nil {
                    e.dialable = peer
                }
                return
            }
            guard !full && record.busy < limits.requestsPerPeerMax else {
                e.busy = true
                return
            }
            let score = (kind == 0 ? 0 : 1, record.busy, kind, order)
            if score < bestScore {
                bestScore = score
                e.best = peer
            }
        }

        for group in fetch.groups { downloads[group]?.servedBy.forEach { consider($0, 0) } }
        for hint in fetch.hints { consider(hint.peer, hint.confirmed ? 1 : 2) }
        for group in fetch.groups { downloads[group]?.hints.forEach { consider($0, 2) } }
        for peer in closestConnected(to: address, count: limits.closestPeersPerChunk) { consider(peer, 3) }
        return e
    }

    /// The `count` connected peers closest to `address` by XOR distance, closest first,
    /// dropped peers left out. Peers sharing a longer prefix with the address are closer than
    /// all others, and sit together in the sorted `connected`; so the smallest such run that
    /// holds enough peers is found by binary search, and only it is sorted.
    func closestConnected(to address: ChunkAddress, count: Int) -> [OverlayAddress] {
        guard count > 0, !connected.isEmpty else { return [] }
        let need = min(connected.count, count + droppedPeers)
        var (lo, hi) = (0, 256)  // the run of prefix `lo` holds at least `need`
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if connected.indices(sharingPrefix: mid, with: address).count >= need { lo = mid } else { hi = mid - 1 }
        }
        var run = connected[connected.indices(sharingPrefix: lo, with: address)].filter { peers[$0]?.dropped != true }
        run.sort { $0.isCloser(to: address, than: $1) }
        return Array(run.prefix(count))
    }

    enum Examined {
        case asked(OverlayAddress)
        /// Its peers are busy: it stays in the ready queue.
        case busy
        case waiting
        case failed
    }

    /// Looks at one chunk that is not being asked for: asks a peer, leaves it ready (peers
    /// busy), dials a hinted peer, delays it, parks it, or fails it after `providerWaitMaxMs`
    /// without anyone to ask.
    mutating func examine(_ address: ChunkAddress, now: UInt64, _ fx: inout Effects) -> Examined {
        let e = evaluate(address, fetches[address]!, now: now)
        waiting.remove(address)
        if let peer = e.best {
            ask(peer, for: address, now: now, &fx)
            return .asked(peer)
        }
        if e.busy {
            fetches[address]!.noProviderSince = nil
            fetches[address]!.state = .ready
            if let peer = e.dialable { dial(peer, now: now, &fx) }
            return .busy
        }
        // Nobody to ask now. Unless a connected peer is only backing off, the chunk gives up
        // once that has lasted `providerWaitMaxMs`.
        var giveUpAt: UInt64 = .max
        if e.connectedBackingOff {
            fetches[address]!.noProviderSince = nil
        } else {
            let since = fetches[address]!.noProviderSince ?? now
            giveUpAt = since &+ limits.providerWaitMaxMs
            if now >= giveUpAt {
                fail(address, reason(fetches[address]!), &fx)
                return .failed
            }
            fetches[address]!.noProviderSince = since
        }
        if let peer = e.dialable { dial(peer, now: now, &fx) }
        if let later = e.later {
            let until = min(later, giveUpAt)
            fetches[address]!.state = .delayed(until: until, fixed: false)
            timers.push(Timer(at: until, target: .fetch(address)))
        } else {
            fetches[address]!.state = .parked(giveUpAt: giveUpAt)
            timers.push(Timer(at: giveUpAt, target: .fetch(address)))
        }
        waiting.insert(address)
        // Peers not among its candidates may have it: ask them (`queryPresence`).
        queueForPresence(address)
        return .waiting
    }

    private mutating func ask(_ peer: OverlayAddress, for address: ChunkAddress, now: UInt64, _ fx: inout Effects) {
        let id = nextRequestID
        nextRequestID += 1
        let deadline = now &+ limits.requestTimeoutMs
        requests[id] = InFlight(address: address, peer: peer, sentMs: now, deadlineMs: deadline)
        peers[peer]!.inFlight += 1
        fetches[address]!.state = .inFlight(id)
        fetches[address]!.noProviderSince = nil
        counters.requests += 1
        fx.emit(.request(FetchRequest(id: id, address: address, peer: peer, deadlineMs: deadline)))
    }

    private mutating func dial(_ peer: OverlayAddress, now: UInt64, _ fx: inout Effects) {
        guard dialsInFlight < limits.dialsInFlightMax else { return }
        var record = peers[peer] ?? Peer()
        record.dialDeadlineMs = now &+ limits.dialTimeoutMs
        record.dialStartedMs = now
        peers[peer] = record
        dialsInFlight += 1
        counters.dials += 1
        fx.emit(.dial(peer))
    }

    /// Puts the chunk in the ready queue, or under a timer until its downloads' initial delay ends.
    mutating func makeReady(_ address: ChunkAddress, now: UInt64) {
        waiting.remove(address)
        var fetch = fetches[address]!
        let startAt = fetch.groups.map { downloads[$0]!.startAtMs }.min() ?? now
        if startAt > now {
            fetch.state = .delayed(until: startAt, fixed: true)
            timers.push(Timer(at: startAt, target: .fetch(address)))
        } else {
            fetch.state = .ready
            ready.push(ReadyEntry(key: fetch.key, address: address))
        }
        fetches[address] = fetch
    }

    /// The peers that could be asked changed (one connected, answered, backed off, served a
    /// download, was dropped…): every chunk waiting for a peer is looked at again.
    mutating func wakeWaiting(now: UInt64) {
        guard !waiting.isEmpty else { return }
        let woken = waiting
        waiting.removeAll(keepingCapacity: true)
        // The ready queue orders them, whatever order they are pushed in.
        for address in woken { makeReady(address, now: now) }
    }

    /// Asks for ready chunks in queue order while requests are left. Stops when no peer has a
    /// request to spare (after one chunk found its peers busy), or after `scheduleScanMax`
    /// chunks; chunks whose peers are busy stay in the queue.
    mutating func schedule(now: UInt64, _ fx: inout Effects) {
        var available = connected.reduce(0) { n, peer in
            let p = peers[peer]!
            return n + (p.backoffUntilMs == nil && p.busy < limits.requestsPerPeerMax ? 1 : 0)
        }
        var busy: [ReadyEntry] = []
        var scanned = 0
        lastPassCutShort = false
        while requests.count < limits.requestsInFlightMax, let top = ready.min {
            if available == 0 && !busy.isEmpty { break }
            if scanned >= limits.scheduleScanMax {
                lastPassCutShort = true
                break
            }
            ready.popMin()
            guard let fetch = fetches[top.address], fetch.state == .ready, fetch.key == top.key else { continue }
            scanned += 1
            switch examine(top.address, now: now, &fx) {
            case .asked(let peer):
                if peers[peer]!.busy == limits.requestsPerPeerMax { available -= 1 }
            case .busy:
                busy.append(top)
            case .waiting, .failed:
                break
            }
        }
        for entry in busy { ready.push(entry) }
    }

    /// Ends the event: asks for what can be asked, asks presence for chunks nobody can be
    /// asked for, reports progress, ends downloads with nothing left, and trims the lazy queues.
    mutating func finish(_ fx: inout Effects, now: UInt64) -> [DownloadAction] {
        schedule(now: now, &fx)
        queryPresence(now: now, &fx)
        settle(&fx)
        while let top = timers.min, !isLive(top) { timers.popMin() }
        if ready.count > 2 * fetches.count + 64 {
            ready.filter { entry in fetches[entry.address].map { $0.state == .ready && $0.key == entry.key } ?? false }
        }
        if timers.count > 2 * (fetches.count + peers.count) + 64 { timers.filter(isLive) }
        if presenceQueue.count > 2 * fetches.count + 64 {
            var queue = presenceQueue
            presenceQueue = MinHeap()
            queue.filter { entry in fetches[entry.address].map { mayQuery(entry.address, $0) } ?? false }
            presenceQueue = queue
        }
        return fx.actions
    }

    /// Whether a timer still stands for what it was set for.
    func isLive(_ timer: Timer) -> Bool {
        switch timer.target {
        case .fetch(let address):
            switch fetches[address]?.state {
            case .delayed(let until, _): return until == timer.at
            case .parked(let giveUpAt): return giveUpAt == timer.at
            default: return false
            }
        case .peer(let peer):
            return peers[peer]?.backoffUntilMs == timer.at
        }
    }

    /// For each download whose progress changed, in start order: saves it and reports its
    /// progress; one with nothing pending ends, and its failed chunks leave the fetch set
    /// unless other downloads still want them.
    private mutating func settle(_ fx: inout Effects) {
        guard !fx.touched.isEmpty else { return }
        for id in downloadOrder where fx.touched.contains(id) {
            let download = downloads[id]!
            guard download.pending == 0 else {
                fx.emit(.saveDownload(id, record(of: download, .active)))
                fx.emit(.progress(id, download.progress))
                continue
            }
            let outcome: DownloadOutcome = download.failed == 0
                ? .completed
                : .failed(missing: failedChunks(of: id, download, limit: limits.missingReportedMax), missingCount: download.failed)
            fx.emit(.saveDownload(id, record(of: download, download.failed == 0 ? .done : .failed)))
            fx.emit(.progress(id, download.progress))
            fx.emit(.finished(id, outcome))
            if download.failed > 0 {
                for address in download.chunks { leave(address, id, now: lastNow, &fx) }
            }
            downloads[id] = nil
        }
        downloadOrder.removeAll { downloads[$0] == nil }
    }

    func record(of download: Download, _ state: DownloadEntry.State) -> DownloadEntry {
        DownloadEntry(policy: download.policy, state: state, chunksDone: UInt64(download.done),
                      chunksTotal: UInt64(download.total), createdMs: download.createdMs)
    }
}
