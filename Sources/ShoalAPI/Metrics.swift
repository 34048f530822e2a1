import CoreMetrics
import Locking
import Prometheus
import ShoalCore
import ShoalNode

/// The metrics of one API instance, served as Prometheus text by `GET /metrics`.
///
/// Each instance owns its `PrometheusCollectorRegistry`; nothing here touches the global
/// `MetricsSystem`, so several nodes (and their APIs) can run in one process, as the tests do,
/// and each exports only its own figures (decision 0017). Code written against swift-metrics
/// reaches the same registry through `factory` (`Counter(label:dimensions:factory:)`).
///
/// Two kinds of figures:
/// - recorded as they happen by the API: requests (`APIMetricsMiddleware`), bytes and files
///   uploaded and downloaded, retrieval misses and rebuilds (the handlers call the methods below);
/// - read from the node when scraped (`refresh(from:peers:)`): store, bins, radius, peers,
///   connections, sync counters. The node's own counters become Prometheus counters here.
///
/// Every name starts with `shoal_`, carries its unit (`_total`, `_seconds`, `_bytes`) and is
/// listed in `Docs/Monitoring.md`. Label values come from small fixed sets only (method, route
/// pattern, status class, bin, refusal reason): never a raw path or a peer's address.
public final class ShoalMetrics: Sendable {
    /// What `GET /metrics` answers with (the Prometheus text exposition format 0.0.4).
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// Upper bounds of the request duration histogram, in seconds.
    public static let requestDurationBucketsSeconds: [Double] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
    ]

    public let registry: PrometheusCollectorRegistry
    /// swift-metrics over this instance's registry, for code that uses swift-metrics' types.
    public let factory: PrometheusMetricsFactory

    // Recorded by the API.
    private let uploadedBytes: Prometheus.Counter
    private let downloadedBytes: Prometheus.Counter
    private let uploadedFiles: Prometheus.Counter
    private let downloadedFiles: Prometheus.Counter
    private let missingChunks: Prometheus.Counter
    private let rebuiltChunks: Prometheus.Counter
    /// Request series by (method, route, status class), made on first use.
    private let requestSeries: Locked<[RequestKey: RequestSeries]>

    // Read from the node at scrape time.
    private let nodeInfoSeries: Locked<[String: Prometheus.Gauge]>
    private let storeChunks: Prometheus.Gauge
    private let binChunks: [Prometheus.Gauge]
    private let storageRadius: Prometheus.Gauge
    private let peers: Prometheus.Gauge
    private let outbound: Prometheus.Gauge
    private let inbound: Prometheus.Gauge
    private let handshaking: Prometheus.Gauge
    private let penalized: Prometheus.Gauge
    private let syncStreams: Prometheus.Gauge
    private let syncStreamsHistoryDone: Prometheus.Gauge
    private let topologyDepth: Prometheus.Gauge
    private let topologyRadius: Prometheus.Gauge
    private let peersKnown: Prometheus.Gauge
    private let peersConnected: Prometheus.Gauge
    /// The node's monotonic counters, mirrored: the counter and the node's value last added.
    private let mirrored: Locked<[MirroredCounter.Key: MirroredCounter]>

    public init() {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        factory = PrometheusMetricsFactory(registry: registry)
        let counter = { (name: String, help: String) in registry.makeCounter(descriptor: .shoal(name, help)) }
        let gauge = { (name: String, help: String) in registry.makeGauge(descriptor: .shoal(name, help)) }

        uploadedBytes = counter("shoal_api_upload_bytes_total", "File bytes received by POST /bytes and stored.")
        downloadedBytes = counter("shoal_api_download_bytes_total", "File bytes sent by GET /bytes.")
        uploadedFiles = counter(
            "shoal_api_files_uploaded_total", "Files whose upload completed (a root reference was returned).")
        downloadedFiles = counter(
            "shoal_api_files_downloaded_total", "File downloads (whole files or ranges) sent to the end.")
        missingChunks = counter("shoal_retrieval_chunks_missing_total", "Chunks a file read could neither get nor rebuild.")
        rebuiltChunks = counter("shoal_retrieval_chunks_reconstructed_total", "Chunks a file read rebuilt from parity.")
        requestSeries = Locked([:])

        nodeInfoSeries = Locked([:])
        storeChunks = gauge("shoal_store_chunks", "Chunks in the local store.")
        binChunks = (0..<Proximity.binCount).map {
            registry.makeGauge(
                descriptor: .shoal("shoal_store_bin_chunks", "Chunks in the local store per bin (proximity order to the node's overlay)."),
                labels: [("bin", String($0))])
        }
        storageRadius = gauge("shoal_storage_radius", "The store's radius: bins below it were evicted for capacity.")
        peers = gauge("shoal_peers", "Connected peers (sessions past the handshake).")
        outbound = gauge("shoal_connections_outbound", "Connected peers this node dialled.")
        inbound = gauge("shoal_connections_inbound", "Inbound connections open now (handshaking included).")
        handshaking = gauge("shoal_connections_handshaking", "Inbound connections still in their handshake.")
        penalized = gauge("shoal_inbound_penalized_addresses", "Addresses in the penalty box now.")
        syncStreams = gauge("shoal_sync_streams", "Pull-sync streams (one per connected peer and bin).")
        syncStreamsHistoryDone = gauge("shoal_sync_streams_history_done", "Pull-sync streams whose history part is synced.")
        topologyDepth = gauge("shoal_topology_depth", "Neighbourhood depth: peers at this proximity order or more are neighbours.")
        topologyRadius = gauge("shoal_topology_radius", "The storage radius the supervisor syncs by (bins below it are not kept).")
        peersKnown = gauge("shoal_peers_known", "Peers in the address book (connected or not).")
        peersConnected = gauge("shoal_peers_connected", "Peers in the Kademlia table's connected set.")
        mirrored = Locked([:])
        // Made now, so that a scrape shows every node counter (at 0) before the first event.
        mirrored.withLock { counters in
            for key in MirroredCounter.Key.fixed {
                counters[key] = MirroredCounter(counter: key.make(in: registry))
            }
            for reason in InboundAdmission.Refusal.allCases {
                let key = MirroredCounter.Key.refused(reason.rawValue)
                counters[key] = MirroredCounter(counter: key.make(in: registry))
            }
        }
    }

    // MARK: Recorded by the API

    /// One answered request: `route` is the router's pattern (`/chunks/{address}`), never the
    /// raw path; `status` the HTTP status code; `seconds` from the request to its body's end.
    public func apiRequest(method: String, route: String, status: Int, seconds: Double) {
        let key = RequestKey(method: RequestKey.methodLabel(method), route: route, statusClass: RequestKey.statusClass(status))
        let series = requestSeries.withLock { all in
            if let series = all[key] { return series }
            let series = RequestSeries(key, registry: registry)
            all[key] = series
            return series
        }
        series.count.increment()
        series.duration.record(max(0, seconds))
    }

    public func uploadBytes(_ count: Int) { if count > 0 { uploadedBytes.increment(by: Int64(count)) } }
    public func downloadBytes(_ count: Int) { if count > 0 { downloadedBytes.increment(by: Int64(count)) } }
    public func filesUploaded(_ count: Int = 1) { if count > 0 { uploadedFiles.increment(by: Int64(count)) } }
    public func filesDownloaded(_ count: Int = 1) { if count > 0 { downloadedFiles.increment(by: Int64(count)) } }
    public func retrievalChunksMissing(_ count: Int = 1) { if count > 0 { missingChunks.increment(by: Int64(count)) } }
    public func retrievalChunksReconstructed(_ count: Int = 1) { if count > 0 { rebuiltChunks.increment(by: Int64(count)) } }

    // MARK: Read from the node

    /// Sets the node's figures from its status, peers and topology (called by `GET /metrics`
    /// before it answers; without a topology its gauges keep their last values). The node's counters count since its process started; each is added to its
    /// Prometheus counter by what it grew since the last scrape.
    public func refresh(from status: NodeStatus, peers connected: [PeerStatus], topology: TopologyStatus? = nil) {
        nodeInfo(overlay: status.overlay, networkID: status.networkID)
        storeChunks.set(Int64(status.chunks))
        for bin in status.bins where binChunks.indices.contains(bin.bin) {
            binChunks[bin.bin].set(Int64(bin.chunks))
        }
        storageRadius.set(Int64(status.storageRadius))
        peers.set(Int64(status.peers))
        outbound.set(Int64(status.connections.outbound))
        let open = status.connections.inbound?.open
        inbound.set(Int64(open?.inbound ?? 0))
        handshaking.set(Int64(open?.handshaking ?? 0))
        penalized.set(Int64(open?.penalized ?? 0))
        let streams = connected.flatMap(\.bins)
        syncStreams.set(Int64(streams.count))
        syncStreamsHistoryDone.set(Int64(streams.count(where: \.historyDone)))
        if let topology {
            topologyDepth.set(Int64(topology.depth))
            topologyRadius.set(Int64(topology.radius))
            peersKnown.set(Int64(topology.known))
            peersConnected.set(Int64(topology.connected))
        }

        var values: [MirroredCounter.Key: Int] = [
            .chunksReceived: status.chunksReceived,
            .chunksServed: status.chunksServed,
            .chunksDuplicate: status.chunksDuplicate,
        ]
        if let counters = status.connections.inbound?.counters {
            values[.admitted] = counters.admitted
            values[.offences] = counters.offences
            values[.penalties] = counters.penalties
            for (reason, count) in counters.refused { values[.refused(reason)] = count }
        }
        mirrored.withLock { all in
            for (key, value) in values {
                // A reason this build does not know yet still gets its series: the node's
                // reasons are a small fixed set (`InboundAdmission.Refusal`).
                if all[key] == nil { all[key] = MirroredCounter(counter: key.make(in: registry)) }
                all[key]?.advance(to: value)
            }
        }
    }

    /// `shoal_node_info{overlay, network_id} 1`: one series per node (the overlay changes only
    /// with a new identity, which is a new node).
    private func nodeInfo(overlay: String, networkID: UInt64) {
        let key = "\(overlay)/\(networkID)"
        nodeInfoSeries.withLock { marks in
            guard marks[key] == nil else { return }
            for (_, old) in marks { registry.unregisterGauge(old) }
            marks.removeAll()
            let gauge = registry.makeGauge(
                descriptor: .shoal("shoal_node_info", "Always 1; the labels name the node."),
                labels: [("network_id", String(networkID)), ("overlay", overlay)])
            gauge.set(Int64(1))
            marks[key] = gauge
        }
    }

    /// The registry in Prometheus text format.
    public func exposition() -> [UInt8] {
        registry.emitToBuffer()
    }
}

/// The labels of one request series. `methodLabel` and `statusClass` keep the label values to
/// small fixed sets whatever the client sends.
struct RequestKey: Hashable, Sendable {
    var method: String
    var route: String
    var statusClass: String

    static let knownMethods: Set<String> = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]

    static func methodLabel(_ method: String) -> String {
        knownMethods.contains(method) ? method : "other"
    }

    static func statusClass(_ status: Int) -> String {
        (100...599).contains(status) ? "\(status / 100)xx" : "other"
    }
}

/// A request series: count and duration for one `RequestKey`.
private struct RequestSeries: Sendable {
    let count: Prometheus.Counter
    let duration: ValueHistogram

    init(_ key: RequestKey, registry: PrometheusCollectorRegistry) {
        let labels = [("method", key.method), ("route", key.route), ("status", key.statusClass)]
        count = registry.makeCounter(
            descriptor: .shoal("shoal_api_requests_total", "API requests answered, by method, route pattern and status class."),
            labels: labels)
        duration = registry.makeValueHistogram(
            descriptor: .shoal("shoal_api_request_duration_seconds", "Time from an API request to the end of its answer's body."),
            labels: labels, buckets: ShoalMetrics.requestDurationBucketsSeconds)
    }
}

/// A counter the node keeps (since its process started) mirrored into the registry.
private struct MirroredCounter: Sendable {
    enum Key: Hashable, Sendable {
        case chunksReceived, chunksServed, chunksDuplicate, admitted, offences, penalties
        case refused(String)

        static let fixed: [Key] = [.chunksReceived, .chunksServed, .chunksDuplicate, .admitted, .offences, .penalties]

        func make(in registry: PrometheusCollectorRegistry) -> Prometheus.Counter {
            switch self {
            case .chunksReceived:
                registry.makeCounter(descriptor: .shoal("shoal_sync_chunks_received_total", "Chunks received from peers by pull sync."))
            case .chunksServed:
                registry.makeCounter(descriptor: .shoal("shoal_sync_chunks_served_total", "Chunks delivered to peers by pull sync."))
            case .chunksDuplicate:
                registry.makeCounter(descriptor: .shoal("shoal_sync_chunks_duplicate_total",
                                                        "Chunks received from peers that the store already held."))
            case .admitted:
                registry.makeCounter(descriptor: .shoal("shoal_inbound_admitted_total", "Inbound connections admitted."))
            case .offences:
                registry.makeCounter(descriptor: .shoal("shoal_inbound_offences_total", "Offences recorded against inbound addresses."))
            case .penalties:
                registry.makeCounter(descriptor: .shoal("shoal_inbound_penalties_total", "Times an address was put in the penalty box."))
            case .refused(let reason):
                registry.makeCounter(descriptor: .shoal("shoal_inbound_refused_total", "Inbound connections refused, by reason."), labels: [("reason", reason)])
            }
        }
    }

    let counter: Prometheus.Counter
    /// The node's value already added to `counter`.
    private(set) var mark = 0

    init(counter: Prometheus.Counter) { self.counter = counter }

    /// Adds what the node's counter grew by; starts over if it went back (a new node).
    mutating func advance(to value: Int) {
        if value < mark {
            counter.reset()
            mark = 0
        }
        if value > mark { counter.increment(by: Int64(value - mark)) }
        mark = value
    }
}

extension MetricNameDescriptor {
    /// A descriptor for a whole name: Shoal's names carry their prefix and unit already.
    static func shoal(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }
}
