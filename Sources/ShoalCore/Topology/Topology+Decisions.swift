/// What the table asks of the shell: whom to dial, whom to drop, whom to tell a peer about.
extension Topology {
    /// Peers to dial now, best first, at most `dialsInFlightMax` minus the dials under way.
    ///
    /// A candidate is known, neither connected nor being dialled, not banned, due
    /// (`nextDialMs ≤ nowMs`), and has an address. Its bin takes it while the peers
    /// connected or being dialled there (counting the ones picked here) stay below the bin's
    /// dial bound: `binPeersSaturated` for a bin below depth (inbound peers may fill it
    /// further, up to `binPeersMax`, see `admits`), `binPeersMax` for the neighbourhood.
    ///
    /// Each pick goes to the emptiest bin that can take one (an empty bin is what holds
    /// depth down), the deeper on a tie (the neighbourhood, which sync depends on); within a
    /// bin, higher score, then lower overlay. A scan of the book: O(known · log known).
    ///
    /// Dialling a bin below depth only to saturation leaves room in every peer's table for
    /// the peers that dial it: had every node dialled to `binPeersMax`, about half of the
    /// bins would overflow with inbound peers, be pruned, and the pruned peers would dial
    /// again, round after round. And had deeper bins always come first, a node whose deeper
    /// bins keep offering candidates (who may refuse it) would leave bin 0 empty, and its
    /// depth 0, for as long as they last.
    public func nextDials(nowMs: UInt64) -> [KnownPeer] {
        let budget = limits.dialsInFlightMax - dialling.count
        guard budget > 0 else { return [] }
        // Per bin, its candidates best last (so picking pops from the end).
        var perBin = [[KnownPeer]](repeating: [], count: Proximity.binCount)
        for peer in book.values where !connectedSet.contains(peer.overlay) && !dialling.contains(peer.overlay)
            && !peer.isBanned(nowMs: nowMs) && peer.nextDialMs <= nowMs && !peer.addresses.isEmpty {
            perBin[bin(of: peer.overlay)].append(peer)
        }
        var occupied = connectedPerBin
        for overlay in dialling { occupied[bin(of: overlay)] += 1 }
        let depth = self.depth
        var sorted = [Bool](repeating: false, count: Proximity.binCount)
        var picked: [KnownPeer] = []
        while picked.count < budget {
            var best: Int?
            for b in 0..<Proximity.binCount where !perBin[b].isEmpty {
                let bound = b < depth ? limits.binPeersSaturated : limits.binPeersMax
                guard occupied[b] < bound else { continue }
                if let current = best, occupied[current] < occupied[b] { continue }
                best = b  // ascending bins: a tie goes to the deeper one
            }
            guard let b = best else { break }
            if !sorted[b] {
                perBin[b].sort { ($0.score, $1.overlay) < ($1.score, $0.overlay) }
                sorted[b] = true
            }
            picked.append(perBin[b].removeLast())
            occupied[b] += 1
        }
        return picked
    }

    /// Whether a peer that dialled us is taken: not when its bin lies below depth, holds
    /// `binPeersMax` connected peers already, and is capped (`isCapped`); such a peer is
    /// refused and dials elsewhere after its back-off. Always for the neighbourhood, and for
    /// a peer connected already.
    ///
    /// Every node dials at most `binPeersSaturated` peers into a bin below depth, so on
    /// average a bin holds at most twice that; `binPeersMax` (20) lies above it, so some
    /// peer of every bin always has room. (At 16, twice 8, every bin could fill: a node that
    /// restarted into such a network found no peer of its bin 0 that would take it.)
    public func admits(_ overlay: OverlayAddress) -> Bool {
        guard overlay != base else { return false }
        if connectedSet.contains(overlay) { return true }
        let b = bin(of: overlay)
        return b >= depth || connectedPerBin[b] < limits.binPeersMax || !isCapped(bin: b)
    }

    /// Whether bin `b` may be held to `binPeersMax` (refusing and pruning beyond it): only
    /// when its peers have enough others to turn to. A peer of our bin `b` sees us in its own
    /// bin `b`, and that bin holds us and the peers of our bins deeper than `b`, nobody else.
    /// With fewer than `binPeersMax` of those in our book, the peer may need us to fill its
    /// bin `b` (its depth, even), so we keep it, whatever our bin `b` holds.
    func isCapped(bin b: Int) -> Bool {
        var deeper = 0
        for d in (b + 1)..<Proximity.binCount { deeper += knownPerBin[d] }
        return deeper >= limits.binPeersMax
    }

    /// Connected peers to drop: in each capped bin (`isCapped`) below depth holding more than
    /// `binPeersMax` (a bin that was the neighbourhood before depth rose), the excess, lowest
    /// score first, then least recently seen, then lower overlay. Neighbours are never pruned,
    /// and a pruned bin keeps `binPeersMax` peers, so depth does not move.
    public func peersToPrune() -> [OverlayAddress] {
        let depth = self.depth
        var excessBins: [Int: Int] = [:]
        for b in 0..<depth where connectedPerBin[b] > limits.binPeersMax && isCapped(bin: b) {
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
