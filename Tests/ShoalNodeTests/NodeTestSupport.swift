import Foundation
import Logging
import NIOPosix
import ShoalCore
import ShoalNode
import ShoalStore
import ShoalTestSupport
import Testing

/// A node in a temporary data directory, running on 127.0.0.1 with a free port.
final class RunningNode: @unchecked Sendable {
    let name: String
    /// The data directory, removed with the value.
    private let temporary: TemporaryDirectory
    var directory: String { temporary.path }
    private(set) var node: Node
    private var task: Task<Void, Error>?
    /// Applied to the configuration at every start, restarts included.
    private let configure: (inout NodeConfiguration) -> Void

    init(name: String, peers: [String] = [], configure: @escaping (inout NodeConfiguration) -> Void = { _ in }) throws {
        self.name = name
        self.configure = configure
        temporary = try TemporaryDirectory("node-\(name)")
        var configuration = RunningNode.configuration(temporary.path, peers: peers)
        configure(&configuration)
        node = try Node(configuration: configuration, logger: RunningNode.logger(name))
    }

    static func configuration(_ directory: String, peers: [String]) -> NodeConfiguration {
        var c = NodeConfiguration(dataDirectory: directory)
        c.listenHost = "127.0.0.1"
        c.listenPort = 0
        c.peers = peers
        c.redialDelayMin = .milliseconds(100)
        c.redialDelayMax = .seconds(1)
        c.drainTimeout = .seconds(2)
        return c
    }

    static func logger(_ name: String) -> Logger {
        var logger = Logger(label: "test.\(name)")
        logger.logLevel = ProcessInfo.processInfo.environment["SHOAL_TEST_LOG"] != nil ? .debug : .critical
        return logger
    }

    /// Starts `run()` and waits (bounded) until it listens.
    func start() async throws -> String {
        let node = self.node
        task = Task { try await node.run() }
        try await eventually("node \(name) listens", within: TestTimeouts.listening, pollMs: 10) { node.listeningPort != nil }
        return "127.0.0.1:\(node.listeningPort!)"
    }

    /// Stops `run()` (task cancellation) and closes the store.
    func stop() async {
        task?.cancel()
        _ = try? await task?.value
        task = nil
        node.close()
    }

    /// Stops and opens the same data directory again with other peers.
    func restart(peers: [String]) async throws -> String {
        await stop()
        var configuration = RunningNode.configuration(directory, peers: peers)
        configure(&configuration)
        node = try Node(configuration: configuration, logger: RunningNode.logger("restarted"))
        return try await start()
    }

    /// A peer of this node's network with a seeded identity, dialled in to `port` through its
    /// own transport: what a test plays a misbehaving peer with.
    func dialAsRogue(seed: UInt64, port: Int) async throws -> (TransportConfiguration, EstablishedConnection) {
        let configuration = TransportConfiguration(identity: seededIdentity(seed: seed, networkID: node.configuration.networkID), epoch: 1)
        let rogue = Transport(configuration: configuration, group: MultiThreadedEventLoopGroup.singleton,
                              logger: RunningNode.logger("rogue"))
        return (configuration, try await rogue.dial(host: "127.0.0.1", port: port))
    }
}
