import Locking
import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import ShoalCore
import ShoalTestSupport
import ShoalWire
import Testing

@testable import ShoalNode

/// An identity from a seed, so a failing test names the same keys when it runs again.
func seededIdentity(seed: UInt64, networkID: UInt64 = 7) -> NodeIdentity {
    var generator = SplitMix64(seed: seed)
    let key = try! Curve25519.Signing.PrivateKey(rawRepresentation: generator.bytes(32))
    return NodeIdentity(privateKey: key, networkID: networkID)
}

/// Keeps every log record, for tests that check what the transport reported.
final class LogRecorder: Sendable {
    struct Record: Sendable, CustomStringConvertible {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]

        var description: String { "\(level) \(message) \(metadata)" }
    }

    private let records = Locked<[Record]>([])

    func logger(_ label: String) -> Logger {
        Logger(label: label) { _ in RecordingHandler(recorder: self) }
    }

    var all: [Record] { records.withLock { $0 } }

    fileprivate func append(_ record: Record) {
        records.withLock { $0.append(record) }
    }

    /// The first record that satisfies `predicate`, waiting for it up to `timeout`.
    func first(
        within timeout: Duration = .seconds(5), where predicate: (Record) -> Bool
    ) async -> Record? {
        var found: Record?
        _ = await eventually(timeout: timeout, pollMs: 10) {
            found = all.first(where: predicate)
            return found != nil
        }
        return found
    }

    /// The first record whose `handshake.failure` metadata is `code`.
    func handshakeFailure(_ code: HandshakeError.Code, within timeout: Duration = .seconds(5)) async -> Record? {
        await first(within: timeout) { $0.metadata["handshake.failure"] == code.rawValue }
    }
}

private struct RecordingHandler: LogHandler {
    let recorder: LogRecorder
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        merged.merge(event.metadata ?? [:]) { $1 }
        recorder.append(.init(
            level: event.level, message: event.message.description,
            metadata: merged.mapValues { "\($0)" }))
    }
}

struct TimedOut: Error, CustomStringConvertible {
    let limit: Duration
    var description: String { "the test did not finish within \(limit)" }
}

/// Runs `body`, failing with `TimedOut` when it takes longer than `limit`: every wait in the
/// transport tests is bounded.
func withTransportTimeout<T: Sendable>(
    _ limit: Duration = .seconds(20), _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw TimedOut(limit: limit)
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// A transport on 127.0.0.1 with its own identity and a recorded log.
struct TransportNode {
    let identity: NodeIdentity
    let transport: Transport
    let log: LogRecorder

    init(
        seed: UInt64, networkID: UInt64 = 7, epoch: UInt64 = 1,
        configure: (inout TransportConfiguration) -> Void = { _ in }
    ) {
        identity = seededIdentity(seed: seed, networkID: networkID)
        var configuration = TransportConfiguration(
            identity: identity, epoch: epoch, advertisedAddresses: ["127.0.0.1:\(1000 + seed)"])
        configuration.handshakeTimeout = .seconds(3)
        configuration.connectTimeout = .seconds(3)
        configure(&configuration)
        log = LogRecorder()
        transport = Transport(
            configuration: configuration, group: MultiThreadedEventLoopGroup.singleton,
            logger: log.logger("test.node.\(seed)"))
    }
}

/// Counts and keeps what a listener was handed.
final class AcceptedPeers: Sendable {
    private let peers = Locked<[PeerInfo]>([])
    var all: [PeerInfo] { peers.withLock { $0 } }
    func append(_ peer: PeerInfo) { peers.withLock { $0.append(peer) } }
}

/// A TCP connection to `port` that speaks raw frames over TLS (the transport's TLS layer,
/// accepting any certificate) and never sends a hello unless the test does.
func rawTLSConnection(using node: TransportNode, port: Int) async throws -> NIOAsyncChannel<Message, Message> {
    try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try node.transport.addTLSHandler(to: channel, outbound: true) { _ in true }
                try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(MessageDecoder()))
                try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(MessageEncoder()))
                return try NIOAsyncChannel<Message, Message>(wrappingChannelSynchronously: channel)
            }
        }
}

/// A plain TCP connection to `port`, bytes in and out.
func rawTCPConnection(port: Int) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
    try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
}

/// Everything that arrives until the peer closes (or the stream fails), with the time it took.
func drainUntilClosed<T: Sendable>(_ inbound: NIOAsyncChannelInboundStream<T>) async -> (items: [T], closedAfter: Duration) {
    let start = ContinuousClock.now
    var items: [T] = []
    do {
        for try await item in inbound { items.append(item) }
    } catch {}
    return (items, ContinuousClock.now - start)
}

/// A temporary directory, removed after `body`.
func withTemporaryIdentityDirectory<T>(_ body: (String) throws -> T) throws -> T {
    let directory = try TemporaryDirectory("shoal-transport")
    return try withExtendedLifetime(directory) { try body(directory.path) }
}
