import Logging
import ShoalAPI
import ShoalNode
import Testing

/// `shoal start` settings: flags over environment over config file over defaults.
struct SettingsPrecedenceTests {
    typealias Flags = DaemonSettings.Flags

    @Test func withNothingGivenTheDefaultsApply() throws {
        let settings = try DaemonSettings.resolve(flags: Flags(), environment: [:], fileText: nil)
        #expect(settings == DaemonSettings.defaults)
        #expect(settings.dataDirectory == "./shoal-data")
        #expect(settings.listen == HostPort(host: "127.0.0.1", port: 1634))
        #expect(settings.api == HostPort(host: "127.0.0.1", port: 1633))
        #expect(settings.peers == [])
        #expect(settings.networkID == 1)
        #expect(settings.capacityChunks == nil)
        #expect(settings.light == false)
        #expect(settings.logLevel == .info)
    }

    /// One row per setting: its config file line, environment variable and flag, each with a
    /// different value, and a getter that renders the resolved value as text.
    struct Row: Sendable, CustomTestStringConvertible {
        var name: String
        var fileLine: @Sendable (String) -> String
        var environmentKey: String
        var flag: @Sendable (inout Flags, String) -> Void
        var values: (file: String, environment: String, flag: String)
        var resolved: @Sendable (DaemonSettings) -> String
        var testDescription: String { name }
    }

    static let rows: [Row] = [
        Row(name: "data-dir", fileLine: { "data-dir = \($0)" }, environmentKey: "SHOAL_DATA_DIR",
            flag: { $0.dataDirectory = $1 }, values: ("/file", "/env", "/flag"), resolved: { $0.dataDirectory }),
        Row(name: "listen", fileLine: { "listen = \($0)" }, environmentKey: "SHOAL_LISTEN",
            flag: { $0.listen = $1 }, values: ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"), resolved: { "\($0.listen)" }),
        Row(name: "api", fileLine: { "api = \($0)" }, environmentKey: "SHOAL_API",
            flag: { $0.api = $1 }, values: ("127.0.0.1:4", "127.0.0.1:5", "127.0.0.1:0"), resolved: { "\($0.api)" }),
        Row(name: "peers", fileLine: { "peer = \($0)" }, environmentKey: "SHOAL_PEERS",
            flag: { $0.peers = [$1] }, values: ("10.0.0.1:1634", "10.0.0.2:1634", "10.0.0.3:1634"),
            resolved: { $0.peers.map(\.description).joined(separator: ",") }),
        Row(name: "advertise", fileLine: { "advertise = \($0)" }, environmentKey: "SHOAL_ADVERTISE",
            flag: { $0.advertise = [$1] }, values: ("node-a.example:1634", "192.0.2.7:1700", "[2001:db8::7]:1634"),
            resolved: { $0.advertise.map(\.description).joined(separator: ",") }),
        Row(name: "network-id", fileLine: { "network-id = \($0)" }, environmentKey: "SHOAL_NETWORK_ID",
            flag: { $0.networkID = $1 }, values: ("10", "20", "30"), resolved: { "\($0.networkID)" }),
        Row(name: "capacity-chunks", fileLine: { "capacity-chunks = \($0)" }, environmentKey: "SHOAL_CAPACITY_CHUNKS",
            flag: { $0.capacityChunks = $1 }, values: ("100", "200", "300"), resolved: { $0.capacityChunks.map { "\($0)" } ?? "unbounded" }),
        Row(name: "light", fileLine: { "light = \($0)" }, environmentKey: "SHOAL_LIGHT",
            flag: { $0.light = Bool($1) }, values: ("true", "false", "true"), resolved: { "\($0.light)" }),
        Row(name: "log-level", fileLine: { "log-level = \($0)" }, environmentKey: "SHOAL_LOG_LEVEL",
            flag: { $0.logLevel = $1 }, values: ("debug", "warning", "error"), resolved: { $0.logLevel.rawValue }),
    ]

    @Test(arguments: rows)
    func aFlagBeatsTheEnvironmentWhichBeatsTheFileWhichBeatsTheDefault(row: Row) throws {
        let file = row.fileLine(row.values.file)
        let environment = [row.environmentKey: row.values.environment]
        var flags = Flags()
        row.flag(&flags, row.values.flag)

        let all = try DaemonSettings.resolve(flags: flags, environment: environment, fileText: file)
        #expect(row.resolved(all) == row.values.flag)
        let noFlag = try DaemonSettings.resolve(flags: Flags(), environment: environment, fileText: file)
        #expect(row.resolved(noFlag) == row.values.environment)
        let fileOnly = try DaemonSettings.resolve(flags: Flags(), environment: [:], fileText: file)
        #expect(row.resolved(fileOnly) == row.values.file)
        let flagOnly = try DaemonSettings.resolve(flags: flags, environment: [:], fileText: nil)
        #expect(row.resolved(flagOnly) == row.values.flag)
        // Each source changes only its own setting.
        var others = fileOnly
        others.dataDirectory = DaemonSettings.defaults.dataDirectory
        others.listen = DaemonSettings.defaults.listen
        others.api = DaemonSettings.defaults.api
        others.peers = DaemonSettings.defaults.peers
        others.advertise = DaemonSettings.defaults.advertise
        others.networkID = DaemonSettings.defaults.networkID
        others.capacityChunks = DaemonSettings.defaults.capacityChunks
        others.light = DaemonSettings.defaults.light
        others.logLevel = DaemonSettings.defaults.logLevel
        #expect(others == DaemonSettings.defaults)
    }

    @Test func anEmptyEnvironmentVariableCountsAsUnset() throws {
        let settings = try DaemonSettings.resolve(flags: Flags(), environment: ["SHOAL_LISTEN": "", "SHOAL_PEERS": ""],
                                                  fileText: "listen = 127.0.0.1:9\npeer = 10.0.0.1:1")
        #expect(settings.listen == HostPort(host: "127.0.0.1", port: 9))
        #expect(settings.peers == [HostPort(host: "10.0.0.1", port: 1)])
    }

    @Test func peersFromAHigherSourceReplaceTheLowerOnesInsteadOfAdding() throws {
        let settings = try DaemonSettings.resolve(
            flags: Flags(peers: ["127.0.0.1:7001", "127.0.0.1:7002"]),
            environment: ["SHOAL_PEERS": "127.0.0.1:8001, 127.0.0.1:8002,,"],
            fileText: "peer = 127.0.0.1:9001\npeers = 127.0.0.1:9002,127.0.0.1:9003")
        #expect(settings.peers.map(\.port) == [7001, 7002])
        let fromEnvironment = try DaemonSettings.resolve(
            flags: Flags(), environment: ["SHOAL_PEERS": "127.0.0.1:8001, 127.0.0.1:8002,,"], fileText: nil)
        #expect(fromEnvironment.peers.map(\.port) == [8001, 8002])
        let fromFile = try DaemonSettings.resolve(
            flags: Flags(), environment: [:], fileText: "peer = 127.0.0.1:9001\npeers = 127.0.0.1:9002,127.0.0.1:9003\npeer = 127.0.0.1:9004")
        #expect(fromFile.peers.map(\.port) == [9001, 9002, 9003, 9004])
    }

    @Test func advertisedAddressesRepeatAsPeersDoAndBecomeTheNodesAdvertise() throws {
        let fromFile = try DaemonSettings.resolve(
            flags: Flags(), environment: [:], fileText: "advertise = 192.0.2.1:1634\nadvertise = 192.0.2.2:1634, node.example:1634")
        #expect(fromFile.advertise.map(\.description) == ["192.0.2.1:1634", "192.0.2.2:1634", "node.example:1634"])
        #expect(fromFile.nodeConfiguration().advertise == ["192.0.2.1:1634", "192.0.2.2:1634", "node.example:1634"])
        let fromEnvironment = try DaemonSettings.resolve(
            flags: Flags(), environment: ["SHOAL_ADVERTISE": "192.0.2.3:1, [2001:db8::1]:2,,"], fileText: "advertise = 192.0.2.1:1634")
        #expect(fromEnvironment.nodeConfiguration().advertise == ["192.0.2.3:1", "[2001:db8::1]:2"])
        let fromFlags = try DaemonSettings.resolve(
            flags: Flags(advertise: ["192.0.2.9:9"]), environment: ["SHOAL_ADVERTISE": "192.0.2.3:1"], fileText: nil)
        #expect(fromFlags.nodeConfiguration().advertise == ["192.0.2.9:9"])
        #expect(try DaemonSettings.resolve(flags: Flags(), environment: [:], fileText: nil).nodeConfiguration().advertise == [])
    }

    @Test func atMostEightAddressesAreAdvertisedFromAnySource() throws {
        let eight = (1...8).map { "192.0.2.\($0):1634" }
        let nine = eight + ["192.0.2.9:1634"]
        #expect(try DaemonSettings.resolve(flags: Flags(advertise: eight), environment: [:], fileText: nil).advertise.count == 8)
        let flagError = #expect(throws: SettingsError.self) {
            _ = try DaemonSettings.resolve(flags: Flags(advertise: nine), environment: [:], fileText: nil)
        }
        #expect(flagError?.source == "--advertise")
        #expect(flagError?.message.contains("at most 8") == true)
        let environmentError = #expect(throws: SettingsError.self) {
            _ = try DaemonSettings.resolve(flags: Flags(), environment: ["SHOAL_ADVERTISE": nine.joined(separator: ",")], fileText: nil)
        }
        #expect(environmentError?.source == "SHOAL_ADVERTISE")
        let fileError = #expect(throws: SettingsError.self) {
            _ = try DaemonSettings.resolve(flags: Flags(), environment: [:],
                                           fileText: nine.map { "advertise = \($0)" }.joined(separator: "\n"), fileName: "shoal.conf")
        }
        #expect(fileError?.source == "shoal.conf:9 (advertise)")
    }

    @Test func unboundedInTheEnvironmentLiftsTheFilesCapacity() throws {
        let settings = try DaemonSettings.resolve(flags: Flags(), environment: ["SHOAL_CAPACITY_CHUNKS": "unbounded"],
                                                  fileText: "capacity-chunks = 1000")
        #expect(settings.capacityChunks == nil)
    }

    @Test func noLightOnTheCommandLineOverridesALightEnvironmentAndFile() throws {
        let settings = try DaemonSettings.resolve(flags: Flags(light: false), environment: ["SHOAL_LIGHT": "yes"], fileText: "light = true")
        #expect(settings.light == false)
        #expect(settings.nodeConfiguration().pullSync)
        for (text, light) in [("1", true), ("YES", true), ("True", true), ("0", false), ("no", false), ("FALSE", false)] {
            #expect(try DaemonSettings.resolve(flags: Flags(), environment: ["SHOAL_LIGHT": text], fileText: nil).light == light, "\(text)")
        }
    }

    @Test func connectionLimitsComeFromEverySourceInTheUsualOrder() throws {
        let settings = try DaemonSettings.resolve(
            flags: Flags(limits: ["inbound-max": "500"]),
            environment: ["SHOAL_INBOUND_MAX": "400", "SHOAL_INBOUND_PER_IP_MAX": "4"],
            fileText: "inbound-max = 300\ninbound-per-ip-max = 3\ninbound-per-subnet-max = 9\nhandshakes-max = 20")
        #expect(settings.inboundLimits.inboundMax == 500)
        #expect(settings.inboundLimits.perAddressMax == 4)
        #expect(settings.inboundLimits.perSubnetMax == 9)
        #expect(settings.inboundLimits.handshakesMax == 20)
        #expect(settings.nodeConfiguration().inboundLimits == settings.inboundLimits)
    }

    @Test(arguments: ["0", "-1", "x", "1000001"])
    func aConnectionLimitOutsideOneToAMillionIsRefusedWithItsSource(value: String) {
        #expect(throws: SettingsError.self) {
            _ = try DaemonSettings.resolve(flags: Flags(limits: ["handshakes-max": value]), environment: [:], fileText: nil)
        }
        let error = #expect(throws: SettingsError.self) {
            _ = try DaemonSettings.resolve(flags: Flags(), environment: [:], fileText: "inbound-per-subnet-max = \(value)")
        }
        #expect(error?.source.contains("inbound-per-subnet-max") == true)
    }

    @Test func theConfigFileComesFromTheFlagElseTheEnvironment() {
        #expect(DaemonSettings.configFilePath(flags: Flags(configFile: "/a.conf"), environment: ["SHOAL_CONFIG": "/b.conf"]) == "/a.conf")
        #expect(DaemonSettings.configFilePath(flags: Flags(), environment: ["SHOAL_CONFIG": "/b.conf"]) == "/b.conf")
        #expect(DaemonSettings.configFilePath(flags: Flags(), environment: ["SHOAL_CONFIG": ""]) == nil)
        #expect(DaemonSettings.configFilePath(flags: Flags(), environment: [:]) == nil)
    }

    @Test func settingsBecomeTheNodeConfiguration() throws {
        let settings = try DaemonSettings.resolve(
            flags: Flags(dataDirectory: "/var/lib/shoal", listen: "[::1]:0", peers: ["[::1]:1700", "node-b:1634"],
                         networkID: "7", capacityChunks: "5000", light: true),
            environment: [:], fileText: nil)
        let configuration = settings.nodeConfiguration()
        #expect(configuration.dataDirectory == "/var/lib/shoal")
        #expect(configuration.storeDirectory == "/var/lib/shoal/store")
        #expect(configuration.listenHost == "::1")
        #expect(configuration.listenPort == 0)
        #expect(configuration.peers == ["[::1]:1700", "node-b:1634"])
        #expect(configuration.networkID == 7)
        #expect(configuration.capacityChunks == 5000)
        #expect(configuration.pullSync == false, "a light node pulls nothing by sync")
        #expect(try DaemonSettings.resolve(flags: Flags(), environment: [:], fileText: nil).nodeConfiguration().pullSync)
    }
}

struct ConfigFileTests {
    @Test func commentsBlankLinesSpacesAndQuotesAreAllowed() throws {
        let text = """
            # a Shoal node
            data-dir = "/srv/shoal data"

            \tlisten=0.0.0.0:1634\r
              api   =   127.0.0.1:0
            network-id = 18446744073709551615
            """
        let settings = try DaemonSettings.resolve(flags: .init(), environment: [:], fileText: text)
        #expect(settings.dataDirectory == "/srv/shoal data")
        #expect(settings.listen == HostPort(host: "0.0.0.0", port: 1634))
        #expect(settings.api == HostPort(host: "127.0.0.1", port: 0))
        #expect(settings.networkID == UInt64.max)
    }

    @Test(arguments: [
        ("listen = 127.0.0.1:1\nbogus = 1", "shoal.conf:2", "unknown key 'bogus'"),
        ("listen 127.0.0.1:1", "shoal.conf:1", "expected 'key = value'"),
        ("listen = 127.0.0.1:1\nlisten = 127.0.0.1:2", "shoal.conf:2", "already set on line 1"),
        ("# ok\nlisten = 127.0.0.1", "shoal.conf:2 (listen)", "is not HOST:PORT"),
        ("api = 127.0.0.1:70000", "shoal.conf:1 (api)", "outside 0…65535"),
        ("peer = 127.0.0.1:0", "shoal.conf:1 (peer)", "outside 1…65535"),
        ("listen = ::1:1634", "shoal.conf:1 (listen)", "brackets"),
        ("network-id = -1", "shoal.conf:1 (network-id)", "not a whole number"),
        ("capacity-chunks = 0", "shoal.conf:1 (capacity-chunks)", "at least 1"),
        ("log-level = loud", "shoal.conf:1 (log-level)", "unknown log level 'loud'"),
        ("light = maybe", "shoal.conf:1 (light)", "neither true nor false"),
        ("light = true\nlight = false", "shoal.conf:2", "already set on line 1"),
        ("data-dir =", "shoal.conf:1 (data-dir)", "empty value"),
        ("advertise = 127.0.0.1:0", "shoal.conf:1 (advertise)", "outside 1…65535"),
        ("advertise = 0.0.0.0:1634", "shoal.conf:1 (advertise)", "wildcard"),
        ("advertise = [::]:1634", "shoal.conf:1 (advertise)", "wildcard"),
        ("advertise = under_score-.example:1634", "shoal.conf:1 (advertise)", "not an address peers accept"),
    ])
    func aBadLineIsAnErrorNamingTheFileAndLine(text: String, source: String, message: String) {
        let error = #expect(throws: SettingsError.self) {
            _ = try DaemonSettings.resolve(flags: .init(), environment: [:], fileText: text, fileName: "shoal.conf")
        }
        #expect(error?.origin == .configFile)
        #expect(error?.source == source)
        #expect(error?.message.contains(message) == true, "\(String(describing: error))")
    }

    @Test func aBrokenFileIsAnErrorEvenWhenFlagsOverrideEveryLine() {
        #expect(throws: SettingsError.self) {
            _ = try DaemonSettings.resolve(flags: .init(listen: "127.0.0.1:1"), environment: [:], fileText: "listen = nonsense")
        }
    }
}

struct FlagAndEnvironmentErrorTests {
    @Test(arguments: [
        (DaemonSettings.Flags(listen: "localhost"), "--listen"),
        (DaemonSettings.Flags(api: "127.0.0.1:http"), "--api"),
        (DaemonSettings.Flags(peers: ["127.0.0.1:1", "nope"]), "--peer"),
        (DaemonSettings.Flags(advertise: ["127.0.0.1:1", "nope"]), "--advertise"),
        (DaemonSettings.Flags(advertise: ["0.0.0.0:1634"]), "--advertise"),
        (DaemonSettings.Flags(networkID: "one"), "--network-id"),
        (DaemonSettings.Flags(capacityChunks: "-5"), "--capacity-chunks"),
        (DaemonSettings.Flags(logLevel: "verbose"), "--log-level"),
    ])
    func aBadFlagNamesTheFlag(flags: DaemonSettings.Flags, flag: String) {
        let error = #expect(throws: SettingsError.self) {
            _ = try DaemonSettings.resolve(flags: flags, environment: [:], fileText: nil)
        }
        #expect(error?.origin == .flag)
        #expect(error?.source == flag)
    }

    @Test(arguments: ["SHOAL_LISTEN", "SHOAL_API", "SHOAL_PEERS", "SHOAL_ADVERTISE", "SHOAL_NETWORK_ID", "SHOAL_CAPACITY_CHUNKS", "SHOAL_LIGHT", "SHOAL_LOG_LEVEL"])
    func aBadVariableNamesTheVariable(key: String) {
        let error = #expect(throws: SettingsError.self) {
            _ = try DaemonSettings.resolve(flags: .init(), environment: [key: "not valid:x"], fileText: nil)
        }
        #expect(error?.origin == .environment)
        #expect(error?.source == key)
    }
}

struct HostPortTests {
    @Test(arguments: [
        ("127.0.0.1:1634", "127.0.0.1", 1634),
        ("localhost:0", "localhost", 0),
        ("[::1]:1634", "::1", 1634),
        ("node-a.example:65535", "node-a.example", 65535),
    ])
    func parses(text: String, host: String, port: Int) throws {
        let parsed = try #require(HostPort(parsing: text))
        #expect(parsed == HostPort(host: host, port: port))
        #expect(parsed.description == text)
    }

    @Test(arguments: ["", "127.0.0.1", ":1634", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "::1:1634", "a b:1", "127.0.0.1:+1"])
    func rejects(text: String) {
        #expect(HostPort(parsing: text) == nil)
    }

    @Test func portZeroIsRefusedWhereAPortMustBeDialled() {
        #expect(HostPort(parsing: "127.0.0.1:0", allowPortZero: false) == nil)
    }

    @Test(arguments: [("127.0.0.1", true), ("127.9.9.9", true), ("localhost", true), ("::1", true),
                      ("0.0.0.0", false), ("10.0.0.1", false), ("::", false)])
    func loopback(host: String, isLoopback: Bool) {
        #expect(HostPort(host: host, port: 1).isLoopback == isLoopback)
    }
}
