/// What the table asks of the shell: whom to dial, whom to drop, whom to tell a peer about.
extension Topology {
    /// Peers to dial now, best first, at most `dialsInFlightMax` minus the dials under way.
    ///
    /// A candidate is known, neither connected nor being dialled, not banned, due
    /// (`nextDialMs ≤ nowMs`), has an address, and its bin has fewer than `binPeersMax`
    /// peers connected or being dialled (counting the ones picked here). Bins that are not
    /// saturated come first; then deeper bins (the neighbourhood, which depth and sync depend
    /// on), higher score, lower overlay. A scan of the book: O(known · log known).
    public func nextDials(nowMs: UInt64) -> [KnownPeer] {
        let budget = limits.dialsInFlightMax - dialling.count
        guard budget > 0 else { return [] }
        let candidates = book.values.filter {
            !connectedSet.contains($0.overlay) && !dialling.contains($0.overlay) && !$0.isBanned(nowMs: nowMs)
                && $0.nextDialMs <= nowMs && !$0.addresses.isEmpty
        }.map { (peer: $0, bin: bin(of: $0.overlay)) }.sorted {
            ($0.bin, $0.peer.score, $1.peer.overlay) > ($1.bin, $1.peer.score, $0.peer.overlay)
        }
        var occupied = connectedPerBin
        for overlay in dialling { occupied[bin(of: overlay)] += 1 }
        var picked: [KnownPeer] = []
        var taken = Set<OverlayAddress>()
        // First into bins below saturation, then into any bin below the maximum. A bin only
        // fills up as we pick, so the first pass is the best pick at every step.
        for bound in [limits.binPeersSaturated, limits.binPeersMax] {
            for (peer, bin) in candidates where picked.count < budget && occupied[bin] < bound && !taken.contains(peer.overlay) {
                picked.append(peer)
                taken.insert(peer.overlay)
                occupied[bin] += 1
            }
        }
        return picked
    }

    /// Connected peers to drop: in each bin below depth holding more than `binPeersMax`, the
    /// excess, lowest score first, then least recently seen, then lower overlay. Neighbours
    /// are never pruned, and a pruned bin keeps `binPeersMax` peers, so depth does not move.
    public func peersToPrune() -> [OverlayAddress] {
        let depth = self.depth
        var excessBins: [Int: Int] = [:]
        for b in 0..<depth where connectedPerBin[b] > limits.binPeersMax {
            excessBins[b] = connectedPerBin[b] - limits.binPeersMax
        }
        guard !excessBins.isEmpty else { return [] }
        var out: [OverlayAddress] = []
        for b in excessBins.keys.sorted() {
            let inBin = connectedSet.filter { bin(of: $0) == b }.map { book[$0]! }.sorted {
                ($0.score, $0.lastSeenMs, $0.overlay) < ($1.score, $1.lastSeenMs, $1.overlay)
            }
            out += inBin.prefix(excessBins[b]!).map(\.overlay)
        }
        return out
    }

    /// The peers to tell `asker` about (a hive answer), at most `limit`: never the asker,
    /// never an unverified entry (gossip we cannot vouch for is not passed on), never a
    /// banned one, never one without an address.
    ///
    /// First the asker's neighbourhood as far as we can see it: the verified peers `p` with
    /// `PO(asker, p) ≥ min(depth, PO(base, asker) + 1)`. For an asker in our neighbourhood
    /// (PO ≥ depth) that is exactly our neighbourhood. For a farther asker it is our bin
    /// `PO(base, asker)`: those peers differ from us at the same bit the asker does, so they
    /// share more bits with it than anyone else we know; peers in deeper bins share exactly
    /// `PO(base, asker)` bits with it and are no closer to it than we are. These come
    /// closest first.
    ///
    /// Then, to fill the asker's other bins, up to 2 random verified peers per bin of the
    /// asker's table (bin `PO(asker, p)`), bin 0 first. The result depends only on the table
    /// and the generator, so a seed replays it. `nowMs` decides which bans still hold.
    public func hiveAnswer(for asker: OverlayAddress, limit: Int, nowMs: UInt64,
                           random: inout some RandomNumberGenerator) -> [KnownPeer] {
        guard limit > 0 else { return [] }
        let askerPO = base.proximity(to: asker)
        let threshold = min(depth, askerPO + 1)
        let candidates = book.values.filter {
            $0.verified && $0.overlay != asker && !$0.isBanned(nowMs: nowMs) && !$0.addresses.isEmpty
        }.map { (peer: $0, po: asker.proximity(to: $0.overlay)) }
        let neighbourhood = candidates.filter { $0.po >= threshold }.sorted {
            ($0.po, $1.peer.overlay) > ($1.po, $0.peer.overlay)
        }
        var out = neighbourhood.prefix(limit).map(\.peer)
        guard out.count < limit else { return out }

        var perBin = [[KnownPeer]](repeating: [], count: Proximity.binCount)
        for (peer, po) in candidates where po < threshold { perBin[Proximity.bin(forProximity: po)].append(peer) }
        for var peers in perBin where !peers.isEmpty {
            peers.sort { $0.overlay < $1.overlay }
            // A partial Fisher–Yates shuffle: the first two places get random distinct peers.
            for i in 0..<min(2, peers.count) {
                peers.swapAt(i, Int.random(in: i..<peers.count, using: &random))
                out.append(peers[i])
                if out.count == limit { return out }
            }
        }
        return out
    }

    /// Preconditions on the table's consistency; tests and simulations call it after every
    /// event.
    public func checkInvariants() {
        precondition(book[base] == nil, "our own overlay is in the book")
        precondition(connectedSet.isDisjoint(with: dialling), "dialling a connected peer: \(connectedSet.intersection(dialling).sorted())")
        precondition(book.count <= max(limits.knownPeersMax, connectedSet.count + dialling.count),
                     "book of \(book.count) beyond \(limits.knownPeersMax) with \(connectedSet.count) connected, \(dialling.count) dialling")
        var known = [Int](repeating: 0, count: Proximity.binCount)
        var connectedBins = known
        for (overlay, peer) in book {
            precondition(peer.overlay == overlay, "entry \(overlay) holds \(peer.overlay)")
            precondition(peer.addresses.count <= ProtocolLimits.listenAddressesMax && Set(peer.addresses).count == peer.addresses.count
                         && peer.addresses.allSatisfy(ListenAddress.isValid), "bad addresses for \(overlay): \(peer.addresses)")
            precondition(peer.failedDials >= 0, "negative failed dials: \(peer)")
            known[bin(of: overlay)] += 1
            if connectedSet.contains(overlay) {
                precondition(peer.verified, "connected but not verified: \(peer)")
                connectedBins[bin(of: overlay)] += 1
            }
        }
        precondition(connectedSet.allSatisfy { book[$0] != nil } && dialling.allSatisfy { book[$0] != nil },
                     "connected or dialling peers missing from the book")
        precondition(known == knownPerBin, "known per bin \(knownPerBin), counted \(known)")
        precondition(connectedBins == connectedPerBin, "connected per bin \(connectedPerBin), counted \(connectedBins)")
        let d = depth
        precondition(d == 0 || (connectedPerBin[..<d].allSatisfy { $0 > 0 }
                                && connectedPerBin[d...].reduce(0, +) >= limits.neighbourhoodMin), "depth \(d) with bins \(connectedPerBin)")
    }
}
