import ShoalCore

// The downloader shell: what `DownloadService` does with a node's `DownloadMachine`: requests
// as messages, answers, dials, store commits and ticks.
extension FetchSimulator {
    func startDownload(_ d: Int) {
        let node = downloaders[d].node
        let store = stores[node]
        do {
            let actions = try downloaders[d].machine.start(downloaders[d].id, addresses: downloaders[d].addresses, policy: .eagerPin,
                                                           hints: downloaders[d].hints.map { overlays[$0] }, now: now) { store.contains($0) }
            performDownload(actions, downloader: d)
        } catch {
            preconditionFailure("node \(node)'s download was refused: \(error)")
        }
    }

    func downloadAnswered(_ id: UInt64, address: ChunkAddress, chunk: Chunk?, at n: Int, from p: Int) {
        guard let d = downloaderAt[n], let request = downloaders[d].requests[id], request.peer == overlays[p] else {
            counters.lateDownloadAnswers += 1
            return
        }
        downloaders[d].requests[id] = nil
        ledger.downloadRequestEnded(node: n, id: id)
        let peer = overlays[p]
        guard let chunk else {
            performDownload(downloaders[d].machine.notFound(address, from: peer, now: now), downloader: d)
            return
        }
        guard chunk.address == address else {
            performDownload(downloaders[d].machine.wrongChunk(address, from: peer, got: chunk.address, now: now), downloader: d)
            return
        }
        downloaders[d].delivered[address] = chunk
        performDownload(downloaders[d].machine.delivered(address, from: peer, now: now), downloader: d)
        if downloaders[d].delivered[address] != nil && downloaders[d].machine.fetchEntry(address) == nil {
            downloaders[d].delivered[address] = nil
        }
    }

    /// A presence answer arrived at node `n` from `p`: the downloader on `n` (if any) takes it.
    func presenceAnswered(_ id: UInt64, bitvector: [UInt8], at n: Int, from p: Int) {
        guard let d = downloaders.firstIndex(where: { $0.node == n }) else { return }
        performDownload(downloaders[d].machine.presence(id: id, from: overlays[p], bitvector: bitvector, now: now), downloader: d)
    }

    func performDownload(_ actions: [DownloadAction], downloader d: Int) {
        let node = downloaders[d].node
        var pending = actions[...]
        while let action = pending.popFirst() {
            switch action {
            case .request(let request):
                let p = indexOf[request.peer]!
                downloaders[d].requests[request.id] = request
                ledger.downloadRequestSent(node: node, id: request.id, address: request.address, peer: p, limits: config.download, now: now)
                counters.downloadRequests += 1
                if !send(.downloadAsk(id: request.id, address: request.address), from: node, to: p) {
                    downloaders[d].requests[request.id] = nil
                    ledger.downloadRequestEnded(node: node, id: request.id)
                    pending += downloaders[d].machine.requestFailed(request.address, peer: request.peer, now: now)
                }
            case .cancelRequest(let request):
                downloaders[d].requests[request.id] = nil
                ledger.downloadRequestEnded(node: node, id: request.id)
            case .dial(let peer):
                let p = indexOf[peer]!
                counters.dials += 1
                ledger.dialStarted(node: node, peer: p, limits: config.download, now: now)
                // TCP, TLS and the hello: about three one-way trips (slow peers slower).
                var trip = link(node, p).map { links[$0].latencyMs } ?? Self.draw(config.latencyMs, &random)
                if kinds[p] == .slow { trip *= config.slowFactor.lowerBound }
                queue.push(.dialDone(downloader: d, peer: p), at: now + 3 * trip)
            case .storeChunk(let address):
                if downloaders[d].delivered[address] != nil {
                    queue.push(.commit(downloader: d, address: address), at: now + Self.draw(config.commitDelayMs, &random))
                } else {
                    pending += downloaders[d].machine.storeFailed(address, now: now)
                }
            case .saveFetch, .removeFetch, .saveDownload, .removeDownload, .progress:
                break
            case .chunkFailed(_, let missing):
                counters.downloadChunkFailures[Self.reasonName(missing.reason), default: 0] += 1
            case .finished(_, let outcome):
                downloaders[d].endedMs = now
                downloaders[d].outcome = outcome
            case .fault(let peer, _):
                counters.downloadFaults += 1
                if config.dropOnFault, let l = link(node, indexOf[peer]!) { queue.push(.dropLink(l), at: now) }
            case .peerDropped:
                counters.downloadPeersDropped += 1
            case .askPresence(let query):
                counters.presenceQueries += 1
                // A query that cannot be sent ends by the machine's timeout, as a silent peer's would.
                _ = send(.presenceAsk(id: query.id, addresses: query.addresses), from: node, to: indexOf[query.peer]!)
            case .cancelPresence:
                break
            }
        }
        if config.checkInvariants { downloaders[d].machine.checkInvariants() }
        scheduleDownloadTick(d)
    }

    static func failureName(_ failure: RetrievalFailure) -> String {
        switch failure {
        case .notFound(let asked): asked == 0 ? "no_peer" : "not_found"
        case .hopLimit: "hop_limit"
        case .overloaded: "overloaded"
        case .loop: "loop"
        case .cancelled: "cancelled"
        }
    }

    static func reasonName(_ reason: FetchFailure) -> String {
        switch reason {
        case .notFound: "not_found"
        case .attemptsExhausted: "attempts_exhausted"
        case .noProvider: "no_provider"
        case .overBudget: "over_budget"
        }
    }

    func scheduleDownloadTick(_ d: Int) {
        guard let deadline = downloaders[d].machine.nextDeadline else { return }
        // A deadline already past comes back at the service's tick step.
        let at = deadline > now ? deadline : now + 100
        if let scheduled = downloaders[d].tickAt, scheduled <= at && scheduled >= now { return }
        downloaders[d].tickAt = at
        queue.push(.downloadTick(d), at: at)
    }

    func dialDone(_ d: Int, _ p: Int) {
        let node = downloaders[d].node
        ledger.dialEnded(node: node, peer: p)
        let existing = link(node, p)
        guard present[node] && present[p] && !(existing.map { links[$0].dropped } ?? false) else {
            counters.dialsFailed += 1
            performDownload(downloaders[d].machine.dialFailed(overlays[p], now: now), downloader: d)
            return
        }
        if let existing, links[existing].up {
            // Connected meanwhile: the machine hears of it again (it ends its dial).
            performDownload(downloaders[d].machine.peerConnected(overlays[p], now: now), downloader: d)
            return
        }
        let l: Int
        if let existing {
            l = existing
        } else {
            l = links.count
            links.append(FetchLink(a: min(node, p), b: max(node, p), latencyMs: Self.draw(config.latencyMs, &random), up: false))
            linkIndex[min(node, p) * config.nodes + max(node, p)] = l
            adjacency[node].append(l)
            adjacency[p].append(l)
        }
        counters.dialled += 1
        linkUp(l)
    }

    func commit(_ d: Int, _ address: ChunkAddress) {
        let node = downloaders[d].node
        guard downloaders[d].delivered.removeValue(forKey: address) != nil else { return }
        stores[node].insert(address)
        performDownload(downloaders[d].machine.stored(address, now: now), downloader: d)
    }
}
