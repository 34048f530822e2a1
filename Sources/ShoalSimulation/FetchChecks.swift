import ShoalCore

/// Violations of one check: how many, and the first few, said in words.
public struct ViolationList: Sendable, Equatable {
    public private(set) var count = 0
    public private(set) var examples: [String] = []
    public static let examplesMax = 8

    public init() {}

    public var isEmpty: Bool { count == 0 }

    mutating func record(_ text: @autoclosure () -> String) {
        count += 1
        if examples.count < Self.examplesMax { examples.append(text()) }
    }
}

/// What the fetch simulation checks (Docs/Simulation-Fetch.md), one list per check.
public struct FetchViolations: Sendable, Equatable {
    /// (a) A retrievable retrieval (`FetchSimulator.route`) that ended without its chunk, or
    /// any retrieval that ended with a chunk other than the one asked for.
    public var unretrieved = ViolationList()
    /// (b) A chunk asked of a second peer while a request for it by the same intent (one
    /// node's fetch of an address; one downloader's fetch of a chunk) was still open.
    public var doubleRequests = ViolationList()
    /// (c) Requests or dials in flight above the limits the machines were given.
    public var budgets = ViolationList()
    /// (d) A retrieval request that came back to a node already on its path, or that went
    /// further than the hop limit.
    public var loops = ViolationList()
    /// (e) A download that did not end, or ended later than its bound after its start.
    public var unendedDownloads = ViolationList()

    public init() {}

    public var total: Int { unretrieved.count + doubleRequests.count + budgets.count + loops.count + unendedDownloads.count }

    /// Each check with its list, in the order (a)…(e).
    public var all: [(name: String, list: ViolationList)] {
        [("unretrieved", unretrieved), ("double_requests", doubleRequests), ("budgets", budgets), ("loops", loops),
         ("unended_downloads", unendedDownloads)]
    }
}

/// The shell's record of every request it puts on the wire and of what ends it, checked as it
/// goes: checks (b), (c) and (d). It sees only what a shell sees (the actions it carries out,
/// the replies, disconnects and deadlines it feeds the machines), never the machines' insides,
/// so it checks the machines from the outside. Tests feed it crafted traces.
public struct FetchLedger: Sendable {
    public var violations = FetchViolations()
    /// Loops on paths a widened fetch sent farther from the address (a known issue of the
    /// retrieval machine, `RetrievalPathTests`): reported, not violations.
    public var widenedLoops = ViolationList()

    // MARK: Downloads: (b) one request per chunk and downloader; (c) per peer, in total, dials.

    private struct DownloadRequest: Sendable {
        var address: ChunkAddress
        var peer: Int
    }

    private struct NodeAddress: Hashable, Sendable {
        var node: Int
        var address: ChunkAddress
    }

    private struct NodePeer: Hashable, Sendable {
        var node: Int
        var peer: Int
    }

    /// Per downloading node: requests out by the machine's ID.
    private var downloadRequests: [Int: [UInt64: DownloadRequest]] = [:]
    /// The request out per (downloading node, chunk).
    private var downloadOpen: [NodeAddress: UInt64] = [:]
    private var downloadPerPeer: [NodePeer: Int] = [:]
    private var dialing: [Int: [Int]] = [:]
    /// The most requests a downloader had out at once, over all and to one peer.
    public private(set) var downloadRequestsPeak = 0
    public private(set) var downloadPerPeerPeak = 0

    public init() {}

    /// A downloading node sent request `id` for `address` to `peer`.
    public mutating func downloadRequestSent(node: Int, id: UInt64, address: ChunkAddress, peer: Int, limits: DownloadLimits, now: UInt64) {
        let key = NodeAddress(node: node, address: address)
        if let open = downloadOpen[key], let other = downloadRequests[node]?[open] {
            violations.doubleRequests.record("at \(now) ms node \(node)'s downloader asked node \(peer) for \(address.hex.prefix(12)) "
                                             + "while its request \(open) to node \(other.peer) was open")
        }
        downloadOpen[key] = id
        downloadRequests[node, default: [:]][id] = DownloadRequest(address: address, peer: peer)
        let pair = NodePeer(node: node, peer: peer)
        downloadPerPeer[pair, default: 0] += 1
        let total = downloadRequests[node]!.count, perPeer = downloadPerPeer[pair]!
        downloadRequestsPeak = max(downloadRequestsPeak, total)
        downloadPerPeerPeak = max(downloadPerPeerPeak, perPeer)
        if perPeer > limits.requestsPerPeerMax {
            violations.budgets.record("at \(now) ms node \(node)'s downloader had \(perPeer) requests out to node \(peer), at most \(limits.requestsPerPeerMax)")
        }
        if total > limits.requestsInFlightMax {
            violations.budgets.record("at \(now) ms node \(node)'s downloader had \(total) requests out, at most \(limits.requestsInFlightMax)")
        }
    }

    /// The request is over: answered (and the answer fed to the machine), cancelled by the
    /// machine, or void because its peer disconnected.
    public mutating func downloadRequestEnded(node: Int, id: UInt64) {
        guard let request = downloadRequests[node]?.removeValue(forKey: id) else { return }
        let key = NodeAddress(node: node, address: request.address)
        if downloadOpen[key] == id { downloadOpen[key] = nil }
        let pair = NodePeer(node: node, peer: request.peer)
        downloadPerPeer[pair] = downloadPerPeer[pair]! > 1 ? downloadPerPeer[pair]! - 1 : nil
    }

    /// The downloading node lost its connection to `peer`: its requests there are void.
    public mutating func downloadPeerGone(node: Int, peer: Int) {
        guard let requests = downloadRequests[node] else { return }
        for (id, request) in requests where request.peer == peer { downloadRequestEnded(node: node, id: id) }
    }

    public mutating func dialStarted(node: Int, peer: Int, limits: DownloadLimits, now: UInt64) {
        dialing[node, default: []].append(peer)
        if dialing[node]!.count > limits.dialsInFlightMax {
            violations.budgets.record("at \(now) ms node \(node)'s downloader dialled \(dialing[node]!.count) peers at once, at most \(limits.dialsInFlightMax)")
        }
    }

    /// A dial reported (connected or failed), or timed out in the machine.
    public mutating func dialEnded(node: Int, peer: Int) {
        if let i = dialing[node]?.firstIndex(of: peer) { dialing[node]!.remove(at: i) }
    }

    // MARK: Retrieval: (b) one attempt per fetch; (c) attempts per fetch, open per peer; (d) paths.

    private struct Attempt: Sendable {
        var address: ChunkAddress
        var peer: Int
        var deadline: UInt64
    }

    /// Per node: attempts out by request ID, and the one per address.
    private var attempts: [Int: [UInt32: Attempt]] = [:]
    private var attemptOpen: [NodeAddress: UInt32] = [:]
    /// Peers asked by the fetch of an address now open at a node.
    private var asksPerFetch: [NodeAddress: Int] = [:]
    /// Requests of a peer the node has taken on and not answered yet.
    private var openForPeer: [NodePeer: Int] = [:]

    /// A node begins a fetch (a request for an address it was not fetching).
    public mutating func retrievalFetchStarted(node: Int, address: ChunkAddress) {
        asksPerFetch[NodeAddress(node: node, address: address)] = 0
    }

    /// Node `node` asked `peer` for `address` under `ruid`, to be answered by `deadline`.
    /// `local`: a caller on the node waits for the fetch (its attempt budget is the origin's).
    public mutating func retrievalAsked(node: Int, peer: Int, ruid: UInt32, address: ChunkAddress, deadline: UInt64,
                                        local: Bool, limits: RetrievalLimits, now: UInt64) {
        let key = NodeAddress(node: node, address: address)
        if let open = attemptOpen[key], let attempt = attempts[node]?[open], attempt.deadline > now {
            violations.doubleRequests.record("at \(now) ms node \(node) asked node \(peer) for \(address.hex.prefix(12)) "
                                             + "while its request \(open) to node \(attempt.peer) was open until \(attempt.deadline) ms")
        }
        if let open = attemptOpen[key] { attempts[node]?[open] = nil }
        attemptOpen[key] = ruid
        attempts[node, default: [:]][ruid] = Attempt(address: address, peer: peer, deadline: deadline)
        let asked = asksPerFetch[key, default: 0] + 1
        asksPerFetch[key] = asked
        let budget = local ? limits.originAttemptsMax : limits.forwardAttemptsMax
        if asked > budget {
            violations.budgets.record("at \(now) ms node \(node)'s fetch of \(address.hex.prefix(12)) asked its \(asked)th peer, at most \(budget)")
        }
    }

    /// A reply to `ruid` from `peer` was fed to the node's machine: the attempt is over.
    public mutating func retrievalReplied(node: Int, ruid: UInt32, peer: Int) {
        guard let attempt = attempts[node]?[ruid], attempt.peer == peer else { return }
        endAttempt(node: node, ruid: ruid, attempt)
    }

    /// The node's machine no longer fetches `address` (its waiters went): its attempt is void.
    public mutating func retrievalFetchDropped(node: Int, address: ChunkAddress) {
        let key = NodeAddress(node: node, address: address)
        guard let ruid = attemptOpen[key], let attempt = attempts[node]?[ruid] else { return }
        endAttempt(node: node, ruid: ruid, attempt)
    }

    /// The node lost its connection to `peer`: attempts there end, and its requests are dropped.
    public mutating func retrievalPeerGone(node: Int, peer: Int) {
        if let open = attempts[node] {
            for (ruid, attempt) in open where attempt.peer == peer { endAttempt(node: node, ruid: ruid, attempt) }
        }
        openForPeer[NodePeer(node: node, peer: peer)] = nil
    }

    /// Addresses the node has an attempt open for (the shell asks its machine whether the
    /// fetch is still open after a disconnect).
    public func retrievalOpenAddresses(node: Int) -> [ChunkAddress] {
        (attempts[node] ?? [:]).values.map(\.address).sorted()
    }

    private mutating func endAttempt(node: Int, ruid: UInt32, _ attempt: Attempt) {
        attempts[node]![ruid] = nil
        let key = NodeAddress(node: node, address: attempt.address)
        if attemptOpen[key] == ruid { attemptOpen[key] = nil }
    }

    /// The node took on a peer's request (it waits on a fetch), or answered one. `refusedAtOnce`:
    /// the machine refused it as it came (its refusal closes it), so it never held it open.
    public mutating func retrievalPeerRequestOpened(node: Int, peer: Int, limits: RetrievalLimits, refusedAtOnce: Bool = false, now: UInt64) {
        let pair = NodePeer(node: node, peer: peer)
        openForPeer[pair, default: 0] += 1
        if !refusedAtOnce && openForPeer[pair]! > limits.openPerPeerMax {
            violations.budgets.record("at \(now) ms node \(node) held \(openForPeer[pair]!) requests of node \(peer), at most \(limits.openPerPeerMax)")
        }
    }

    public mutating func retrievalPeerRequestClosed(node: Int, peer: Int) {
        let pair = NodePeer(node: node, peer: peer)
        guard let open = openForPeer[pair] else { return }
        openForPeer[pair] = open > 1 ? open - 1 : nil
    }

    /// Node `from` sends a request for `address` to `to`: on behalf of waiters whose requests
    /// came through `visited` (every node they passed, `from` included), the nearest origin
    /// `hopsFromOrigin` hops back (this request's hop included); `wireHops` is the count it
    /// carries. The request must not return to a node on its path (a loop) nor travel further
    /// than `hopsMax + 1` hops (the origin grants `hopsMax` forwards).
    ///
    /// `climbed`: on its way a node serving a peer's request asked a peer farther from the
    /// address than itself. The machine no longer lets that happen (a fetch a peer waits on is
    /// forward-only: `RetrievalPathTests`, `RetrievalJoinTests`); a loop on such a path is still
    /// counted apart, in `widenedLoops`, so that a change that brings it back shows.
    public mutating func retrievalForwarded(from: Int, to: Int, address: ChunkAddress, visited: [Int], hopsFromOrigin: Int,
                                            wireHops: UInt8, hopsMax: UInt8, climbed: Bool = false, now: UInt64) {
        if visited.contains(to) {
            let text = "at \(now) ms node \(from) asked node \(to) for \(address.hex.prefix(12)), which is on the request's path \(visited)"
            if climbed { widenedLoops.record(text) } else { violations.loops.record(text) }
        }
        if hopsFromOrigin > Int(hopsMax) + 1 || wireHops > hopsMax {
            violations.loops.record("at \(now) ms node \(from) asked node \(to) for \(address.hex.prefix(12)) at hop \(hopsFromOrigin) "
                                    + "with \(wireHops) hops left, beyond the limit of \(hopsMax)")
        }
    }

    // MARK: Outcomes: (a) and (e).

    /// A retrieval ended: `retrievable` ones must end with their chunk, every one with the
    /// chunk asked for if with any.
    public mutating func retrievalEnded(origin: Int, address: ChunkAddress, result: Result<Chunk, RetrievalFailure>,
                                        retrievable: Bool, route: [Int], now: UInt64) {
        switch result {
        case .success(let chunk) where chunk.address != address:
            violations.unretrieved.record("at \(now) ms node \(origin)'s retrieval of \(address.hex.prefix(12)) ended with \(chunk.address.hex.prefix(12))")
        case .failure(let failure) where retrievable:
            violations.unretrieved.record("at \(now) ms node \(origin)'s retrieval of \(address.hex.prefix(12)) failed (\(failure)) "
                                          + "although honest route \(route) led to a holder")
        default:
            break
        }
    }

    /// A retrieval still open when the run stopped.
    public mutating func retrievalNeverEnded(origin: Int, address: ChunkAddress, issuedMs: UInt64) {
        violations.unretrieved.record("node \(origin)'s retrieval of \(address.hex.prefix(12)), issued at \(issuedMs) ms, never ended")
    }

    /// A download ended at `endedMs` (nil: it had not when the run stopped, at `stopMs`).
    public mutating func downloadEnded(node: Int, startedMs: UInt64, endedMs: UInt64?, boundMs: UInt64, stopMs: UInt64) {
        guard let endedMs else {
            violations.unendedDownloads.record("node \(node)'s download, started at \(startedMs) ms, had not ended when the run stopped at \(stopMs) ms")
            return
        }
        if endedMs - startedMs > boundMs {
            violations.unendedDownloads.record("node \(node)'s download took \(endedMs - startedMs) ms, more than its bound of \(boundMs) ms")
        }
    }
}
