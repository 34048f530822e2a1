import Crypto
import Logging
import ShoalCore
import ShoalStore

/// Push on this node: a thin shell around the `Push` machine. Uploads (`Node.push`) and peers'
/// sessions hand it chunks, receipts, refusals, connects and disconnects; it feeds them to the
/// machine with the clock's time and the node's depth, and carries out what the machine
/// decides. What the machine cannot do, it does: it signs the receipts of chunks this node
/// stores (with the identity key, after the store committed them: a receipt is a promise), and
/// checks a receipt's signature and storer before the machine hears of it.
actor PushService: DeadlineTicking {
    private let context: NodeContext
    private let identity: NodeIdentity
    private var machine: Push
    private var callers: [UInt64: CheckedContinuation<Result<PushReceipt, PushFailure>, Never>] = [:]
    private var nextCallerID: UInt64 = 0
    var ticking = false
    private let logger: Logger
    static let tickStepMs: UInt64 = 50

    init(context: NodeContext, identity: NodeIdentity, limits: PushLimits) {
        self.context = context
        self.identity = identity
        machine = Push(base: identity.overlay, limits: limits)
        logger = context.logger
    }

    private var now: UInt64 { context.clock.nowMs() }
    private var depth: Int { context.depth.load(ordering: .relaxed) }

    // MARK: Uploads on this node

    /// Pushes a chunk the store has committed toward its neighbourhood; ends with the checked
    /// receipt (this node's own when it is where the chunk belongs), or why none came. The
    /// machine's attempt limit and timeouts bound the wait; a cancelled caller stops waiting
    /// and the push goes on.
    func push(_ chunk: Chunk) async -> Result<PushReceipt, PushFailure> {
        nextCallerID += 1
        let id = nextCallerID
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<PushReceipt, PushFailure>, Never>) in
                callers[id] = continuation
                perform(machine.push(chunk, id: id, depth: depth, now: now))
            }
        } onCancel: {
            Task { await self.abandon(id) }
        }
    }

    private func abandon(_ id: UInt64) {
        guard let continuation = callers.removeValue(forKey: id) else { return }
        machine.abandon(id: id)
        continuation.resume(returning: .failure(.notReceipted(tried: 0)))
    }

    // MARK: Peers

    func peerConnected(_ peer: OverlayAddress) {
        machine.peerConnected(peer)
        publish()
    }

    func peerDisconnected(_ peer: OverlayAddress) {
        perform(machine.peerDisconnected(peer, depth: depth, now: now))
    }

    /// A peer pushed a chunk; the session re-hashed it.
    func taken(_ chunk: Chunk, from peer: OverlayAddress, ruid: RequestID, hops: UInt8) {
        perform(machine.taken(chunk, from: peer, ruid: ruid, hops: hops, depth: depth, now: now))
    }

    /// A peer answered one of our pushes.
    func answered(_ receipt: Receipt, from peer: OverlayAddress) {
        switch receipt.outcome {
        case .stored(let stored):
            let (storer, valid) = stored.check(networkID: identity.networkID)
            perform(machine.receipted(stored, storer: storer, signatureValid: valid, from: peer, ruid: receipt.ruid, depth: depth, now: now))
        case .refused(let refusal):
            logger.debug("push refused", metadata: ["peer.overlay": "\(peer.hex.prefix(16))", "code": "\(refusal.code)",
                                                     "message": "\(refusal.message)"])
            perform(machine.refused(by: peer, ruid: receipt.ruid, depth: depth, now: now))
        }
    }

    /// This node's receipt for a chunk it stores.
    private func receipt(for address: ChunkAddress) -> Receipt.Stored {
        Receipt.Stored(address: address, publicKey: identity.publicKey,
                       signature: identity.sign(Receipt.signedBytes(networkID: identity.networkID, address: address)))
    }

    // MARK: Carrying out the machine's actions

    private func perform(_ actions: [Push.Action]) {
        var pending = actions[...]
        while let action = pending.popFirst() {
            switch action {
            case .send(let peer, let ruid, let chunk, let hops):
                guard let session = session(peer) else {
                    pending += machine.refused(by: peer, ruid: ruid, depth: depth, now: now)
                    continue
                }
                session.send([.pushChunk(PushChunk(ruid: ruid, hopsLeft: hops, chunk: DeliveredChunk(span: chunk.span, payload: chunk.payload)))])
            case .store(let chunk, let origin):
                switch origin {
                case .local(let id):
                    // An upload: its chunk committed before it was pushed.
                    resolve(id, .success(PushReceipt(receipt: receipt(for: chunk.address), storer: identity.overlay)))
                case .peer(let peer, let ruid):
                    storeForPeer(chunk, peer: peer, ruid: ruid)
                }
            case .pass(let peer, let ruid, let stored):
                session(peer)?.send([.receipt(Receipt(ruid: ruid, outcome: .stored(stored)))])
            case .refuse(let peer, let ruid, let code, let message):
                session(peer)?.send([.receipt(Receipt(ruid: ruid, outcome: .refused(Refusal(code: code, message: message))))])
            case .resolve(let id, let result):
                resolve(id, result)
            case .fault(let peer, let fault):
                session(peer)?.reportFault(fault)
            }
        }
        machine.checkInvariants()
        publish()
        startTicking()
    }

    private func resolve(_ id: UInt64, _ result: Result<PushReceipt, PushFailure>) {
        callers.removeValue(forKey: id)?.resume(returning: result)
    }

    /// Stores a peer's pushed chunk; the receipt goes out only after the commit.
    private func storeForPeer(_ chunk: Chunk, peer: OverlayAddress, ruid: RequestID) {
        let (context, signed) = (self.context, receipt(for: chunk.address))
        context.writer.submit(StoreBatch(chunks: [chunk])) { result in
            let outcome: Receipt.Outcome
            switch result {
            case .success(let committed):
                context.committed(committed)
                outcome = .stored(signed)
            case .failure(let error):
                // Per chunk pushed while the disk is full: throttled.
                context.events.log("push.storeFailed", level: .warning, "could not store a pushed chunk: \(error)")
                outcome = .refused(Refusal(code: .notStored, message: "the store write failed"))
            }
            context.sessions.withLock { $0[peer] }?.send([.receipt(Receipt(ruid: ruid, outcome: outcome))])
        }
    }

    private func publish() {
        let status = PushStatus(peers: machine.peers.count, openPushes: machine.openPushes, counters: machine.counters)
        context.push.withLock { $0 = status }
    }

    private func session(_ peer: OverlayAddress) -> PeerSession? {
        context.sessions.withLock { $0[peer] }
    }

    // MARK: Timers (`DeadlineTicking`)

    var clock: any ShoalClock { context.clock }
    var machineDeadline: UInt64? { machine.nextDeadline }

    func tick(now: UInt64) {
        let actions = machine.tick(depth: depth, now: now)
        if !actions.isEmpty { perform(actions) }
    }
}

/// Push on a node, for status pages and tests.
public struct PushStatus: Sendable, Equatable, Codable {
    public var peers: Int
    /// Pushes waiting for a receipt now.
    public var openPushes: Int
    /// Since the node started: pushes begun here and taken from peers, stored here, receipts
    /// received and passed on, peers tried, timeouts, refusals, pushes failed, bad and late
    /// receipts, pushes refused as overloaded.
    public var counters: Push.Counters

    public init(peers: Int = 0, openPushes: Int = 0, counters: Push.Counters = .init()) {
        (self.peers, self.openPushes, self.counters) = (peers, openPushes, counters)
    }
}

extension Receipt.Stored {
    /// The overlay this receipt's key makes on `networkID`, and whether its signature over
    /// `Receipt.signedBytes` holds (Docs/Protocol.md §12): what anyone holding a receipt can check.
    public func check(networkID: UInt64) -> (storer: OverlayAddress, valid: Bool) {
        let storer = Overlay.address(networkID: networkID, publicKey: publicKey)
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: publicKey) else { return (storer, false) }
        return (storer, key.isValidSignature(signature, for: Receipt.signedBytes(networkID: networkID, address: address)))
    }
}
