/// The server side of pull sync for one peer connection: the requests the peer has made of
/// our store, the offers we made it (pinned until answered), and its live requests waiting for
/// new chunks. Performs no I/O: the shell reads the store when told (`queryRange`, `deliver`)
/// and reports back.
public struct SyncServer: Sendable {
    public struct Limits: Equatable, Sendable {
        /// Requests (offers awaiting wants, and waiting live requests) at once per peer.
        public var requestsInFlightMax = 8
        public var offerBatchMax = ProtocolLimits.offerBatchMax
        public var deliveryChunksMax = ProtocolLimits.deliveryChunksMax
        /// A live request with nothing to offer is answered empty after this. Long, because
        /// a neighbour subscribes every bin from depth to 31, and most of them stay empty:
        /// at 2 s (swarm's figure) idle neighbours cost about 14 requests and 14 empty offers
        /// per second each (decision 0024). Pings, not empty offers, tell a live peer from a
        /// dead one. Below the client's `liveOfferTimeoutMs`.
        public var liveIdleTimeoutMs: UInt64 = 15_000
        /// A waiting live request whose bin grew is answered this long after the growth, so
        /// that chunks arriving meanwhile go into the same offer (0: at once). Live sync lags
        /// by this much; in exchange a node that stores chunk after chunk sends each peer one
        /// offer, one want and one request per gathering instead of per chunk (decision 0024).
        public var liveGatherMs: UInt64 = 200
        /// An offer the peer does not answer within this is dropped (its pins released).
        public var offerLifetimeMs: UInt64 = 60_000

        public init() {}
    }

    public enum Action: Equatable, Sendable {
        case send(Message)
        /// Read the store: entries of `bin` with bin ID in `[from, to]`, at most `limit`, and the
        /// bin's cursor; report with `rangeRead`.
        case queryRange(ruid: RequestID, bin: UInt8, from: UInt64, to: UInt64, limit: Int)
        /// Read these chunks and send them in `ChunkDelivery` frames of at most
        /// `deliveryChunksMax`; chunks no longer stored end the request with `rangeEvicted`.
        case deliver(ruid: RequestID, addresses: [ChunkAddress])
        case fault(PeerFault)
    }

    /// A request of the peer's.
    public enum Request: Equatable, Sendable {
        /// We are reading the store for it.
        case querying(bin: UInt8, from: UInt64, to: UInt64?, limit: Int)
        /// A live request with nothing to offer yet; answered when the bin grows or at `deadline`.
        case waiting(bin: UInt8, from: UInt64, limit: Int, deadline: UInt64)
        /// A live request whose bin grew: the store is read at `until` (`liveGatherMs`).
        case gathering(bin: UInt8, from: UInt64, limit: Int, until: UInt64)
        /// Offered; pinned until the peer says what it wants, or until `expires`.
        case offered(addresses: [ChunkAddress], expires: UInt64)

        /// When `tick` has something to do with the request (a querying one waits for the store).
        public var deadline: UInt64? {
            switch self {
            case .waiting(_, _, _, let deadline): deadline
            case .gathering(_, _, _, let until): until
            case .offered(_, let expires): expires
            case .querying: nil
            }
        }
    }

    public let limits: Limits
    /// Bins this peer may sync from us (all, until the topology narrows it).
    public var servedBins: Set<UInt8>
    public private(set) var requests: [RequestID: Request] = [:]
    /// Bit `b` set while a live request on bin `b` waits (what `binAdvanced` can answer), so
    /// a shell can skip telling this server about bins nobody waits on.
    public private(set) var waitingBins: UInt32 = 0
    /// Waiting live requests per bin (`waitingBins` is its non-zero set).
    private var waitingPerBin = [UInt16](repeating: 0, count: Proximity.binCount)
    /// Each request's deadline, beside the table: `nextDeadline` is read after every event, and
    /// reading it from the requests copied each one out (an offer's addresses with it).
    private var deadlines: [RequestID: UInt64] = [:]

    /// Every change to `requests` goes through here, to keep `waitingBins`.
    private mutating func put(_ ruid: RequestID, _ request: Request?) {
        if case .waiting(let bin, _, _, _) = requests[ruid] {
            waitingPerBin[Int(bin)] -= 1
            if waitingPerBin[Int(bin)] == 0 { waitingBins &= ~(1 << UInt32(bin)) }
        }
        if case .waiting(let bin, _, _, _) = request {
            waitingPerBin[Int(bin)] += 1
            waitingBins |= 1 << UInt32(bin)
        }
        requests[ruid] = request
        deadlines[ruid] = request?.deadline
    }

    public struct Counters: Equatable, Sendable {
        public var requests = 0, offered = 0, wanted = 0, refused = 0
    }

    public private(set) var counters = Counters()

    public init(servedBins: Set<UInt8> = Set(0..<UInt8(Proximity.binCount)), limits: Limits = Limits()) {
        self.servedBins = servedBins
        self.limits = limits
    }

    public mutating func getRangeReceived(_ request: GetRange, now: UInt64) -> [Action] {
        if requests[request.ruid] != nil {
            return [.fault(.malformedRequest("request id \(request.ruid) is already in use"))]
        }
        if Int(request.bin) >= Proximity.binCount {
            return [.fault(.malformedRequest("bin \(request.bin)"))]
        }
        if request.limit == 0 {
            return [.fault(.malformedRequest("limit 0"))]
        }
        if let to = request.to, to < request.from {
            return [.fault(.malformedRequest("range \(request.from)-\(to) is inverted"))]
        }
        if request.from == 0 {
            return [.fault(.malformedRequest("bin IDs start at 1"))]
        }
        guard servedBins.contains(request.bin) else {
            counters.refused += 1
            return [.send(.streamError(StreamError(ruid: request.ruid, code: .binNotServed, message: "bin \(request.bin) is not served to this peer")))]
        }
        guard requests.count < limits.requestsInFlightMax else {
            counters.refused += 1
            return [.send(.streamError(StreamError(ruid: request.ruid, code: .overloaded,
                                                   message: "\(requests.count) requests in flight")))]
        }
        counters.requests += 1
        let limit = min(Int(request.limit), limits.offerBatchMax)
        put(request.ruid, .querying(bin: request.bin, from: request.from, to: request.to, limit: limit))
        return [.queryRange(ruid: request.ruid, bin: request.bin, from: request.from, to: request.to ?? .max, limit: limit)]
    }

    /// The store's answer to `queryRange`: entries in bin-ID order, and the bin's cursor.
    public mutating func rangeRead(ruid: RequestID, entries: [(binID: UInt64, address: ChunkAddress)],
                                   cursor: UInt64, now: UInt64) -> [Action] {
        guard case .querying(let bin, let from, let to, let limit) = requests[ruid] else { return [] }
        precondition(entries.count <= limit, "store returned more entries than asked for")
        if to == nil && entries.isEmpty {
            put(ruid, .waiting(bin: bin, from: from, limit: limit, deadline: now + limits.liveIdleTimeoutMs))
            return []
        }
        // The offer covers up to the last entry when the batch is full; otherwise everything
        // we have up to the requested end (or the cursor, for live).
        let lastIndex: UInt64
        if entries.count == limit, let last = entries.last {
            lastIndex = last.binID
        } else if let to {
            // Never past the cursor: bin IDs above it do not exist yet, and sealing them would
            // skip the chunks that later get them.
            lastIndex = min(to, max(cursor, entries.last?.binID ?? 0))
        } else {
            lastIndex = max(cursor, entries.last?.binID ?? 0)
        }
        return offer(ruid: ruid, from: from, lastIndex: lastIndex, addresses: entries.map(\.address), now: now)
    }

    private mutating func offer(ruid: RequestID, from: UInt64, lastIndex: UInt64, addresses: [ChunkAddress], now: UInt64) -> [Action] {
        let message = Message.offeredHashes(OfferedHashes(ruid: ruid, from: from, lastIndex: lastIndex, addresses: addresses))
        counters.offered += addresses.count
        if addresses.isEmpty {
            put(ruid, nil)  // nothing to want: the request ends with the offer
        } else {
            put(ruid, .offered(addresses: addresses, expires: now + limits.offerLifetimeMs))
        }
        return [.send(message)]
    }

    /// The bin grew to `cursor`: waiting live requests it can answer read the store again.
    public mutating func binAdvanced(bin: UInt8, cursor: UInt64, now: UInt64) -> [Action] {
        var actions: [Action] = []
        for (ruid, request) in requests.sorted(by: { $0.key < $1.key }) {
            guard case .waiting(let b, let from, let limit, _) = request, b == bin, cursor >= from else { continue }
            if limits.liveGatherMs > 0 {
                put(ruid, .gathering(bin: bin, from: from, limit: limit, until: now + limits.liveGatherMs))
                continue
            }
            put(ruid, .querying(bin: bin, from: from, to: nil, limit: limit))
            actions.append(.queryRange(ruid: ruid, bin: bin, from: from, to: .max, limit: limit))
        }
        return actions
    }

    public mutating func wantedReceived(_ want: WantedHashes, now: UInt64) -> [Action] {
        guard case .offered(let addresses, _) = requests[want.ruid] else {
            return [.fault(.unknownRequest(want.ruid))]
        }
        let bytes = (addresses.count + 7) / 8
        guard want.bitvector.count == bytes else {
            return [.fault(.malformedRequest("want bitvector of \(want.bitvector.count) bytes for \(addresses.count) addresses"))]
        }
        if addresses.count % 8 != 0, let last = want.bitvector.last, last >> UInt8(addresses.count % 8) != 0 {
            return [.fault(.malformedRequest("want bits set past the offer's \(addresses.count) addresses"))]
        }
        put(want.ruid, nil)
        let wanted = addresses.indices.filter { want.isWanted($0) }.map { addresses[$0] }
        counters.wanted += wanted.count
        return wanted.isEmpty ? [] : [.deliver(ruid: want.ruid, addresses: wanted)]
    }

    public mutating func tick(now: UInt64) -> [Action] {
        var actions: [Action] = []
        for (ruid, request) in requests.sorted(by: { $0.key < $1.key }) {
            switch request {
            case .waiting(_, let from, _, let deadline) where now >= deadline:
                // Nothing new: an empty offer that seals nothing (lastIndex below from).
                actions += offer(ruid: ruid, from: from, lastIndex: from - 1, addresses: [], now: now)
            case .gathering(let bin, let from, let limit, let until) where now >= until:
                put(ruid, .querying(bin: bin, from: from, to: nil, limit: limit))
                actions.append(.queryRange(ruid: ruid, bin: bin, from: from, to: .max, limit: limit))
            case .offered(_, let expires) where now >= expires:
                put(ruid, nil)
            default:
                break
            }
        }
        return actions
    }

    public var nextDeadline: UInt64? { deadlines.values.min() }

    public func checkInvariants() {
        precondition(requests.count <= limits.requestsInFlightMax, "more requests than allowed: \(requests.count)")
        var waiting: UInt32 = 0
        for (ruid, request) in requests {
            if case .offered(let addresses, _) = request {
                precondition(!addresses.isEmpty && addresses.count <= limits.offerBatchMax, "offer \(ruid) of \(addresses.count)")
            }
            if case .waiting(let bin, _, _, _) = request { waiting |= 1 << UInt32(bin) }
            precondition(deadlines[ruid] == request.deadline, "request \(ruid)'s deadline \(String(describing: deadlines[ruid])), not \(String(describing: request.deadline))")
        }
        precondition(deadlines.count == requests.values.lazy.filter { $0.deadline != nil }.count, "deadlines of requests no longer held")
        precondition(waiting == waitingBins, "waiting bins \(waitingBins) but requests wait on \(waiting)")
    }
}
