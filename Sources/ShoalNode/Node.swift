import Locking
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import ShoalCore
import ShoalStore
import ShoalWire

#if canImport(Glibc)
import Glibc
#endif

/// A Shoal node: its store, its identity, a listener for peers, dialling of configured peers,
/// and one session per connected peer that pull-syncs their bins.
///
/// Embeddable: create it, run `run()` (directly or in a host's `ServiceGroup`), and end it
/// with graceful shutdown or task cancellation; `run()` returns after peers got `Goodbye`,
/// queued writes committed and the store closed.
public final class Node: Service, Sendable {
    public let configuration: NodeConfiguration
    public let identity: NodeIdentity
    public let store: Store
    private let writer: StoreWriter
    private let context: NodeContext
    /// Topology, dialling and subscriptions.
    private let supervisor: Supervisor
    private let retrieval: RetrievalService
    private let push: PushService
    private let downloads: DownloadService
    /// The file root of each download started for a file (Node+FileDownloads.swift).
    let fileDownloadRoots = FileDownloadRoots()
    private let logger: Logger
    private let state = Locked(RunState())
    /// Held from `init` until `close()` (or until the node is released).
    private let lock: Locked<DataDirectoryLock?>

    private struct RunState {
        var listeningPort: Int?
        var listener: Listener?
        var transport: Transport?
        var shuttingDown = false
        var stopped = false
    }

    /// Opens the data directory: loads or creates the identity, opens or creates the store.
    public init(configuration: NodeConfiguration, logger: Logger = Logger(label: "shoal")) throws {
        self.configuration = configuration
        if mkdir(configuration.dataDirectory, 0o700) != 0 && errno != EEXIST {
            throw StoreError(.system, "cannot create data directory \(configuration.dataDirectory): \(String(cString: strerror(errno)))")
        }
        let lock = try DataDirectoryLock(directory: configuration.dataDirectory)
        self.lock = Locked(lock)
        identity = try NodeIdentity.loadOrCreate(directory: configuration.dataDirectory, networkID: configuration.networkID)
        store = try Store(directory: configuration.storeDirectory,
                          options: Store.Options(overlay: identity.overlay, capacityChunks: configuration.capacityChunks))
        writer = StoreWriter(store: store)
        var logger = logger
        logger[metadataKey: "node.overlay"] = "\(identity.overlay.hex.prefix(16))"
        self.logger = logger
        context = NodeContext(overlay: identity.overlay, store: store, writer: writer, inFlight: InFlightChunks(), logger: logger,
                              limits: configuration.session, clock: configuration.clock)
        var supervisorLimits = Supervisor.Limits()
        supervisorLimits.topology = configuration.topology
        supervisorLimits.pullSync = configuration.pullSync
        supervisor = Supervisor(context: context, limits: supervisorLimits, seed: UInt64.random(in: .min ... .max))
        retrieval = RetrievalService(context: context, limits: configuration.retrieval)
        push = PushService(context: context, identity: identity, limits: configuration.push)
        downloads = DownloadService(context: context, supervisor: supervisor, limits: configuration.downloads,
                                    seed: UInt64.random(in: .min ... .max))
        let downloads = self.downloads
        // Commits come faster than the downloader may take them (pull sync makes hundreds a
        // second): their addresses gather here, and one task at a time hands over what gathered,
        // instead of a task per commit queueing on the actor without bound.
        let gathered = Locked<(addresses: [ChunkAddress], draining: Bool)>(([], false))
        context.storedObserver.withLock {
            $0 = StoredObserver { stored in
                guard downloads.waitingForChunks.withLock({ $0 }) else { return }
                let startDraining = gathered.withLock { g -> Bool in
                    g.addresses += stored.lazy.map(\.address)
                    defer { g.draining = true }
                    return !g.draining
                }
                guard startDraining else { return }
                Task {
                    while true {
                        let next = gathered.withLock { g -> [ChunkAddress] in
                            defer { g.addresses = [] }
                            if g.addresses.isEmpty { g.draining = false }
                            return g.addresses
                        }
                        if next.isEmpty { return }
                        await downloads.stored(next)
                    }
                }
            }
        }
    }

    /// The addresses our hello names: `advertise` if set; otherwise where we listen, unless
    /// that is a wildcard address (no peer could dial it).
    private func advertised(port: Int) -> [String] {
        if !configuration.advertise.isEmpty { return configuration.advertise }
        let wildcard = ["0.0.0.0", "::", "[::]", ""].contains(configuration.listenHost)
        return wildcard || port == 0 ? [] : ["\(configuration.listenHost):\(port)"]
    }

    public var overlay: OverlayAddress { identity.overlay }

    /// The port peers connect to, once `run()` is listening.
    public var listeningPort: Int? { state.withLock { $0.listeningPort } }

    // MARK: Running

    public func run() async throws {
        var transportConfiguration = TransportConfiguration(identity: identity, epoch: store.epoch,
                                                            advertisedAddresses: advertised(port: configuration.listenPort))
        transportConfiguration.handshakeTimeout = configuration.handshakeTimeout
        transportConfiguration.inboundLimits = configuration.inboundLimits
        let transport = Transport(configuration: transportConfiguration, group: MultiThreadedEventLoopGroup.singleton, logger: logger)
        let listener = try await transport.listen(host: configuration.listenHost, port: configuration.listenPort) { connection in
            await self.serve(connection)
        }
        state.withLock {
            $0.listeningPort = listener.localPort
            $0.listener = listener
            $0.transport = transport
        }
        // Downloads a restart interrupted go on (nothing stored is fetched again).
        await downloads.restoreOnce()
        if configuration.listenPort == 0 {
            // Bound to an ephemeral port: peers learn the real one from our hello.
            try transport.advertise(advertised(port: listener.localPort))
        }
        if transport.advertisedAddresses.isEmpty {
            logger.warning("listening on \(configuration.listenHost) without an address to advertise: peers cannot tell others where to reach this node (set --advertise host:port)")
        }
        logger.info("listening", metadata: ["listen.address": "\(configuration.listenHost):\(listener.localPort)"])
        if !configuration.pullSync {
            logger.info("light node: pull sync off, chunks come by retrieval and downloads only")
        }

        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                for peer in configuration.peers {
                    group.addTask { await self.keepDialling(peer, transport: transport) }
                }
                group.addTask {
                    await self.supervisor.run(dial: { address in
                        guard let (host, port) = Node.split(address) else {
                            throw TransportError(.invalidConfiguration, "bad address \(address): want host:port")
                        }
                        return try await transport.dial(host: host, port: port)
                    }, serve: { connection in await self.serve(connection) })
                }
                group.addTask { await self.waitForShutdown() }
                group.addTask { await self.context.events.flushPeriodically() }
                group.addTask { await self.forgetPeerRecordsPeriodically() }
                await group.next()
                self.beginShutdown()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.beginShutdown()
        }

        // Drain: no new connections, goodbye to every peer, commit what is queued, close.
        await listener.close()
        let sessions = context.sessions.withLock { Array($0.values) }
        for session in sessions { await session.goodbye(.shutdown, "node shutting down") }
        let deadline = ContinuousClock.now + configuration.drainTimeout
        while !context.sessions.withLock({ $0.isEmpty }) && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        await listener.shutdown()
        writer.stop()
        context.events.flush(all: true)
        state.withLock { $0.stopped = true }
        logger.info("stopped")
    }

    /// Closes the store and releases the data directory; call after `run()` returned (or if
    /// it never ran).
    public func close() {
        writer.stop()
        store.close()
        lock.withLock { $0 = nil }
    }

    private func beginShutdown() {
        state.withLock { $0.shuttingDown = true }
    }

    private var isShuttingDown: Bool { state.withLock { $0.shuttingDown } }

    private func waitForShutdown() async {
        while !isShuttingDown && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    /// When `overlay` is banned (its `peers` record says so), until when, in ms since 1970.
    private func bannedUntil(_ overlay: OverlayAddress) -> UInt64? {
        guard let record = try? store.read({ try $0.peer(overlay) }), record.banUntilMs > Store.wallClockMs() else { return nil }
        return record.banUntilMs
    }

    private func keepDialling(_ address: String, transport: Transport) async {
        guard let (host, port) = Node.split(address) else {
            logger.error("bad peer address \(address): want host:port")
            return
        }
        var delay = configuration.redialDelayMin
        var overlay: OverlayAddress?
        while !isShuttingDown && !Task.isCancelled {
            let started = ContinuousClock.now
            // Connected to that peer already (the topology dialled it, or it dialled us): wait.
            if let overlay, context.sessions.withLock({ $0[overlay] != nil }) {
                try? await Task.sleep(for: configuration.redialDelayMax)
                continue
            }
            do {
                let connection = try await transport.dial(host: host, port: port)
                overlay = connection.peer.overlay
                await serve(connection)
            } catch {
                logger.info("dial failed", metadata: ["peer.address": "\(address)", "error": "\(error)"])
            }
            if ContinuousClock.now - started > .seconds(10) { delay = configuration.redialDelayMin }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, configuration.redialDelayMax)
        }
    }

    /// "host:port" as a hello may carry it (`HostPort.parse`: port 1…65535, IPv6 in brackets).
    static func split(_ address: String) -> (String, Int)? {
        guard let parsed = HostPort.parse(address) else { return nil }
        var host = parsed.host
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, Int(parsed.port))
    }

    /// Runs one session over an established connection until it ends.
    private func serve(_ connection: EstablishedConnection) async {
        let peer = connection.peer
        if isShuttingDown {
            try? await connection.channel.executeThenClose { _, outbound in
                try await outbound.write(.goodbye(Goodbye(reason: .shutdown, message: "node shutting down")))
            }
            return
        }
        let channel = connection.channel.channel
        do {
            try await connection.channel.executeThenClose { inbound, outbound in
                if let until = bannedUntil(peer.overlay) {
                    let seconds = (until - Store.wallClockMs()) / 1000 + 1
                    context.events.log("peer.refusedBanned", level: .info, "refusing a banned peer", metadata: ["peer.overlay": "\(peer.overlay.hex.prefix(16))",
                                                                    "peer.address": "\(peer.remoteAddress)", "ban.seconds": "\(seconds)"])
                    try? await outbound.write(.goodbye(Goodbye(reason: .banned, message: "banned for \(seconds) s")))
                    offence(peer)
                    return
                }
                if let goodbye = await supervisor.refusal(of: peer) {
                    try? await outbound.write(.goodbye(goodbye))
                    return
                }
                let session = PeerSession(peer: peer, context: context, supervisor: supervisor, retrieval: retrieval, push: push,
                                          downloads: downloads, outbound: outbound,
                                          close: { channel.close(promise: nil) })
                // One session per peer: of two connections between the same nodes, the one the
                // node with the smaller overlay dialled survives.
                let (admitted, displaced) = context.sessions.withLock { sessions -> (Bool, PeerSession?) in
                    guard let existing = sessions[peer.overlay] else {
                        sessions[peer.overlay] = session
                        return (true, nil)
                    }
                    let keepNew = peer.outbound == (identity.overlay < peer.overlay)
                    if keepNew && existing.peer.outbound != peer.outbound {
                        sessions[peer.overlay] = session
                        return (true, existing)
                    }
                    return (false, nil)
                }
                guard admitted else {
                    try? await outbound.write(.goodbye(Goodbye(reason: .tooManyPeers, message: "already connected")))
                    return
                }
                await session.persistPeerRecord()
                if let displaced { await displaced.goodbye(.tooManyPeers, "replaced by another connection") }
                context.events.log("peer.connected", level: .info, "peer connected", metadata: ["peer.overlay": "\(peer.overlay.hex.prefix(16))",
                                                         "peer.address": "\(peer.remoteAddress)", "peer.outbound": "\(peer.outbound)"])
                await supervisor.connected(session)
                await retrieval.peerConnected(peer.overlay)
                await push.peerConnected(peer.overlay)
                await downloads.peerConnected(peer.overlay)
                await session.run(inbound: inbound)
                let dropped = await session.droppedForFault
                if dropped { offence(peer) }
                await supervisor.disconnected(session, bannedUntilMs: dropped ? bannedUntil(peer.overlay) ?? 0 : nil)
                let current = context.sessions.withLock { sessions -> Bool in
                    guard sessions[peer.overlay] === session else { return false }
                    sessions[peer.overlay] = nil
                    return true
                }
                // A session that was replaced leaves the peer connected through its successor.
                if current {
                    await retrieval.peerDisconnected(peer.overlay)
                    await push.peerDisconnected(peer.overlay)
                    await downloads.peerDisconnected(peer.overlay)
                }
                context.events.log("peer.disconnected", level: .info, "peer disconnected", metadata: ["peer.overlay": "\(peer.overlay.hex.prefix(16))"])
            }
        } catch {
            logger.debug("connection closed with error", metadata: ["error": "\(error)"])
        }
    }

    /// Counts an inbound peer's protocol fault against its IP address: an address that keeps
    /// offending (new identities or not) is refused as it connects, for a while.
    private func offence(_ peer: PeerInfo) {
        guard !peer.outbound, let listener = state.withLock({ $0.listener }) else { return }
        listener.offence(remoteAddress: peer.remoteAddress)
    }

    // MARK: Peer records

    /// Which records to delete so that at most `max` remain: first those that never earned
    /// anything (score ≤ 0: strangers, throwaway identities and their bans), then the rest,
    /// each group the least recently seen first. A ban of an identity made to be thrown away
    /// protects nothing; the penalty box guards the address it came from.
    public static func peerRecordsToForget(_ records: [(overlay: OverlayAddress, record: PeerRecord)], keeping max: Int) -> [OverlayAddress] {
        guard records.count > max else { return [] }
        let ordered = records.sorted { a, b in
            let (ka, kb) = (a.record.score > 0 ? 1 : 0, b.record.score > 0 ? 1 : 0)
            return ka != kb ? ka < kb : a.record.lastSeenMs < b.record.lastSeenMs
        }
        return ordered.prefix(records.count - max).map(\.overlay)
    }

    /// Deletes the least useful peer records beyond `peerRecordsMax`; returns how many.
    @discardableResult
    func forgetPeerRecords() async throws -> Int {
        let records = try store.read { try $0.peers() }
        let connected = context.sessions.withLock { Set($0.keys) }
        let forget = Node.peerRecordsToForget(records.filter { !connected.contains($0.overlay) },
                                              keeping: max(0, configuration.peerRecordsMax - connected.count))
        guard !forget.isEmpty else { return 0 }
        var batch = StoreBatch()
        batch.peerRemovals = forget
        _ = try await writer.apply(batch)
        context.events.log("peer.recordsForgotten", level: .notice,
                           "forgot \(forget.count) peer records beyond \(configuration.peerRecordsMax)")
        return forget.count
    }

    private func forgetPeerRecordsPeriodically() async {
        while !isShuttingDown && !Task.isCancelled {
            do {
                try await forgetPeerRecords()
            } catch {
                logger.warning("cannot forget peer records", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: configuration.peerRecordsCheckInterval)
        }
    }

    // MARK: Using the node

    /// Stores a chunk durably; returns after the commit. Peers syncing its bin are told.
    @discardableResult
    public func upload(_ chunk: Chunk) async throws -> BatchResult {
        let result = try await writer.apply(StoreBatch(chunks: [chunk]))
        context.committed(result)
        return result
    }

    /// Applies a batch (chunks of an upload, pins) durably; returns after the commit. Peers
    /// syncing the bins that grew are told, and readers waiting for its chunks wake.
    @discardableResult
    public func apply(_ batch: StoreBatch) async throws -> BatchResult {
        let result = try await writer.apply(batch)
        context.committed(result)
        return result
    }

    /// Waits until `address` is in the local store (true), or `timeout` passes or the task is
    /// cancelled (false). Pull sync is what brings a chunk this node lacks, until retrieval
    /// lands; a file read on this node waits here.
    public func waitForChunk(_ address: ChunkAddress, timeout: Duration) async -> Bool {
        let store = self.store
        return await context.arrivals.wait(for: address, timeout: timeout) { (try? store.has(address)) == true }
    }

    /// True once the store is open and the peer listener is bound: the node can serve.
    public var isReady: Bool { listeningPort != nil && !isShuttingDown }

    /// A chunk from the local store, re-hashed against its address.
    public func chunk(_ address: ChunkAddress) throws -> Chunk? {
        try store.get(address, verify: true)
    }

    /// A chunk from the local store or, when it is not there, from the network (forwarding
    /// Kademlia, `Docs/Retrieval.md`): the connected peer closest to the address is asked, which
    /// serves it or asks one closer; a miss moves on to the next peer, up to the attempt limit.
    /// The chunk is re-hashed against its address either way. Concurrent calls for the same
    /// address share one fetch. The chunk is not stored here (the caller keeps it or not).
    public func retrieve(_ address: ChunkAddress) async throws -> Result<Chunk, RetrievalFailure> {
        if let chunk = try store.get(address, verify: true) { return .success(chunk) }
        return await retrieval.retrieve(address)
    }

    // MARK: Push

    /// Pushes a chunk this node stores toward the neighbourhood of its address
    /// (`Docs/Retrieval.md`, "Push"): handed from peer to peer closer to the address until a node
    /// where it belongs stores it and signs a receipt, which comes back checked. This node's own
    /// receipt when it is that node (it lies in the chunk's neighbourhood, or no peer is closer).
    /// The attempt limit and timeouts bound the wait.
    public func push(_ chunk: Chunk) async -> Result<PushReceipt, PushFailure> {
        await push.push(chunk)
    }

    /// Push now: pushes open and what it has done since the node started.
    public func pushStatus() -> PushStatus {
        context.push.withLock { $0 }
    }

    // MARK: Downloads

    /// Starts downloading `addresses` (at most `DownloadLimits.chunksPerDownloadMax`) from the
    /// peers that have them (`Docs/Retrieval.md`); what is stored counts as done at once. The
    /// download's record is durable when this returns; after a restart it resumes.
    public func startDownload(_ addresses: [ChunkAddress], policy: DownloadPolicy = .eagerPin,
                              hints: [OverlayAddress] = []) async throws -> DownloadReport {
        // 256 random bits: no two downloads share one (the machine refuses a live ID anyway).
        let id = DownloadID(Address32(w0: .random(in: .min ... .max), w1: .random(in: .min ... .max),
                                      w2: .random(in: .min ... .max), w3: .random(in: .min ... .max)))
        return try await downloads.start(id, addresses: addresses, policy: policy, hints: hints)
    }

    /// A download that runs, or one that ended since the node started; nil for an unknown ID.
    public func download(_ id: DownloadID) async -> DownloadReport? {
        await downloads.status(id)
    }

    /// The downloads that run, then those that ended since the node started.
    public func downloadList() async -> [DownloadReport] {
        await downloads.list()
    }

    /// Cancels a running download; false when none runs under `id`.
    public func cancelDownload(_ id: DownloadID) async -> Bool {
        await downloads.cancel(id)
    }

    /// Retrieval now: the peers it may ask, the fetches open, and what it has done since the
    /// node started.
    public func retrievalStatus() async -> RetrievalStatus {
        context.retrieval.withLock { $0 }
    }

    public func status() throws -> NodeStatus {
        let (count, bins, cursors, radius) = try store.read { r in
            (try r.chunkCount(), try r.binCounts(), try r.cursors(), try r.radius())
        }
        return NodeStatus(overlay: identity.overlay.hex, networkID: identity.networkID, epoch: store.epoch, chunks: count,
                          storageRadius: Int(radius), depth: context.depth.load(ordering: .relaxed),
                          bins: (0..<Proximity.binCount).map { NodeStatus.Bin(bin: $0, chunks: bins[$0], cursor: cursors[$0]) },
                          peers: context.sessions.withLock { $0.count },
                          listenAddress: listeningPort.map { "\(configuration.listenHost):\($0)" },
                          chunksServed: context.chunksServed.load(ordering: .relaxed),
                          chunksReceived: context.chunksReceived.load(ordering: .relaxed),
                          chunksDuplicate: context.chunksDuplicate.load(ordering: .relaxed),
                          connections: .init(inbound: state.withLock { $0.listener?.status },
                                             outbound: context.sessions.withLock { $0.values.count(where: { $0.peer.outbound }) }),
                          retrieval: context.retrieval.withLock { $0 }, push: context.push.withLock { $0 }, pullSync: configuration.pullSync)
    }

    /// The Kademlia table: depth, radius, bins, connected peers and the bins synced from each.
    public func topology() async -> TopologyStatus {
        await supervisor.snapshot()
    }

    /// Dials "host:port" now and runs a session with the peer there; returns once the
    /// handshake proved who it is. Throws when the address is bad or the dial fails.
    @discardableResult
    public func connect(_ address: String) async throws -> PeerInfo {
        guard let (host, port) = Node.split(address) else {
            throw TransportError(.invalidConfiguration, "bad address \(address): want host:port")
        }
        guard let transport = state.withLock({ $0.transport }), !isShuttingDown else {
            throw TransportError(.invalidConfiguration, "the node is not running")
        }
        let connection = try await transport.dial(host: host, port: port)
        await supervisor.adopt(connection)
        return connection.peer
    }

    /// Ends the session with a peer (goodbye); false when it is not connected.
    public func disconnect(_ overlay: OverlayAddress) async -> Bool {
        await supervisor.disconnect(overlay)
    }

    public func peers() async -> [PeerStatus] {
        let sessions = context.sessions.withLock { Array($0.values) }
        var out: [PeerStatus] = []
        for session in sessions { out.append(await session.snapshot()) }
        return out.sorted { $0.overlay < $1.overlay }
    }

    /// True when every connected peer's history streams have finished.
    public func historySynced() async -> Bool {
        let sessions = context.sessions.withLock { Array($0.values) }
        guard !sessions.isEmpty else { return false }
        for session in sessions where await !session.historySynced() { return false }
        return true
    }
}
