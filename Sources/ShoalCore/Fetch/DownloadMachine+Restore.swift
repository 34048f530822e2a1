// Rebuilding the machine from the store after a restart.
extension DownloadMachine {
    /// Rebuilds an empty machine from what the store kept: the downloads (only `active` ones
    /// are resumed) and the fetch set. A chunk that `isStored` says is stored is not fetched
    /// again (its entry is removed); an entry no resumed download wants is removed. A
    /// download's chunks are the entries naming it, in address order; what it counts done is
    /// its total less those (the entries leave the fetch set in the transaction that stores
    /// their chunk, so they are exact where `chunksDone` may lag). An entry that failed, or
    /// whose attempts reached `attemptsPerChunkMax`, stays failed. Downloads are resumed
    /// oldest first while the budgets hold; the rest fail (`overBudget`).
    ///
    /// Per-peer attempts and back-offs, the peers that served a download, its initial delay
    /// and its own hints are not stored: a resumed chunk starts afresh with each peer, within
    /// its stored attempts, and with its stored hints.
    public mutating func restore(
        downloads saved: [(id: DownloadID, entry: DownloadEntry)],
        fetches savedFetches: [(address: ChunkAddress, entry: FetchEntry)],
        now: UInt64, isStored: (ChunkAddress) -> Bool = { _ in false }
    ) -> [DownloadAction] {
        precondition(downloads.isEmpty && fetches.isEmpty, "restore into a machine that holds downloads already")
        let now = advance(now)
        var fx = Effects()

        var seenIDs = Set<DownloadID>()
        let active = saved.filter { $0.entry.state == .active && seenIDs.insert($0.id).inserted }
            .sorted { ($0.entry.createdMs, $0.id) < ($1.entry.createdMs, $1.id) }
        let activeIDs = Set(active.map(\.id))

        // Each download's chunks, in address order; entries of stored chunks or of nobody go.
        var seenAddresses = Set<ChunkAddress>()
        let entries = savedFetches.filter { seenAddresses.insert($0.address).inserted }.sorted { $0.address < $1.address }
        var members: [DownloadID: [ChunkAddress]] = [:]
        var kept: [(address: ChunkAddress, entry: FetchEntry)] = []
        for (address, entry) in entries {
            if isStored(address) || !entry.groups.contains(where: activeIDs.contains) {
                fx.emit(.removeFetch(address))
                continue
            }
            kept.append((address, entry))
            for group in entry.groups where activeIDs.contains(group) { members[group, default: []].append(address) }
        }

        // Downloads oldest first, while they fit.
        var admitted = Set<DownloadID>()
        var distinct = Set<ChunkAddress>()
        for (id, entry) in active {
            let chunks = members[id] ?? []
            let new = chunks.filter { !distinct.contains($0) }
            guard downloads.count < limits.downloadsMax, chunks.count <= limits.chunksPerDownloadMax,
                  distinct.count + new.count <= limits.fetchSetMax else {
                let total = max(Int(clamping: entry.chunksTotal), chunks.count)
                let missing = chunks.prefix(limits.missingReportedMax).map { MissingChunk(address: $0, reason: .overBudget) }
                var record = entry
                record.state = .failed
                record.chunksDone = UInt64(total - chunks.count)
                record.chunksTotal = UInt64(total)
                fx.emit(.saveDownload(id, record))
                fx.emit(.finished(id, .failed(missing: missing, missingCount: chunks.count)))
                continue
            }
            distinct.formUnion(new)
            admitted.insert(id)
            let total = max(Int(clamping: entry.chunksTotal), chunks.count)
            var position: [ChunkAddress: Int] = [:]
            for (i, address) in chunks.enumerated() { position[address] = i }
            downloads[id] = Download(sequence: nextSequence, policy: entry.policy, createdMs: entry.createdMs,
                                     startAtMs: now, chunks: chunks, position: position, total: total,
                                     done: total - chunks.count, hints: [])
            nextSequence += 1
            downloadOrder.append(id)
            fx.touched.insert(id)
        }

        // The fetch set.
        for (address, entry) in kept {
            let groups = downloadOrder.filter { entry.groups.contains($0) && admitted.contains($0) }
            guard !groups.isEmpty else {
                fx.emit(.removeFetch(address))
                continue
            }
            var seenHints: [OverlayAddress] = []
            for hint in entry.hints where seenHints.count < limits.hintsPerChunkMax && !seenHints.contains(hint) {
                seenHints.append(hint)
            }
            var fetch = Fetch(state: .ready, groups: groups, hints: seenHints.map { Hint(peer: $0, confirmed: true) },
                              attempts: Int(entry.attempts), key: key(of: address, groups: groups))
            let failure = entry.failure
                ?? (fetch.attempts >= limits.attemptsPerChunkMax ? .attemptsExhausted(attempts: fetch.attempts) : nil)
            if let failure {
                fetch.attempts = min(fetch.attempts, limits.attemptsPerChunkMax)
                fetch.state = .failed(failure)
                fetches[address] = fetch
                for group in groups { downloads[group]!.failed += 1 }
            } else if entry.nextAttemptMs > now {
                // A time from before the restart, converted by the shell; never further than
                // one back-off ahead, whatever the clocks did.
                let until = min(entry.nextAttemptMs, now &+ limits.retryDelayMaxMs)
                fetch.state = .delayed(until: until, fixed: true)
                fetches[address] = fetch
                timers.push(Timer(at: until, target: .fetch(address)))
            } else {
                fetches[address] = fetch
                makeReady(address, now: now)
            }
            if groups != entry.groups || fetch.hints.count != entry.hints.count || fetch.attempts != Int(entry.attempts) {
                fx.emit(.saveFetch(address, self.entry(for: fetches[address]!)))
            }
        }
        return finish(&fx, now: now)
    }
}
