/// The address book: entries come from the `peers` table (`load`), from handshakes
/// (`connected`) and from gossip (`learned`), and leave when they prove useless.
extension Topology {
    /// A hint that `overlay` listens at `addresses` (hive gossip, configuration). Returns false
    /// when it is ignored: our own overlay, a banned entry, no valid "host:port", or a full
    /// book whose every evictable entry is at least as useful as an untried hint.
    ///
    /// A hint only ever adds addresses to a verified entry (a peer we met knows better where
    /// it listens than gossip does); to an unverified entry it adds them in front, so the
    /// newest hint is tried first.
    @discardableResult
    public mutating func learned(_ overlay: OverlayAddress, addresses: [String], nowMs: UInt64) -> Bool {
        guard overlay != base else { return false }
        let valid = ListenAddress.valid(addresses)
        guard !valid.isEmpty else { return false }
        if var peer = book[overlay] {
            guard !peer.isBanned(nowMs: nowMs) else { return false }
            peer.addresses = peer.verified ? ListenAddress.valid(peer.addresses + valid) : ListenAddress.valid(valid + peer.addresses)
            book[overlay] = peer
            return true
        }
        if book.count >= limits.knownPeersMax {
            // Only an entry worse than an untried hint gives way: one that failed dials or was
            // scored down. Equal ones stay, or a stream of gossip could wash out the book.
            let untried = Self.usefulness(KnownPeer(overlay: overlay, addresses: valid))
            guard let victim = evictionCandidate(where: { !$0.verified && !$0.isBanned(nowMs: nowMs) }),
                  Self.usefulness(book[victim]!) < untried else { return false }
            remove(victim)
        }
        insert(KnownPeer(overlay: overlay, addresses: valid))
        return true
    }

    /// How much an entry is worth keeping: verified first, then fewer failed dials, higher
    /// score, more recently seen.
    static func usefulness(_ peer: KnownPeer) -> (Int, Int, Int64, UInt64) {
        (peer.verified ? 1 : 0, -peer.failedDials, peer.score, peer.lastSeenMs)
    }

    /// The least useful entry that is neither connected nor being dialled and satisfies
    /// `eligible` (ties: the lower overlay). A scan of the book: eviction happens only when
    /// the book is full, at most once per hint or handshake.
    func evictionCandidate(where eligible: (KnownPeer) -> Bool) -> OverlayAddress? {
        var best: KnownPeer?
        for peer in book.values where !connectedSet.contains(peer.overlay) && !dialling.contains(peer.overlay) && eligible(peer) {
            guard let b = best else { best = peer; continue }
            let (p, q) = (Self.usefulness(peer), Self.usefulness(b))
            if p < q || (p == q && peer.overlay < b.overlay) { best = peer }
        }
        return best?.overlay
    }

    /// Makes room for one more entry: with a full book the least useful evictable entry goes,
    /// unverified or not. False when every entry is connected or being dialled.
    @discardableResult
    mutating func makeRoom() -> Bool {
        guard book.count >= limits.knownPeersMax else { return true }
        guard let victim = evictionCandidate(where: { _ in true }) else { return false }
        remove(victim)
        return true
    }

    /// Handshakes may take the book past its bound while every entry is connected or being
    /// dialled; once some of them are neither, the excess goes.
    mutating func shrinkToBound() {
        while book.count > limits.knownPeersMax, let victim = evictionCandidate(where: { _ in true }) {
            remove(victim)
        }
    }

    mutating func insert(_ peer: KnownPeer) {
        precondition(book[peer.overlay] == nil && peer.overlay != base, "inserting \(peer.overlay) twice or our own overlay")
        book[peer.overlay] = peer
        knownPerBin[bin(of: peer.overlay)] += 1
    }

    mutating func remove(_ overlay: OverlayAddress) {
        guard book.removeValue(forKey: overlay) != nil else { return }
        knownPerBin[bin(of: overlay)] -= 1
        if connectedSet.remove(overlay) != nil { connectedPerBin[bin(of: overlay)] -= 1 }
        dialling.remove(overlay)
    }
}

/// The syntax of a listen address, "host:port": the host non-empty (a name, an IPv4 address,
/// or an IPv6 address in brackets), the port 1…65535 in decimal, at most 255 bytes in all
/// (the `peers` table's bound per address). Nothing is resolved: this only keeps junk out.
enum ListenAddress {
    static let bytesMax = 255

    static func isValid(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count <= bytesMax, let colon = bytes.lastIndex(of: UInt8(ascii: ":")) else { return false }
        let host = bytes[..<colon], port = bytes[(colon + 1)...]
        guard (1...5).contains(port.count), port.allSatisfy(isDigit),
              let value = Int(String(decoding: port, as: UTF8.self)), (1...65_535).contains(value) else { return false }
        if host.first == UInt8(ascii: "[") {
            guard host.count > 2, host.last == UInt8(ascii: "]") else { return false }
            let inner = host.dropFirst().dropLast()
            return inner.contains(UInt8(ascii: ":")) && inner.allSatisfy { isHexDigit($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") }
        }
        return !host.isEmpty && host.allSatisfy { isHostByte($0) }
    }

    /// The valid addresses of `addresses`, each once, in order, at most `listenAddressesMax`.
    static func valid(_ addresses: [String]) -> [String] {
        var out: [String] = []
        for a in addresses where out.count < ProtocolLimits.listenAddressesMax && !out.contains(a) && isValid(a) {
            out.append(a)
        }
        return out
    }

    private static func isDigit(_ b: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) }

    private static func isHexDigit(_ b: UInt8) -> Bool {
        isDigit(b) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(b) || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(b)
    }

    /// Letters, digits, '-', '.', '_': host names and IPv4 addresses; a bare ':' is not (an
    /// IPv6 address needs its brackets).
    private static func isHostByte(_ b: UInt8) -> Bool {
        isDigit(b) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(b)
            || b == UInt8(ascii: "-") || b == UInt8(ascii: ".") || b == UInt8(ascii: "_")
    }
}
