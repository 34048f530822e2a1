import Hummingbird
import Locking
import ShoalCore
import ShoalNode

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The body of `POST /peers`.
public struct ConnectRequest: Codable, Sendable, Equatable {
    /// "host:port" of the peer's listener; an IPv6 host in brackets (`ShoalCore.HostPort.parse`).
    public var address: String

    public init(address: String) {
        self.address = address
    }
}

/// What `POST /peers` answers: the peer its handshake proved.
public struct ConnectedPeer: Codable, Sendable, Equatable {
    /// 64 hex digits.
    public var overlay: String
    /// The address dialled, as given.
    public var address: String
    /// The peer's proximity order to this node (its bin, 0…31).
    public var po: Int
    /// The addresses the peer's hello says it listens on (unverified).
    public var listenAddresses: [String]
    public var agent: String
    /// True when a session with this peer was up before the dial (status 200, not 201).
    public var alreadyConnected: Bool

    public init(overlay: String, address: String, po: Int, listenAddresses: [String], agent: String, alreadyConnected: Bool) {
        (self.overlay, self.address, self.po) = (overlay, address, po)
        (self.listenAddresses, self.agent, self.alreadyConnected) = (listenAddresses, agent, alreadyConnected)
    }
}

/// Bounds of the topology and peer routes.
public struct PeerRouteLimits: Sendable {
    /// A `POST /peers` body larger than this is refused (413) unread.
    public var connectBodyBytesMax = 4096
    /// `POST /peers` answers 504 when the dial and handshake take longer. The node's own
    /// bounds (`connectTimeout` and `handshakeTimeout`, 5 s each) end the dial before this.
    public var dialTimeout: Duration = .seconds(15)
    /// After the handshake, how long `POST /peers` waits for the session to show in the table.
    /// A session that never starts (the peer is banned here, or the node is stopping) is a 502.
    public var sessionWait: Duration = .seconds(5)

    public init() {}
}

/// `GET /topology`, `POST /peers`, `DELETE /peers/{overlay}`, added by `makeRouter`
/// (`GET /peers` is with the other node routes there).
func addPeerRoutes(to router: Router<APIRequestContext>, node: some NodeAPIBacking, limits: PeerRouteLimits) {
    router.get("/topology") { _, _ in
        try JSONBody.response(await node.topology(), status: .ok)
    }
    router.post("/peers") { request, _ in
        let address = try await connectAddress(request, limits: limits)
        let peer = try await connect(address, node: node, limits: limits)
        return try JSONBody.response(peer, status: peer.alreadyConnected ? .ok : .created)
    }
    router.delete("/peers/:overlay") { _, context in
        let text = context.parameters.get("overlay") ?? ""
        guard let overlay = OverlayAddress(hex: text) else {
            throw APIError(.badRequest, .invalidAddress, "a peer's overlay is 64 hex digits, got \(text.utf8.count) characters")
        }
        guard await node.disconnect(overlay) else {
            throw APIError(.notFound, .unknownPeer, "peer \(overlay.hex.prefix(16))… is not connected")
        }
        return Response(status: .noContent)
    }
}

/// The address of a `POST /peers` body: `{"address": "host:port"}`.
private func connectAddress(_ request: Request, limits: PeerRouteLimits) async throws -> ShoalCore.HostPort {
    let decoded = try await JSONBody.decode(
        ConnectRequest.self, from: request, bytesMax: limits.connectBodyBytesMax,
        tooLarge: "a POST /peers body is at most \(limits.connectBodyBytesMax) bytes: {\"address\": \"host:port\"}",
        shape: "{\"address\": \"host:port\"}")
    guard let address = ShoalCore.HostPort.parse(decoded.address) else {
        throw APIError(.badRequest, .invalidAddress,
                       "'\(decoded.address.prefix(300))' is not host:port (a name, an IPv4 address or [IPv6], and a port 1…65535)")
    }
    return address
}

private func connect(_ address: ShoalCore.HostPort, node: some NodeAPIBacking, limits: PeerRouteLimits) async throws -> ConnectedPeer {
    guard node.isReady else {
        throw APIError(.serviceUnavailable, .unavailable, "the node is not listening yet, or is stopping: it dials no peer")
    }
    let before = Set(await node.topology().peers.map(\.overlay))
    let text = address.description
    let peer: PeerInfo
    do {
        guard let proven = try await firstOrTimeout(limits.dialTimeout, { try await node.connect(text) }) else {
            throw APIError(.gatewayTimeout, .dialFailed, "no connection and handshake with \(text) within \(limits.dialTimeout)")
        }
        peer = proven
    } catch let error as APIError {
        throw error
    } catch {
        throw APIError(.badGateway, .dialFailed, "dialling \(text) failed: \(error)")
    }
    let overlay = peer.overlay.hex
    let alreadyConnected = before.contains(overlay)
    if !alreadyConnected {
        let deadline = ContinuousClock.now + limits.sessionWait
        while await !node.topology().peers.contains(where: { $0.overlay == overlay }) {
            guard ContinuousClock.now < deadline else {
                throw APIError(.badGateway, .dialFailed,
                               "the peer at \(text) (\(overlay.prefix(16))…) passed the handshake but no session started within "
                               + "\(limits.sessionWait): it may be banned here, or have refused this node")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
    return ConnectedPeer(overlay: overlay, address: text, po: Proximity.bin(of: peer.overlay, relativeTo: node.overlay),
                         listenAddresses: peer.listenAddresses, agent: peer.agent, alreadyConnected: alreadyConnected)
}

/// `work`'s result, or nil when `timeout` passes first. Past the timeout `work` is not waited
/// for: it runs on to its own end (a dial is bounded by the node's connect and handshake
/// timeouts), so an answer is never held up by an operation that ignores cancellation.
func firstOrTimeout<T: Sendable>(_ timeout: Duration, _ work: @escaping @Sendable () async throws -> T) async throws -> T? {
    let pending = Locked<CheckedContinuation<T?, any Error>?>(nil)
    let finish: @Sendable (Result<T?, any Error>) -> Void = { result in
        let continuation = pending.withLock { held in
            defer { held = nil }
            return held
        }
        continuation?.resume(with: result)
    }
    return try await withCheckedThrowingContinuation { continuation in
        pending.withLock { $0 = continuation }
        let timer = Task {
            // Cancelled: `work` finished first.
            guard (try? await Task.sleep(for: timeout)) != nil else { return }
            finish(.success(nil))
        }
        Task {
            let result = await Result(catching: { try await work() })
            finish(result.map { $0 })
            timer.cancel()
        }
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do {
            self = .success(try await body())
        } catch {
            self = .failure(error)
        }
    }
}
