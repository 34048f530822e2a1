import Logging
import ShoalCore
import ShoalStore

/// Retrieval on this node: a thin shell around the `Retrieval` machine. Callers on this node
/// (`Node.retrieve`, the API) and peers' sessions hand it requests, replies, connects and
/// disconnects; it feeds them to the machine with the clock's time and carries out what the
/// machine decides: requests and answers go into the sessions' mailboxes (it never waits for
/// a peer), callers are resumed, forwarded chunks are kept through the store writer. It makes
/// no decision of its own.
///
/// The local store is looked in before the machine is asked (by `Node.retrieve` for callers,
/// by the session for a peer's request), so the machine only sees misses.
actor RetrievalService: DeadlineTicking {
    private let context: NodeContext
    private var machine: Retrieval
    private var callers: [UInt64: CheckedContinuation<Result<Chunk, RetrievalFailure>, Never>] = [:]
    private var nextCallerID: UInt64 = 0
    /// A task sleeps until the machine's next deadline while any attempt is open.
    var ticking = false
    private var logger: Logger
    /// How long the ticking task sleeps at most between looks at the deadline (a new attempt
    /// may end sooner than the one it slept for).
    static let tickStepMs: UInt64 = 50

    init(context: NodeContext, limits: RetrievalLimits) {
        self.context = context
        machine = Retrieval(base: context.overlay, limits: limits)
        logger = context.logger
    }

    private var now: UInt64 { context.clock.nowMs() }

    // MARK: Callers on this node

    /// Fetches `address` from the network (the caller found it missing locally). Ends with the
    /// chunk, re-hashed, or with why not; the machine's attempt limit and timeouts bound the
    /// wait. A cancelled caller stops waiting; the fetch goes on for anyone else waiting.
    func retrieve(_ address: ChunkAddress) async -> Result<Chunk, RetrievalFailure> {
        nextCallerID += 1
        let id = nextCallerID
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<Chunk, RetrievalFailure>, Never>) in
                callers[id] = continuation
                perform(machine.request(address, for: .local(id), now: now))
            }
        } onCancel: {
            Task { await self.cancel(id, address: address) }
        }
    }

    private func cancel(_ id: UInt64, address: ChunkAddress) {
        guard let continuation = callers.removeValue(forKey: id) else { return }
        machine.cancel(id: id, address: address)
        machine.checkInvariants()
        publish()
        continuation.resume(returning: .failure(.cancelled))
    }

    // MARK: Peers

    func peerConnected(_ peer: OverlayAddress) {
        machine.peerConnected(peer)
        publish()
    }

    func peerDisconnected(_ peer: OverlayAddress) {
        perform(machine.peerDisconnected(peer, now: now))
    }

    /// A peer asked for a chunk our store does not hold.
    func peerRequest(_ request: RetrieveRequest, from peer: OverlayAddress) {
        perform(machine.request(request.address, for: .peer(peer, ruid: request.ruid), hops: request.hopsLeft, now: now))
    }

    /// A peer answered one of our requests; a delivered chunk was re-hashed by the session
    /// (`chunk.address` is what its content hashes to).
    func peerDelivered(_ chunk: Chunk, from peer: OverlayAddress, ruid: RequestID) {
        perform(machine.delivered(chunk, from: peer, ruid: ruid, now: now))
    }

    func peerRefused(_ refusal: Refusal, from peer: OverlayAddress, ruid: RequestID) {
        logger.debug("retrieval refused", metadata: ["peer.overlay": "\(peer.hex.prefix(16))", "code": "\(refusal.code)",
                                                      "message": "\(refusal.message)"])
        perform(machine.refused(by: peer, ruid: ruid, now: now))
    }

    // MARK: Carrying out the machine's actions

    private func perform(_ actions: [Retrieval.Action]) {
        var pending = actions[...]
        while let action = pending.popFirst() {
            switch action {
            case .ask(let peer, let ruid, let address, let hops):
                guard let session = session(peer) else {
                    // Gone between its disconnect and the machine hearing of it: as good as a refusal.
                    pending += machine.refused(by: peer, ruid: ruid, now: now)
                    continue
                }
                session.send([.retrieveRequest(RetrieveRequest(ruid: ruid, address: address, hopsLeft: hops))])
            case .answer(let peer, let ruid, let chunk):
                session(peer)?.send([.retrieveDelivery(RetrieveDelivery(ruid: ruid, outcome: .chunk(DeliveredChunk(span: chunk.span, payload: chunk.payload))))])
            case .refuse(let peer, let ruid, let failure):
                session(peer)?.send([.retrieveDelivery(RetrieveDelivery(ruid: ruid, outcome: .refused(Self.refusal(failure))))])
                if case .notFound = failure {
                    logger.debug("retrieval miss", metadata: ["peer.overlay": "\(peer.hex.prefix(16))", "ruid": "\(ruid)"])
                }
            case .resolve(let id, let result):
                callers.removeValue(forKey: id)?.resume(returning: result)
            case .keep(let chunk):
                // Like any stored chunk: readers waiting for it wake, and sessions learn the bin grew.
                context.writer.submit(StoreBatch(chunks: [chunk])) { [context] result in
                    switch result {
                    case .success(let committed): context.committed(committed)
                    // Per chunk forwarded while the disk is full: throttled.
                    case .failure(let error): context.events.log("retrieval.keepFailed", level: .warning, "could not keep a forwarded chunk: \(error)")
                    }
                }
            case .fault(let peer, let fault):
                session(peer)?.reportFault(fault)
            }
        }
        machine.checkInvariants()
        publish()
        startTicking()
    }

    /// What `/status` and `Node.retrievalStatus()` show, read without asking this actor.
    private func publish() {
        let status = RetrievalStatus(peers: machine.peers.count, openFetches: machine.openFetches, counters: machine.counters)
        context.retrieval.withLock { $0 = status }
    }

    private func session(_ peer: OverlayAddress) -> PeerSession? {
        context.sessions.withLock { $0[peer] }
    }

    static func refusal(_ failure: RetrievalFailure) -> Refusal {
        let code: Refusal.Code = switch failure {
        case .notFound, .cancelled: .notFound
        case .loop: .loop
        case .hopLimit: .hopLimit
        case .overloaded: .overloaded
        }
        return Refusal(code: code, message: "\(failure)")
    }

    // MARK: Timers (`DeadlineTicking`): attempts that waited long enough end.

    var clock: any ShoalClock { context.clock }
    var machineDeadline: UInt64? { machine.nextDeadline }

    func tick(now: UInt64) {
        let actions = machine.tick(now: now)
        if !actions.isEmpty { perform(actions) }
    }
}

/// Retrieval on a node, for status pages and tests.
public struct RetrievalStatus: Sendable, Equatable, Codable {
    /// Connected peers retrieval may ask.
    public var peers: Int
    /// Addresses being fetched now.
    public var openFetches: Int
    /// Since the node started: requests (ours and peers'), those forwarded for peers, joined to
    /// an open fetch, delivered, failed; peers asked (`attempts`), timeouts, refusals received,
    /// late replies, loops and overloads refused.
    public var counters: Retrieval.Counters

    public init(peers: Int = 0, openFetches: Int = 0, counters: Retrieval.Counters = .init()) {
        (self.peers, self.openFetches, self.counters) = (peers, openFetches, counters)
    }
}
