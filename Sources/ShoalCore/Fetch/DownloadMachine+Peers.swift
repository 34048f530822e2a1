// Events about peers and time: connections, dials, silences, time-outs.
extension DownloadMachine {
    /// A connection to `peer` is up (dialled by us or not). Chunks waiting for a peer are
    /// looked at again, so a hinted peer gets work at once.
    public mutating func peerConnected(_ peer: OverlayAddress, now: UInt64) -> [DownloadAction] {
        let now = advance(now)
        var fx = Effects()
        var record = peers[peer] ?? Peer()
        if record.dialDeadlineMs != nil {
            record.dialDeadlineMs = nil
            dialsInFlight -= 1
        }
        if !record.connected {
            record.connected = true
            connected.insert(peer, at: connected.lowerBound(of: peer))
        }
        peers[peer] = record
        wakeWaiting(now: now)
        return finish(&fx, now: now)
    }

    /// The connection to `peer` is gone: its requests are void (each an attempt of its chunk).
    public mutating func peerDisconnected(_ peer: OverlayAddress, now: UInt64) -> [DownloadAction] {
        let now = advance(now)
        var fx = Effects()
        guard var record = peers[peer], record.connected else { return finish(&fx, now: now) }
        record.connected = false
        peers[peer] = record
        connected.remove(at: connected.lowerBound(of: peer))
        for id in requests.filter({ $0.value.peer == peer }).keys.sorted() {
            let request = endRequest(id)
            tryFailed(request.address, peer, .disconnected, now: now, &fx)
        }
        endPresence(of: peer, cancel: false, &fx)
        // Another peer may now be among the closest to some waiting chunk.
        wakeWaiting(now: now)
        return finish(&fx, now: now)
    }

    /// Dialling `peer` failed: it backs off like a peer that stays silent.
    public mutating func dialFailed(_ peer: OverlayAddress, now: UInt64) -> [DownloadAction] {
        let now = advance(now)
        var fx = Effects()
        guard peers[peer]?.dialDeadlineMs != nil else { return finish(&fx, now: now) }
        dialEnded(peer, now: now, &fx)
        return finish(&fx, now: now)
    }

    private mutating func dialEnded(_ peer: OverlayAddress, now: UInt64, _ fx: inout Effects) {
        peers[peer]!.dialDeadlineMs = nil
        dialsInFlight -= 1
        counters.dialsFailed += 1
        silent(peer, since: peers[peer]!.dialStartedMs, now: now, &fx)
        wakeWaiting(now: now)
    }

    /// Time passes: requests, presence queries and dials past their deadline time out, delays
    /// and back-offs end, chunks without anyone to ask give up, and peers long disconnected are
    /// forgotten.
    public mutating func tick(now: UInt64) -> [DownloadAction] {
        let now = advance(now)
        var fx = Effects()
        for id in requests.filter({ $0.value.deadlineMs <= now }).keys.sorted() {
            guard let late = requests[id] else { continue }  // cancelled by a drop just now
            let request = endRequest(id)
            counters.timeouts += 1
            fx.emit(.cancelRequest(request))
            silent(late.peer, since: late.sentMs, now: now, &fx)
            tryFailed(late.address, late.peer, .timeout, now: now, &fx)
        }
        presenceTimedOut(now: now, &fx)
        for peer in peers.filter({ $0.value.dialDeadlineMs.map { $0 <= now } ?? false }).keys.sorted() {
            dialEnded(peer, now: now, &fx)
        }
        while let timer = timers.min, timer.at <= now {
            timers.popMin()
            guard isLive(timer) else { continue }
            switch timer.target {
            case .fetch(let address):
                fire(address, now: now, &fx)
            case .peer(let peer):
                var record = peers[peer]!
                record.backoffUntilMs = nil
                if record.dropped {
                    record.dropped = false
                    record.step = 0
                    droppedPeers -= 1
                }
                peers[peer] = record
                wakeWaiting(now: now)
            }
        }
        forgetPeers(now: now)
        return finish(&fx, now: now)
    }

    /// A delayed or parked chunk's timer: a fixed delay or back-off ended (the chunk joins the
    /// queue), or its time to find a peer is up (it is asked for now, or fails).
    private mutating func fire(_ address: ChunkAddress, now: UInt64, _ fx: inout Effects) {
        let fetch = fetches[address]!
        if let since = fetch.noProviderSince, now >= since &+ limits.providerWaitMaxMs {
            if case .busy = examine(address, now: now, &fx) {
                ready.push(ReadyEntry(key: fetch.key, address: address))
            }
        } else {
            makeReady(address, now: now)
        }
    }

    /// The peer answered something: it is not unresponsive (a dropped peer stays dropped).
    mutating func responded(_ peer: OverlayAddress, now: UInt64) {
        guard var record = peers[peer], !record.dropped else { return }
        record.step = 0
        let wasBackingOff = record.backoffUntilMs != nil
        record.backoffUntilMs = nil
        peers[peer] = record
        if wasBackingOff { wakeWaiting(now: now) }
    }

    /// The peer stayed silent on something begun at `since` (a request, a dial). Silences
    /// of things begun before its last one do not count again: eight requests timing out
    /// together are one step. Each step backs it off longer; past the last, it is dropped.
    mutating func silent(_ peer: OverlayAddress, since: UInt64, now: UInt64, _ fx: inout Effects) {
        guard var record = peers[peer], !record.dropped else { return }
        if let last = record.lastSilenceMs, since <= last { return }
        record.step += 1
        record.lastSilenceMs = now
        let steps = limits.unresponsiveBackoffMs
        if record.step <= steps.count {
            let until = now &+ steps[record.step - 1]
            record.backoffUntilMs = until
            peers[peer] = record
            timers.push(Timer(at: until, target: .peer(peer)))
            counters.peersBackedOff += 1
            return
        }
        let until = now &+ limits.droppedHoldMs
        record.dropped = true
        record.backoffUntilMs = until
        peers[peer] = record
        droppedPeers += 1
        timers.push(Timer(at: until, target: .peer(peer)))
        counters.peersDropped += 1
        fx.emit(.peerDropped(peer))
        dropEverywhere(peer, now: now, &fx)
    }

    /// A dropped peer leaves every hint and every download's lists; its requests are cancelled.
    private mutating func dropEverywhere(_ peer: OverlayAddress, now: UInt64, _ fx: inout Effects) {
        for i in fetches.values.indices { fetches.values[i].hints.removeAll { $0.peer == peer } }
        for i in downloads.values.indices {
            downloads.values[i].hints.removeAll { $0 == peer }
            downloads.values[i].servedBy.removeAll { $0 == peer }
        }
        for id in requests.filter({ $0.value.peer == peer }).keys.sorted() {
            let request = endRequest(id)
            fx.emit(.cancelRequest(request))
            tryFailed(request.address, peer, .dropped, now: now, &fx)
        }
        endPresence(of: peer, cancel: true, &fx)
        // Another peer may now be among the closest to some waiting chunk.
        wakeWaiting(now: now)
    }

    /// Forgets disconnected peers that are neither dialled, backing off nor distrusted once
    /// their last silence is `peerMemoryMs` old; and the longest silent ones beyond
    /// `peersRememberedMax`.
    private mutating func forgetPeers(now: UInt64) {
        var idle: [(silence: UInt64, peer: OverlayAddress)] = []
        for (peer, record) in peers where !record.connected && record.dialDeadlineMs == nil && record.busy == 0 {
            if record.backoffUntilMs == nil, !record.isDistrusted(at: now),
               now >= (record.lastSilenceMs ?? 0) &+ limits.peerMemoryMs {
                peers[peer] = nil
            } else {
                idle.append((record.lastSilenceMs ?? 0, peer))
            }
        }
        guard idle.count > limits.peersRememberedMax else { return }
        idle.sort { ($0.silence, $0.peer) < ($1.silence, $1.peer) }
        for (_, peer) in idle.prefix(idle.count - limits.peersRememberedMax) {
            if peers[peer]!.dropped { droppedPeers -= 1 }
            peers[peer] = nil
        }
    }
}
