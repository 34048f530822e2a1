import ArgumentParser
import Logging
import ShoalAPI
import ShoalNode

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `shoal start`: resolves the settings, then hands over to `Daemon`.
struct Start: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "start",
        abstract: "Run a node: its store, its peer listener and its HTTP API.",
        discussion: """
            Settings come from flags, then environment variables (SHOAL_DATA_DIR, SHOAL_LISTEN, \
            SHOAL_API, SHOAL_PEERS, SHOAL_ADVERTISE, SHOAL_NETWORK_ID, SHOAL_CAPACITY_CHUNKS, SHOAL_LIGHT, SHOAL_LOG_LEVEL, \
            SHOAL_INBOUND_MAX, SHOAL_INBOUND_PER_IP_MAX, SHOAL_INBOUND_PER_SUBNET_MAX, SHOAL_HANDSHAKES_MAX, \
            SHOAL_CONFIG), then the config file (key = value lines), then the defaults. \
            When ready, one line goes to stdout: "shoal: listening on HOST:PORT, API on \
            HOST:PORT, overlay HEX". SIGTERM or SIGINT stops the node gracefully (exit 0).
            """
    )

    @Option(name: .customLong("data-dir"), help: ArgumentHelp("The node's data directory (identity and store). Default ./shoal-data.", valueName: "dir"))
    var dataDirectory: String?

    @Option(help: ArgumentHelp("Where peers connect; port 0 picks a free port. Default 127.0.0.1:1634.", valueName: "host:port"))
    var listen: String?

    @Option(help: ArgumentHelp("Where the HTTP API listens; port 0 picks a free port. Default 127.0.0.1:1633.", valueName: "host:port"))
    var api: String?

    @Option(name: .customLong("peer"), help: ArgumentHelp("A peer to dial and keep dialling; repeat for more.", valueName: "host:port"))
    var peers: [String] = []

    @Option(name: .customLong("advertise"),
            help: ArgumentHelp("An address peers can reach this node at, told to them in the handshake; repeat for more (at most 8). "
                               + "Default: the listen address, unless it is 0.0.0.0, :: or port 0.", valueName: "host:port"))
    var advertise: [String] = []

    @Option(name: .customLong("network-id"), help: ArgumentHelp("Nodes of other networks are refused. Default 1.", valueName: "n"))
    var networkID: String?

    @Option(name: .customLong("capacity-chunks"), help: ArgumentHelp("Keep at most this many chunks, evicting the farthest bins first (default: unbounded).", valueName: "n"))
    var capacityChunks: String?

    @Flag(inversion: .prefixedNo,
          help: ArgumentHelp("A light node: pull nothing by sync, fetch chunks only on demand (retrieval, downloads); it still serves what it stores. "
                             + "--no-light overrides SHOAL_LIGHT and the config file. Default: off."))
    var light: Bool?

    @Option(name: .customLong("inbound-max"), help: ArgumentHelp("Inbound peer connections in total (default 256).", valueName: "n"))
    var inboundMax: String?

    @Option(name: .customLong("inbound-per-ip-max"), help: ArgumentHelp("Inbound peer connections from one IP address (default 16).", valueName: "n"))
    var inboundPerIPMax: String?

    @Option(name: .customLong("inbound-per-subnet-max"), help: ArgumentHelp("Inbound peer connections from one IPv4 /24 or IPv6 /64 (default 48).", valueName: "n"))
    var inboundPerSubnetMax: String?

    @Option(name: .customLong("handshakes-max"), help: ArgumentHelp("Inbound connections in their TLS and hello handshake (default 64).", valueName: "n"))
    var handshakesMax: String?

    @Option(name: .customLong("config"), help: ArgumentHelp("A config file of 'key = value' lines.", valueName: "file"))
    var configFile: String?

    @Option(name: .customLong("log-level"), help: ArgumentHelp("trace, debug, info, notice, warning, error or critical. Default info.", valueName: "level"))
    var logLevel: String?

    private var flags: DaemonSettings.Flags {
        DaemonSettings.Flags(dataDirectory: dataDirectory, listen: listen, api: api, peers: peers, advertise: advertise, networkID: networkID,
                             capacityChunks: capacityChunks, light: light, logLevel: logLevel, configFile: configFile,
                             limits: ["inbound-max": inboundMax, "inbound-per-ip-max": inboundPerIPMax,
                                      "inbound-per-subnet-max": inboundPerSubnetMax, "handshakes-max": handshakesMax]
                                 .compactMapValues { $0 })
    }

    /// Bad flags are usage errors (ArgumentParser prints the usage, exit 64); the other
    /// sources are checked in `run()`.
    func validate() throws {
        do {
            _ = try DaemonSettings.resolve(flags: flags, environment: [:], fileText: nil)
        } catch {
            throw ValidationError(error.description)
        }
    }

    func run() async throws {
        var environment: [String: String] = [:]
        for key in DaemonSettings.EnvironmentKey.all {
            if let value = getenv(key) { environment[key] = String(cString: value) }
        }
        let configPath = DaemonSettings.configFilePath(flags: flags, environment: environment)
        var fileText: String?
        if let configPath {
            do {
                fileText = try readTextFile(configPath)
            } catch {
                Terminal.err("shoal: cannot read config file \(configPath): \(error)")
                throw ExitCode.validationFailure
            }
        }
        let settings: DaemonSettings
        do {
            settings = try DaemonSettings.resolve(flags: flags, environment: environment, fileText: fileText,
                                                  fileName: configPath ?? "config file")
        } catch {
            Terminal.err("shoal: configuration error: \(error)")
            throw ExitCode.validationFailure
        }

        // The one place logging is bootstrapped: libraries only take a `Logger`.
        let level = settings.logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        try await Daemon(settings: settings, logger: Logger(label: "shoal")).run()
    }
}

/// A file's contents as UTF-8 text; errors name the system error.
func readTextFile(_ path: String) throws(DaemonError) -> String {
    /// A config file has no business being larger than this.
    let fileBytesMax = 1 << 20
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw DaemonError(String(cString: strerror(errno))) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n >= 0 else { throw DaemonError(String(cString: strerror(errno))) }
        if n == 0 { break }
        bytes.append(contentsOf: buffer[..<n])
        guard bytes.count <= fileBytesMax else { throw DaemonError("larger than \(fileBytesMax) bytes") }
    }
    guard let text = String(validating: bytes, as: UTF8.self) else { throw DaemonError("not UTF-8 text") }
    return text
}

/// A failure the daemon reports as one line.
struct DaemonError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
