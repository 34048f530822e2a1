// What is true after every event. Tests and simulations call these after each one.
extension DownloadMachine {
    public func checkInvariants() {
        // Downloads.
        precondition(downloads.count == downloadOrder.count && downloads.count <= limits.downloadsMax,
                     "\(downloads.count) downloads, \(downloadOrder.count) in order, at most \(limits.downloadsMax)")
        var lastSequence: UInt64 = 0
        for id in downloadOrder {
            guard let d = downloads[id] else { preconditionFailure("\(id) in the order but not live") }
            precondition(d.sequence > lastSequence, "downloads out of start order at \(id)")
            lastSequence = d.sequence
            precondition(d.done >= 0 && d.failed >= 0 && d.pending > 0,
                         "live \(id) with nothing pending: \(d.progress)")
            precondition(d.chunks.count <= limits.chunksPerDownloadMax && d.chunks.count <= d.total && d.position.count == d.chunks.count,
                         "\(id): \(d.chunks.count) chunks named, \(d.position.count) positions, total \(d.total)")
            precondition(d.hints.count <= limits.hintsPerDownloadMax && d.servedBy.count <= limits.groupPeersMax,
                         "\(id): \(d.hints.count) hints, \(d.servedBy.count) serving peers")
            precondition(!(d.hints + d.servedBy).contains { peers[$0]?.dropped == true }, "\(id) keeps a dropped peer")
        }

        // The fetch set.
        precondition(fetches.count <= limits.fetchSetMax, "\(fetches.count) chunks in the fetch set, at most \(limits.fetchSetMax)")
        var pending: [DownloadID: Int] = [:]
        var failed: [DownloadID: Int] = [:]
        var readyCount = 0
        var storingPerPeer: [OverlayAddress: Int] = [:]
        var timed: [Timer] = []
        var waitingCount = 0
        var inPresence = 0
        for (address, f) in fetches {
            precondition(!f.groups.isEmpty, "\(address) in the fetch set for no download")
            var previous: UInt64 = 0
            for group in f.groups {
                guard let d = downloads[group] else { preconditionFailure("\(address) wanted by \(group), which has ended") }
                precondition(d.sequence > previous, "\(address): downloads not oldest first, or twice")
                previous = d.sequence
                precondition(d.position[address] != nil, "\(address) not among \(group)'s chunks")
            }
            precondition(f.key == key(of: address, groups: f.groups), "\(address): stale queue key")
            precondition(f.hints.count <= limits.hintsPerChunkMax && Set(f.hints.map(\.peer)).count == f.hints.count,
                         "\(address): \(f.hints.count) hints, or one twice")
            precondition(!f.hints.contains { peers[$0.peer]?.dropped == true }, "\(address) hints a dropped peer")
            precondition(f.tries.count <= limits.peersTriedPerChunkMax && Set(f.tries.map(\.peer)).count == f.tries.count,
                         "\(address): \(f.tries.count) peers tried, or one twice")
            precondition(f.tries.allSatisfy { $0.attempts <= limits.attemptsPerPeerMax }, "\(address): a peer asked past its budget")
            precondition(f.attempts <= limits.attemptsPerChunkMax, "\(address): \(f.attempts) attempts")
            precondition(f.deliveredBy == nil || f.state == .storing, "\(address) holds a slot of \(f.deliveredBy!) while \(f.state)")
            precondition(f.presenceAsked <= limits.presencePeersPerChunkMax, "\(address) in \(f.presenceAsked) presence queries")
            if let id = f.inPresence {
                inPresence += 1
                precondition(presenceQueries[id] != nil, "\(address) in presence query \(id), which is not out")
            }
            var isFailed = false
            switch f.state {
            case .ready:
                readyCount += 1
                precondition(f.attempts < limits.attemptsPerChunkMax, "\(address) ready with its budget spent")
            case .delayed(let until, let fixed):
                timed.append(Timer(at: until, target: .fetch(address)))
                if !fixed { waitingCount += 1 }
                precondition(fixed != waiting.contains(address), "\(address) delayed (fixed: \(fixed)), waiting: \(waiting.contains(address))")
            case .parked(let giveUpAt):
                timed.append(Timer(at: giveUpAt, target: .fetch(address)))
                waitingCount += 1
                precondition(waiting.contains(address) && f.noProviderSince.map({ $0 &+ limits.providerWaitMaxMs == giveUpAt }) == true,
                             "\(address) parked until \(giveUpAt), not waiting or since \(String(describing: f.noProviderSince))")
            case .inFlight(let id):
                precondition(requests[id]?.address == address, "\(address) in flight under \(id), which asks for something else")
            case .storing:
                if let p = f.deliveredBy { storingPerPeer[p, default: 0] += 1 }
            case .failed:
                isFailed = true
            }
            for group in f.groups {
                if isFailed { failed[group, default: 0] += 1 } else { pending[group, default: 0] += 1 }
            }
        }
        precondition(waiting.count == waitingCount && waiting.allSatisfy { fetches[$0] != nil },
                     "\(waiting.count) chunks waiting for a peer, \(waitingCount) in such a state")
        for (id, d) in downloads {
            precondition(d.failed == failed[id, default: 0] && d.pending == pending[id, default: 0],
                         "\(id) counts \(d.progress), the fetch set \(pending[id, default: 0]) pending and \(failed[id, default: 0]) failed")
        }

        // Requests: one per chunk at most, within both limits, counted by their peers.
        precondition(requests.count <= limits.requestsInFlightMax, "\(requests.count) requests out, at most \(limits.requestsInFlightMax)")
        var perPeer: [OverlayAddress: Int] = [:]
        for (id, r) in requests {
            precondition(fetches[r.address]?.state == .inFlight(id), "request \(id) for \(r.address), which is not in flight under it")
            precondition(peers[r.peer]?.connected == true, "request \(id) to \(r.peer), which is not connected")
            precondition(r.deadlineMs > r.sentMs, "request \(id) due before it was sent")
            perPeer[r.peer, default: 0] += 1
        }
        // Presence queries: within their limits, one per peer, to connected peers, and each
        // chunk in one at most (a chunk's entry names the query; the count bounds the cost).
        precondition(presenceQueries.count <= limits.presenceQueriesInFlightMax,
                     "\(presenceQueries.count) presence queries out, at most \(limits.presenceQueriesInFlightMax)")
        var queried = 0
        for (id, q) in presenceQueries {
            precondition(peers[q.peer]?.connected == true && peers[q.peer]?.presenceOut == id,
                         "presence query \(id) to \(q.peer), which is not connected or not counted")
            precondition(!q.addresses.isEmpty && q.addresses.count <= limits.presenceBatchMax && q.deadlineMs > q.sentMs,
                         "presence query \(id) of \(q.addresses.count) addresses, due at \(q.deadlineMs)")
            precondition(requests[id] == nil, "ID \(id) names a request and a presence query")
            queried += q.addresses.count
        }
        precondition(inPresence <= queried, "\(inPresence) chunks in presence queries of \(queried) addresses")
        precondition(peers.values.filter { $0.presenceOut != nil }.count == presenceQueries.count,
                     "peers count \(peers.values.filter { $0.presenceOut != nil }.count) presence queries, \(presenceQueries.count) are out")
        precondition(storingPerPeer.keys.allSatisfy { peers[$0] != nil }, "an answer being stored holds the slot of a peer forgotten")
        var dialing = 0
        var dropped = 0
        for (peer, p) in peers {
            precondition(p.inFlight == perPeer[peer, default: 0] && p.storing == storingPerPeer[peer, default: 0]
                         && p.busy <= limits.requestsPerPeerMax,
                         "\(peer) counts \(p.inFlight) requests and \(p.storing) answers being stored, \(perPeer[peer, default: 0]) "
                         + "and \(storingPerPeer[peer, default: 0]) are, at most \(limits.requestsPerPeerMax) together")
            if p.dialDeadlineMs != nil {
                dialing += 1
                precondition(!p.connected, "\(peer) dialled while connected")
            }
            if p.dropped {
                dropped += 1
                precondition(p.backoffUntilMs != nil, "\(peer) dropped without a hold")
            }
            precondition(p.step <= limits.unresponsiveBackoffMs.count + 1, "\(peer) at silence step \(p.step)")
            if let until = p.backoffUntilMs { timed.append(Timer(at: until, target: .peer(peer))) }
        }
        precondition(dialsInFlight == dialing && dialing <= limits.dialsInFlightMax,
                     "\(dialsInFlight) dials counted, \(dialing) dialling, at most \(limits.dialsInFlightMax)")
        precondition(droppedPeers == dropped, "\(droppedPeers) dropped peers counted, \(dropped) dropped")
        precondition(connected == peers.filter(\.value.connected).keys.sorted(), "the connected list disagrees with the peers")

        // Queues and timers: every ready chunk is queued, every delay and back-off has its
        // timer, and the earliest timer is a live one (so `nextDeadline` is exact).
        ready.checkInvariants()
        timers.checkInvariants()
        presenceQueue.checkInvariants()
        let queued = Set(ready.elements.filter { entry in
            fetches[entry.address].map { $0.state == .ready && $0.key == entry.key } ?? false
        }.map(\.address))
        precondition(queued.count == readyCount, "\(readyCount) ready chunks, \(queued.count) of them queued")
        let live = Set(timers.elements.filter(isLive))
        for timer in timed { precondition(live.contains(timer), "no timer for \(timer.target) at \(timer.at)") }
        if let top = timers.min { precondition(isLive(top), "the earliest timer is stale") }
    }

    /// With requests to spare (and the last pass not cut short by `scheduleScanMax`), no chunk
    /// waiting for its turn or for a peer has a peer that could be asked now: the machine
    /// keeps peers busy. Costs a look at every waiting chunk, so tests call it, not the node.
    public func checkKeepsPeersBusy() {
        guard !lastPassCutShort && requests.count < limits.requestsInFlightMax else { return }
        for (address, f) in fetches {
            switch f.state {
            case .ready:
                break
            case .delayed(let until, let fixed) where !fixed && until > lastNow:
                break
            case .parked(let giveUpAt) where giveUpAt > lastNow:
                break
            default:
                continue
            }
            let e = evaluate(address, f, now: lastNow)
            precondition(e.best == nil, "\(address) (\(f.state)) could be asked of \(e.best!) now, with \(requests.count) requests out")
        }
    }
}
