import Locking
import ArgumentParser
import Hummingbird
import Logging
import ServiceLifecycle
import ShoalAPI
import ShoalNode

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The running daemon: one `ServiceGroup` of the node and its HTTP API.
///
/// Order: `[node, api]`. The group starts both; on SIGTERM or SIGINT it shuts services down in
/// reverse order, so the API first stops accepting connections and finishes the requests it
/// has (an upload in flight still reaches the store writer), and only then does the node say
/// `Goodbye` to its peers, commit what is queued and stop its writer. The store is closed last.
struct Daemon {
    /// Bounds on the lifecycle.
    static let readyWaitMax: Duration = .seconds(60)
    static let gracefulShutdownMax: Duration = .seconds(30)
    static let cancellationMax: Duration = .seconds(5)

    let settings: DaemonSettings
    let logger: Logger

    func run() async throws {
        if !settings.api.isLoopback {
            logger.warning("the HTTP API listens on \(settings.api) and has no authentication: anyone who can reach it can upload")
        }
        let node: Node
        do {
            try makeDirectories(settings.dataDirectory)
            // The node locks the data directory (DATA/shoal.lock) for as long as it is open.
            node = try Node(configuration: settings.nodeConfiguration(), logger: logger)
        } catch {
            Terminal.err("shoal: cannot open data directory \(settings.dataDirectory): \(error)")
            throw ExitCode.failure
        }

        let apiPort = PortBox()
        var apiLogger = logger
        apiLogger[metadataKey: "node.overlay"] = "\(node.overlay.hex.prefix(16))"
        let api = makeAPIApplication(node: node, host: settings.api.host, port: settings.api.port, logger: apiLogger) { port in
            apiPort.set(port)
        }

        var configuration = ServiceGroupConfiguration(
            services: [
                .init(service: NamedService(name: "peer listener on \(settings.listen)", base: node),
                      successTerminationBehavior: .gracefullyShutdownGroup,
                      failureTerminationBehavior: .gracefullyShutdownGroup),
                .init(service: NamedService(name: "HTTP API on \(settings.api)", base: api),
                      successTerminationBehavior: .gracefullyShutdownGroup,
                      failureTerminationBehavior: .gracefullyShutdownGroup),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
        configuration.maximumGracefulShutdownDuration = Daemon.gracefulShutdownMax
        configuration.maximumCancellationDuration = Daemon.cancellationMax
        let group = ServiceGroup(configuration: configuration)

        let settings = settings
        let logger = logger
        let announcer = Task {
            await Daemon.announceWhenReady(node: node, apiPort: apiPort, settings: settings, logger: logger)
        }
        defer { announcer.cancel() }
        do {
            try await group.run()
        } catch {
            announcer.cancel()
            node.close()
            Terminal.err("shoal: \(error)")
            throw ExitCode.failure
        }
        node.close()
        logger.info("stopped")
    }

    /// Prints the ready line once both listeners are bound, with the ports actually bound (port
    /// 0 asks for any free one): the line a supervisor or a test waits for.
    static func announceWhenReady(node: Node, apiPort: PortBox, settings: DaemonSettings, logger: Logger) async {
        let deadline = ContinuousClock.now + readyWaitMax
        while !Task.isCancelled && ContinuousClock.now < deadline {
            if let peerPort = node.listeningPort, let port = apiPort.value {
                let listen = HostPort(host: settings.listen.host, port: peerPort)
                let api = HostPort(host: settings.api.host, port: port)
                logger.info("ready", metadata: ["listen.address": "\(listen)", "api.address": "\(api)"])
                Terminal.out("shoal: listening on \(listen), API on \(api), overlay \(node.overlay.hex)")
                return
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
        if !Task.isCancelled {
            logger.error("not ready after \(readyWaitMax): a listener did not come up")
        }
    }
}

/// A service whose errors say which service failed ("HTTP API on 127.0.0.1:1633: …").
struct NamedService: Service, CustomStringConvertible {
    let name: String
    let base: any Service

    func run() async throws {
        do {
            try await base.run()
        } catch {
            throw DaemonError("\(name): \(error)")
        }
    }

    var description: String { name }
}

/// The API's bound port, set once the server runs.
final class PortBox: Sendable {
    private let port = Locked<Int?>(nil)

    func set(_ value: Int) { port.withLock { $0 = value } }
    var value: Int? { port.withLock { $0 } }
}

/// Creates `path` and the directories above it that are missing (`mkdir -p`). The data
/// directory itself is private to its user (0700: it holds the identity key).
func makeDirectories(_ path: String) throws(DaemonError) {
    let components = path.split(separator: "/", omittingEmptySubsequences: false)
    var prefix = ""
    for (i, component) in components.enumerated() {
        prefix += i == 0 ? String(component) : "/" + component
        if prefix.isEmpty || component.isEmpty || component == "." || component == ".." { continue }
        let mode: mode_t = i == components.count - 1 ? 0o700 : 0o755
        if mkdir(prefix, mode) != 0 && errno != EEXIST {
            throw DaemonError("cannot create \(prefix): \(String(cString: strerror(errno)))")
        }
    }
}
