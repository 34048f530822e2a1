import Foundation
import Logging
import ShoalCore
import ShoalNode
import ShoalStore
import Testing

/// A node in a temporary data directory, running on 127.0.0.1 with a free port.
final class RunningNode: @unchecked Sendable {
    let directory: String
    private(set) var node: Node
    private var task: Task<Void, Error>?

    init(name: String, peers: [String] = [], directory: String? = nil,
         configure: (inout NodeConfiguration) -> Void = { _ in }) throws {
        self.directory = directory ?? FileManager.default.temporaryDirectory
            .appendingPathComponent("node-\(name)-\(UUID().uuidString)").path
        var configuration = RunningNode.configuration(self.directory, peers: peers)
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
        // Generous for the same reason as the API tests: a full parallel run can hold the
        // cooperative pool's two threads for seconds.
        let deadline = ContinuousClock.now + .seconds(60)
        while node.listeningPort == nil {
            guard ContinuousClock.now < deadline else { throw TestTimeout("node did not start listening") }
            try await Task.sleep(for: .milliseconds(10))
        }
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
        node = try Node(configuration: RunningNode.configuration(directory, peers: peers), logger: RunningNode.logger("restarted"))
        return try await start()
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }
}

struct TestTimeout: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Polls `condition` every 20 ms until it holds or `seconds` pass.
func eventually(_ seconds: Double = 30, _ what: String, _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw TestTimeout("timed out after \(seconds) s waiting for: \(what)")
}

func randomChunks(_ n: Int, seed: UInt64, size: Int = 4096) -> [Chunk] {
    var rng = SplitMix64(seed: seed)
    return (0..<n).map { _ in try! Chunk(payload: rng.bytes(size)) }
}
