import ShoalCore

// The retrieval shell: what `RetrievalService` does with each node's `Retrieval` machine,
// and the route that says which retrievals must succeed (check (a)).
extension FetchSimulator {
    /// A caller on the origin wants the chunk: from its store, or through its machine.
    func retrieve(_ r: Int) {
        let origin = records[r].origin, address = chunks[records[r].chunk].address
        if stores[origin].contains(address) {
            records[r].outcome = .local
            records[r].endedMs = now
            return
        }
        let way = self.route(from: origin, to: address)
        records[r].retrievable = way.reaches
        records[r].route = way.path
        nextCaller += 1
        recordOfCaller[nextCaller] = r
        waitOn(address, at: origin, WaiterPath(waiter: .local(nextCaller), visited: [], hops: 0, climbed: false))
        performRetrieval(retrieval[origin].request(address, for: .local(nextCaller), now: now), at: origin)
    }

    /// Notes a waiter's path before its request goes to the machine (which may ask at once).
    func waitOn(_ address: ChunkAddress, at n: Int, _ path: WaiterPath) {
        if !retrieval[n].isFetching(address) {
            paths[n][address] = []
            ledger.retrievalFetchStarted(node: n, address: address)
        }
        paths[n][address, default: []].append(path)
    }

    /// A peer's request: answered from the store (a session does that before the machine sees
    /// it), or taken by the machine.
    func peerAsked(_ n: Int, by p: Int, ruid: UInt32, address: ChunkAddress, hops: UInt8, visited: [Int], hopsFromOrigin: Int,
                           climbed: Bool) {
        counters.asksReceived += 1
        if kinds[n] == .lying {
            send(.reply(ruid: ruid, chunk: answer(address, at: n)), from: n, to: p)
            return
        }
        if stores[n].contains(address) {
            if config.breakage == .holdersRefuseRetrieval {
                send(.reply(ruid: ruid, chunk: nil), from: n, to: p)
                return
            }
            hitHops.append(hopsFromOrigin)
            send(.reply(ruid: ruid, chunk: answer(address, at: n)), from: n, to: p)
            return
        }
        let waiter = Retrieval.Waiter.peer(overlays[p], ruid: ruid)
        waitOn(address, at: n, WaiterPath(waiter: waiter, visited: visited, hops: hopsFromOrigin, climbed: climbed))
        let actions = retrieval[n].request(address, for: waiter, hops: hops, now: now)
        // Refused at once (no hop left, a loop, overloaded, nobody to ask): it never waited.
        let refusedAtOnce = actions.contains { if case .refuse(let q, let r, _) = $0 { return q == overlays[p] && r == ruid } else { return false } }
        if refusedAtOnce { paths[n][address]?.removeAll { $0.waiter == waiter } }
        ledger.retrievalPeerRequestOpened(node: n, peer: p, limits: retrieval[n].limits, refusedAtOnce: refusedAtOnce, now: now)
        performRetrieval(actions, at: n)
    }

    func performRetrieval(_ actions: [Retrieval.Action], at n: Int) {
        var pending = actions[...]
        while let action = pending.popFirst() {
            switch action {
            case .ask(let peer, let ruid, let address, let hops):
                let p = indexOf[peer]!
                let waiting = paths[n][address] ?? []
                var visited = [n]
                var nearest = Int.max
                var local = false
                var climbed = false
                var servesPeer = false
                for w in waiting {
                    visited += w.visited
                    nearest = min(nearest, w.hops)
                    climbed = climbed || w.climbed
                    if case .local = w.waiter { local = true } else { servesPeer = true }
                }
                // A peer's request sent farther from the address: only a widened fetch does that.
                if servesPeer && !(Retrieval.distance(peer, address) < Retrieval.distance(overlays[n], address)) { climbed = true }
                visited = Array(Set(visited)).sorted()
                let hopsFromOrigin = (nearest == Int.max ? 0 : nearest) + 1
                let limits = retrieval[n].limits
                ledger.retrievalForwarded(from: n, to: p, address: address, visited: visited, hopsFromOrigin: hopsFromOrigin,
                                          wireHops: hops, hopsMax: limits.hopsMax, climbed: climbed, now: now)
                ledger.retrievalAsked(node: n, peer: p, ruid: ruid, address: address, deadline: now + limits.attemptTimeoutMs(hops: hops),
                                      local: local, limits: limits, now: now)
                counters.asks += 1
                let wire = Wire.ask(ruid: ruid, address: address, hops: hops, visited: visited, hopsFromOrigin: hopsFromOrigin,
                                    climbed: climbed)
                if !send(wire, from: n, to: p) {
                    // No connection (as `RetrievalService`): as good as a refusal.
                    ledger.retrievalReplied(node: n, ruid: ruid, peer: p)
                    pending += retrieval[n].refused(by: peer, ruid: ruid, now: now)
                }
            case .answer(let peer, let ruid, let chunk):
                let p = indexOf[peer]!
                ledger.retrievalPeerRequestClosed(node: n, peer: p)
                send(.reply(ruid: ruid, chunk: chunk), from: n, to: p)
            case .refuse(let peer, let ruid, _):
                let p = indexOf[peer]!
                ledger.retrievalPeerRequestClosed(node: n, peer: p)
                send(.reply(ruid: ruid, chunk: nil), from: n, to: p)
            case .resolve(let id, let result):
                guard let r = recordOfCaller.removeValue(forKey: id) else { preconditionFailure("caller \(id) resolved twice") }
                resolved(r, result)
            case .keep(let chunk):
                counters.kept += stores[n].insert(chunk.address).inserted ? 1 : 0
                if let d = downloaderAt[n], downloaders[d].machine.fetchEntry(chunk.address) != nil {
                    performDownload(downloaders[d].machine.stored(chunk.address, now: now), downloader: d)
                }
            case .fault(let peer, _):
                counters.retrievalFaults += 1
                if config.dropOnFault, let l = link(n, indexOf[peer]!) { queue.push(.dropLink(l), at: now) }
            }
        }
        if config.checkInvariants { retrieval[n].checkInvariants() }
        if retrieval[n].openFetches > retrieval[n].limits.fetchesMax {
            ledger.violations.budgets.record("at \(now) ms node \(n) had \(retrieval[n].openFetches) fetches open, at most \(retrieval[n].limits.fetchesMax)")
        }
        scheduleRetrievalTick(n)
    }

    func resolved(_ r: Int, _ result: Result<Chunk, RetrievalFailure>) {
        records[r].endedMs = now
        switch result {
        case .success: records[r].outcome = .retrieved
        case .failure(let failure): records[r].outcome = .failed(failure)
        }
        let address = chunks[records[r].chunk].address
        ledger.retrievalEnded(origin: records[r].origin, address: address, result: result, retrievable: records[r].retrievable,
                              route: records[r].route, now: now)
    }

    func scheduleRetrievalTick(_ n: Int) {
        guard let deadline = retrieval[n].nextDeadline else { return }
        let at = max(deadline, now)
        if let scheduled = retrievalTickAt[n], scheduled <= at && scheduled >= now { return }
        retrievalTickAt[n] = at
        queue.push(.retrievalTick(n), at: at)
    }

    /// The route a request takes if every peer on it is honest: the origin asks its connected
    /// peer closest to the address, each forwarder its closest connected peer closer than
    /// itself (not the one that asked), until a holder or `hopsMax + 1` hops. `reaches`: it
    /// ends at a holder and every node on it (origin included) is honest — the retrieval is
    /// then *retrievable* (check (a)).
    func route(from origin: Int, to address: ChunkAddress) -> (reaches: Bool, path: [Int]) {
        var path = [origin]
        guard kinds[origin] == .honest && present[origin] else { return (false, path) }
        var current = origin
        var previous: OverlayAddress?
        for hop in 0...Int(retrieval[origin].limits.hopsMax) {
            var best: OverlayAddress?
            let here = overlays[current]
            for peer in retrieval[current].peers where peer != previous {
                if previous != nil && !(Retrieval.distance(peer, address) < Retrieval.distance(here, address)) { continue }
                if best.map({ Retrieval.distance(peer, address) < Retrieval.distance($0, address) }) ?? true { best = peer }
            }
            guard let best, let next = indexOf[best] else { return (false, path) }
            path.append(next)
            guard kinds[next] == .honest && present[next] else { return (false, path) }
            if stores[next].contains(address) { return (true, path) }
            if hop == Int(retrieval[origin].limits.hopsMax) { break }
            previous = here
            current = next
        }
        return (false, path)
    }
}
