import Logging
import ShoalCore
import ShoalNode

/// How `shoal start` runs, resolved from four sources, each overriding the ones after it:
/// command-line flags, then environment variables, then the config file, then the defaults.
///
/// Resolution is a pure function of its inputs (`resolve(flags:environment:fileText:)`), so
/// that precedence and every parse error can be tested without starting a process.
public struct DaemonSettings: Sendable, Equatable {
    public var dataDirectory: String
    /// Where peers connect (the node's listener).
    public var listen: HostPort
    /// Where the HTTP API listens.
    public var api: HostPort
    /// Peers to dial and keep dialling.
    public var peers: [HostPort]
    /// Where peers are told to reach this node (`--advertise`, at most `advertiseMax`); empty:
    /// the listen address, unless it is a wildcard or port 0.
    public var advertise: [HostPort] = []
    public var networkID: UInt64
    /// nil: unbounded.
    public var capacityChunks: UInt64?
    /// A light node: no pull sync (`NodeConfiguration.pullSync` false); chunks come by
    /// retrieval and downloads only.
    public var light: Bool
    public var logLevel: Logger.Level
    /// Bounds on inbound peer connections (`--inbound-max` and its siblings; see `limitSettings`).
    public var inboundLimits = InboundLimits()

    /// Addresses a node can advertise: as many as its hello carries.
    public static let advertiseMax = ProtocolLimits.listenAddressesMax

    public static let defaults = DaemonSettings(
        dataDirectory: "./shoal-data",
        listen: HostPort(host: "127.0.0.1", port: 1634),
        api: HostPort(host: "127.0.0.1", port: 1633),
        peers: [],
        networkID: 1,
        capacityChunks: nil,
        logLevel: .info
    )

    public init(dataDirectory: String, listen: HostPort, api: HostPort, peers: [HostPort], networkID: UInt64,
                capacityChunks: UInt64?, light: Bool = false, logLevel: Logger.Level) {
        self.dataDirectory = dataDirectory
        self.listen = listen
        self.api = api
        self.peers = peers
        self.networkID = networkID
        self.capacityChunks = capacityChunks
        self.light = light
        self.logLevel = logLevel
    }

    /// The node configuration these settings describe (timeouts and limits at their defaults).
    public func nodeConfiguration() -> NodeConfiguration {
        var configuration = NodeConfiguration(dataDirectory: dataDirectory)
        configuration.networkID = networkID
        configuration.listenHost = listen.host
        configuration.listenPort = listen.port
        configuration.peers = peers.map(\.description)
        configuration.advertise = advertise.map(\.description)
        configuration.capacityChunks = capacityChunks
        configuration.pullSync = !light
        configuration.inboundLimits = inboundLimits
        return configuration
    }
}

// MARK: Sources

extension DaemonSettings {
    /// Values from the command line, exactly as typed; nil (or no peers) where a flag was not given.
    public struct Flags: Sendable, Equatable {
        public var dataDirectory: String?
        public var listen: String?
        public var api: String?
        /// `--peer`, repeatable. Given at all, they replace the peers of every other source.
        public var peers: [String]
        /// `--advertise`, repeatable. Given at all, they replace the addresses of every other source.
        public var advertise: [String]
        public var networkID: String?
        public var capacityChunks: String?
        /// `--light` (true) or `--no-light` (false); nil when neither was given.
        public var light: Bool?
        public var logLevel: String?
        public var configFile: String?
        /// Connection limits by their config file key (`inbound-max` …), as typed.
        public var limits: [String: String]

        public init(dataDirectory: String? = nil, listen: String? = nil, api: String? = nil, peers: [String] = [],
                    advertise: [String] = [], networkID: String? = nil, capacityChunks: String? = nil, light: Bool? = nil,
                    logLevel: String? = nil, configFile: String? = nil, limits: [String: String] = [:]) {
            self.limits = limits
            self.dataDirectory = dataDirectory
            self.listen = listen
            self.api = api
            self.peers = peers
            self.advertise = advertise
            self.networkID = networkID
            self.capacityChunks = capacityChunks
            self.light = light
            self.logLevel = logLevel
            self.configFile = configFile
        }
    }

    /// The environment variables read, by setting. An empty variable counts as unset.
    public enum EnvironmentKey {
        public static let dataDirectory = "SHOAL_DATA_DIR"
        public static let listen = "SHOAL_LISTEN"
        public static let api = "SHOAL_API"
        /// Comma-separated HOST:PORT list.
        public static let peers = "SHOAL_PEERS"
        /// Comma-separated HOST:PORT list.
        public static let advertise = "SHOAL_ADVERTISE"
        public static let networkID = "SHOAL_NETWORK_ID"
        public static let capacityChunks = "SHOAL_CAPACITY_CHUNKS"
        /// `true` or `false` (also `yes`/`no`, `1`/`0`).
        public static let light = "SHOAL_LIGHT"
        public static let logLevel = "SHOAL_LOG_LEVEL"
        /// The config file, when `--config` is not given.
        public static let configFile = "SHOAL_CONFIG"

        public static let all = [dataDirectory, listen, api, peers, advertise, networkID, capacityChunks, light, logLevel, configFile]
            + DaemonSettings.limitSettings.map(\.environment)
    }

    /// One connection limit as every source names it.
    public struct LimitSetting: Sendable {
        /// The config file key; the flag is `--` and the key.
        public var key: String
        public var environment: String
        public var help: String
        public var path: WritableKeyPath<InboundLimits, Int> & Sendable
    }

    /// The connection limits a daemon can set (defaults in `InboundLimits`).
    public static var limitSettings: [LimitSetting] {
        [
            LimitSetting(key: "inbound-max", environment: "SHOAL_INBOUND_MAX",
                         help: "inbound peer connections in total", path: \.inboundMax),
            LimitSetting(key: "inbound-per-ip-max", environment: "SHOAL_INBOUND_PER_IP_MAX",
                         help: "inbound peer connections from one IP address", path: \.perAddressMax),
            LimitSetting(key: "inbound-per-subnet-max", environment: "SHOAL_INBOUND_PER_SUBNET_MAX",
                         help: "inbound peer connections from one IPv4 /24 or IPv6 /64", path: \.perSubnetMax),
            LimitSetting(key: "handshakes-max", environment: "SHOAL_HANDSHAKES_MAX",
                         help: "inbound connections in their TLS and hello handshake", path: \.handshakesMax),
        ]
    }

    /// The config file to read: `--config`, else `SHOAL_CONFIG`, else none.
    public static func configFilePath(flags: Flags, environment: [String: String]) -> String? {
        flags.configFile ?? nonEmpty(environment[EnvironmentKey.configFile])
    }

    /// Merges the sources: flags over environment over config file over defaults.
    ///
    /// Every source is validated in full, even where a higher one overrides it: a config file
    /// with a bad line is an error whatever the flags say, so it cannot lie in wait.
    ///
    /// - Parameters:
    ///   - fileText: the config file's contents, or nil when there is none.
    ///   - fileName: how errors name the config file.
    public static func resolve(flags: Flags, environment: [String: String], fileText: String?,
                               fileName: String = "config file") throws(SettingsError) -> DaemonSettings {
        let fromFlags = try Layer(flags: flags)
        let fromEnvironment = try Layer(environment: environment)
        let fromFile = try fileText.map { text throws(SettingsError) in try Layer(fileText: text, fileName: fileName) } ?? Layer()
        var settings = DaemonSettings.defaults
        for layer in [fromFile, fromEnvironment, fromFlags] { settings.apply(layer) }
        return settings
    }

    private mutating func apply(_ layer: Layer) {
        if let v = layer.dataDirectory { dataDirectory = v }
        if let v = layer.listen { listen = v }
        if let v = layer.api { api = v }
        if let v = layer.peers { peers = v }
        if let v = layer.advertise { advertise = v }
        if let v = layer.networkID { networkID = v }
        if let v = layer.capacity { capacityChunks = v.chunks }
        if let v = layer.light { light = v }
        if let v = layer.logLevel { logLevel = v }
        for setting in DaemonSettings.limitSettings {
            if let v = layer.limits[setting.key] { inboundLimits[keyPath: setting.path] = v }
        }
    }
}

/// A bad setting: where it came from (`--listen`, `SHOAL_LISTEN`, `shoal.conf:3`) and what is wrong.
public struct SettingsError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Origin: Sendable, Equatable {
        case flag, environment, configFile
    }

    public var origin: Origin
    /// The flag, variable or file line that holds the bad value.
    public var source: String
    public var message: String

    public init(_ origin: Origin, _ source: String, _ message: String) {
        self.origin = origin
        self.source = source
        self.message = message
    }

    public var description: String { "\(source): \(message)" }
}

/// A host and a port: `127.0.0.1:1634`, `localhost:0`, `[::1]:1634`.
public struct HostPort: Sendable, Equatable, Hashable, CustomStringConvertible {
    /// Without brackets, also for IPv6.
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT`; an IPv6 host goes in brackets. Port 0 (pick a free one) only where
    /// `allowPortZero`.
    public init?(parsing text: String, allowPortZero: Bool = true) {
        guard let (host, port) = try? HostPort.split(text, allowPortZero: allowPortZero) else { return nil }
        self.init(host: host, port: port)
    }

    static func split(_ text: String, allowPortZero: Bool) throws(HostPortError) -> (String, Int) {
        guard let colon = text.lastIndex(of: ":") else { throw .message("'\(text)' is not HOST:PORT") }
        var host = Substring(text[..<colon])
        let portText = text[text.index(after: colon)...]
        guard !portText.isEmpty, portText.allSatisfy(isDigit), let port = Int(portText) else {
            throw .message("port '\(portText)' in '\(text)' is not a number")
        }
        guard (allowPortZero ? 0 : 1)...65535 ~= port else {
            throw .message("port \(port) in '\(text)' is outside \(allowPortZero ? 0 : 1)…65535")
        }
        if host.hasPrefix("[") && host.hasSuffix("]") {
            host = host.dropFirst().dropLast()
        } else if host.contains(":") {
            throw .message("'\(text)': put an IPv6 host in brackets, e.g. [::1]:1634")
        }
        guard !host.isEmpty else { throw .message("'\(text)' has no host") }
        guard !host.contains(where: { $0 == " " || $0 == "\t" || $0 == "/" }) else {
            throw .message("'\(host)' in '\(text)' is not a host name or address")
        }
        return (String(host), port)
    }

    enum HostPortError: Error {
        case message(String)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// True for 127.0.0.0/8, ::1 and localhost: only this machine can connect.
    public var isLoopback: Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }
}

// MARK: Parsing one source

/// What one source sets; nil where it is silent.
private struct Layer {
    enum Capacity: Equatable {
        case unbounded
        case limited(UInt64)

        var chunks: UInt64? {
            if case .limited(let n) = self { return n }
            return nil
        }
    }

    var dataDirectory: String?
    var listen: HostPort?
    var api: HostPort?
    var peers: [HostPort]?
    var advertise: [HostPort]?
    var networkID: UInt64?
    var capacity: Capacity?
    var light: Bool?
    var logLevel: Logger.Level?
    /// Connection limits by config file key.
    var limits: [String: Int] = [:]

    init() {}

    init(flags: DaemonSettings.Flags) throws(SettingsError) {
        let origin = SettingsError.Origin.flag
        if let v = flags.dataDirectory { dataDirectory = try Layer.directory(v, origin, "--data-dir") }
        if let v = flags.listen { listen = try Layer.hostPort(v, origin, "--listen", allowPortZero: true) }
        if let v = flags.api { api = try Layer.hostPort(v, origin, "--api", allowPortZero: true) }
        if !flags.peers.isEmpty {
            var list: [HostPort] = []
            for peer in flags.peers { list.append(try Layer.hostPort(peer, origin, "--peer", allowPortZero: false)) }
            peers = list
        }
        if !flags.advertise.isEmpty {
            var list: [HostPort] = []
            for address in flags.advertise { list.append(try Layer.advertised(address, origin, "--advertise")) }
            advertise = try Layer.advertiseCount(list, origin, "--advertise")
        }
        if let v = flags.networkID { networkID = try Layer.number(v, origin, "--network-id") }
        if let v = flags.capacityChunks { capacity = try Layer.capacity(v, origin, "--capacity-chunks") }
        light = flags.light
        if let v = flags.logLevel { logLevel = try Layer.level(v, origin, "--log-level") }
        for setting in DaemonSettings.limitSettings {
            if let v = flags.limits[setting.key] { limits[setting.key] = try Layer.limit(v, origin, "--" + setting.key) }
        }
    }

    init(environment: [String: String]) throws(SettingsError) {
        typealias Key = DaemonSettings.EnvironmentKey
        let origin = SettingsError.Origin.environment
        func value(_ key: String) -> String? { nonEmpty(environment[key]) }
        if let v = value(Key.dataDirectory) { dataDirectory = try Layer.directory(v, origin, Key.dataDirectory) }
        if let v = value(Key.listen) { listen = try Layer.hostPort(v, origin, Key.listen, allowPortZero: true) }
        if let v = value(Key.api) { api = try Layer.hostPort(v, origin, Key.api, allowPortZero: true) }
        if let v = value(Key.peers) { peers = try Layer.peerList(v, origin, Key.peers) }
        if let v = value(Key.advertise) { advertise = try Layer.advertiseList(v, origin, Key.advertise) }
        if let v = value(Key.networkID) { networkID = try Layer.number(v, origin, Key.networkID) }
        if let v = value(Key.capacityChunks) { capacity = try Layer.capacity(v, origin, Key.capacityChunks) }
        if let v = value(Key.light) { light = try Layer.boolean(v, origin, Key.light) }
        if let v = value(Key.logLevel) { logLevel = try Layer.level(v, origin, Key.logLevel) }
        for setting in DaemonSettings.limitSettings {
            if let v = value(setting.environment) { limits[setting.key] = try Layer.limit(v, origin, setting.environment) }
        }
    }

    /// `key = value` lines; `#` starts a comment line; blank lines are skipped; a value may be
    /// in double quotes. `peer` and `advertise` may repeat; every other key may appear once.
    init(fileText: String, fileName: String) throws(SettingsError) {
        let origin = SettingsError.Origin.configFile
        var seen: [String: Int] = [:]
        var lineNumber = 0
        // `isNewline`: "\r\n" is one Character, so splitting on "\n" alone would miss CRLF lines.
        for rawLine in fileText.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            lineNumber += 1
            let line = trimmed(rawLine)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let source = "\(fileName):\(lineNumber)"
            guard let equals = line.firstIndex(of: "=") else {
                throw SettingsError(origin, source, "expected 'key = value', got '\(line)'")
            }
            let key = trimmed(line[..<equals])
            var value = trimmed(line[line.index(after: equals)...])
            if value.count >= 2 && value.hasPrefix("\"") && value.hasSuffix("\"") {
                value = String(value.dropFirst().dropLast())
            }
            let named = "\(source) (\(key))"
            if !["peer", "peers", "advertise"].contains(key), let first = seen[key] {
                throw SettingsError(origin, source, "'\(key)' is already set on line \(first)")
            }
            seen[key] = seen[key] ?? lineNumber
            guard !value.isEmpty else { throw SettingsError(origin, named, "empty value") }
            switch key {
            case "data-dir": dataDirectory = try Layer.directory(value, origin, named)
            case "listen": listen = try Layer.hostPort(value, origin, named, allowPortZero: true)
            case "api": api = try Layer.hostPort(value, origin, named, allowPortZero: true)
            case "peer": peers = (peers ?? []) + [try Layer.hostPort(value, origin, named, allowPortZero: false)]
            case "peers": peers = (peers ?? []) + (try Layer.peerList(value, origin, named))
            case "advertise":
                advertise = try Layer.advertiseCount((advertise ?? []) + (try Layer.advertiseList(value, origin, named)), origin, named)
            case "network-id": networkID = try Layer.number(value, origin, named)
            case "capacity-chunks": capacity = try Layer.capacity(value, origin, named)
            case "light": light = try Layer.boolean(value, origin, named)
            case "log-level": logLevel = try Layer.level(value, origin, named)
            case _ where DaemonSettings.limitSettings.contains(where: { $0.key == key }):
                limits[key] = try Layer.limit(value, origin, named)
            default:
                throw SettingsError(origin, source, "unknown key '\(key)' (known: \(Layer.fileKeys.joined(separator: ", ")))")
            }
        }
    }

    static var fileKeys: [String] {
        ["data-dir", "listen", "api", "peer", "peers", "advertise", "network-id", "capacity-chunks", "light", "log-level"]
            + DaemonSettings.limitSettings.map(\.key)
    }

    // MARK: Values

    private static func directory(_ text: String, _ origin: SettingsError.Origin, _ source: String) throws(SettingsError) -> String {
        guard !text.isEmpty else { throw SettingsError(origin, source, "empty directory") }
        return text
    }

    private static func hostPort(_ text: String, _ origin: SettingsError.Origin, _ source: String,
                                 allowPortZero: Bool) throws(SettingsError) -> HostPort {
        do {
            let (host, port) = try HostPort.split(text, allowPortZero: allowPortZero)
            return HostPort(host: host, port: port)
        } catch {
            switch error {
            case .message(let message): throw SettingsError(origin, source, message)
            }
        }
    }

    private static func peerList(_ text: String, _ origin: SettingsError.Origin, _ source: String) throws(SettingsError) -> [HostPort] {
        var list: [HostPort] = []
        for item in text.split(separator: ",") {
            let entry = trimmed(item)
            if entry.isEmpty { continue }
            list.append(try hostPort(entry, origin, source, allowPortZero: false))
        }
        return list
    }

    /// An address peers are told to reach us at: a peer's address (`--peer` rules) that peers
    /// also accept from a hello (`ShoalCore.HostPort.parse`) and that names one host, not a
    /// wildcard.
    private static func advertised(_ text: String, _ origin: SettingsError.Origin, _ source: String) throws(SettingsError) -> HostPort {
        let address = try hostPort(text, origin, source, allowPortZero: false)
        guard ShoalCore.HostPort.parse(address.description) != nil else {
            throw SettingsError(origin, source, "'\(text)' is not an address peers accept: a DNS name, an IPv4 address or [IPv6], then :port")
        }
        guard !["0.0.0.0", "::", "0:0:0:0:0:0:0:0"].contains(address.host) else {
            throw SettingsError(origin, source, "'\(text)' is a wildcard: advertise an address peers can dial")
        }
        return address
    }

    private static func advertiseList(_ text: String, _ origin: SettingsError.Origin, _ source: String) throws(SettingsError) -> [HostPort] {
        var list: [HostPort] = []
        for item in text.split(separator: ",") {
            let entry = trimmed(item)
            if entry.isEmpty { continue }
            list.append(try advertised(entry, origin, source))
        }
        return try advertiseCount(list, origin, source)
    }

    private static func advertiseCount(_ list: [HostPort], _ origin: SettingsError.Origin, _ source: String) throws(SettingsError) -> [HostPort] {
        guard list.count <= DaemonSettings.advertiseMax else {
            throw SettingsError(origin, source, "\(list.count) addresses to advertise; a hello carries at most \(DaemonSettings.advertiseMax)")
        }
        return list
    }

    private static func number(_ text: String, _ origin: SettingsError.Origin, _ source: String) throws(SettingsError) -> UInt64 {
        guard !text.isEmpty, text.allSatisfy(isDigit), let n = UInt64(text) else {
            throw SettingsError(origin, source, "'\(text)' is not a whole number from 0 to \(UInt64.max)")
        }
        return n
    }

    private static func capacity(_ text: String, _ origin: SettingsError.Origin, _ source: String) throws(SettingsError) -> Capacity {
        if text == "unbounded" { return .unbounded }
        let n = try number(text, origin, source)
        guard n > 0 else { throw SettingsError(origin, source, "capacity must be at least 1 chunk (or 'unbounded')") }
        return .limited(n)
    }

    private static func boolean(_ text: String, _ origin: SettingsError.Origin, _ source: String) throws(SettingsError) -> Bool {
        switch text.lowercased() {
        case "true", "yes", "1": return true
        case "false", "no", "0": return false
        default: throw SettingsError(origin, source, "'\(text)' is neither true nor false (yes/no and 1/0 work too)")
        }
    }

    private static func limit(_ text: String, _ origin: SettingsError.Origin, _ source: String) throws(SettingsError) -> Int {
        let n = try number(text, origin, source)
        guard (1...1_000_000).contains(n) else { throw SettingsError(origin, source, "a limit must be from 1 to 1000000, not \(n)") }
        return Int(n)
    }

    private static func level(_ text: String, _ origin: SettingsError.Origin, _ source: String) throws(SettingsError) -> Logger.Level {
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            let known = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
            throw SettingsError(origin, source, "unknown log level '\(text)' (one of \(known))")
        }
        return level
    }
}

private func isDigit(_ c: Character) -> Bool { ("0"..."9").contains(c) }

private func nonEmpty(_ text: String?) -> String? {
    guard let text, !text.isEmpty else { return nil }
    return text
}

private func trimmed(_ text: some StringProtocol) -> String {
    let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
    guard let start = text.firstIndex(where: { !isSpace($0) }) else { return "" }
    let end = text.lastIndex(where: { !isSpace($0) })!
    return String(text[start...end])
}
