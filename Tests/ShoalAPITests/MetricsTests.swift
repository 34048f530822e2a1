import CoreMetrics
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import ShoalAPI
import ShoalCore
import ShoalNode
import ShoalTestSupport
import Testing

/// `GET /metrics`: Prometheus text that parses, the documented names, counters that move,
/// route labels that are patterns, and one registry per API.
struct MetricsTests {
    @Test func theExpositionParsesAndEveryFamilyHasATypeAndHelp() async throws {
        try await withTestNode { node in
            try await withAPI(node) { client in
                _ = try await client.get("/status")
                let response = try await client.get("/metrics")
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == ShoalMetrics.contentType)
                let text = try PrometheusText(String(decoding: response.body.bytes, as: UTF8.self))
                #expect(!text.samples.isEmpty)
                for family in text.families {
                    #expect(family.hasPrefix("shoal_"), "\(family) lacks the shoal_ prefix")
                    #expect(text.types[family] != nil, "\(family) has no TYPE line")
                    #expect(text.help[family]?.isEmpty == false, "\(family) has no HELP line")
                    if text.types[family] == "counter" { #expect(family.hasSuffix("_total"), "counter \(family)") }
                }
                #expect(text.types["shoal_api_request_duration_seconds"] == "histogram")
            }
        }
    }

    @Test func everyDocumentedNameIsExportedAndEveryExportedNameDocumented() async throws {
        let documented = try MonitoringDoc.metricTypes()
        #expect(documented.count >= 20, "the table in Docs/Monitoring.md was not found")
        try await withTestNode { node in
            try await withAPI(node) { client in
                _ = try await client.get("/status")
                let text = try await scrape(client)
                for (name, type) in documented {
                    #expect(text.types[name] == type, "\(name): documented as \(type), exported as \(text.types[name] ?? "nothing")")
                }
                for family in text.families {
                    #expect(documented[family] != nil, "\(family) is exported but not in Docs/Monitoring.md")
                }
            }
        }
    }

    @Test func anUploadMovesTheRequestCounterAndTheStoreFigures() async throws {
        var source = SeededChunks(seed: 90)
        let chunk = source.chunk(size: 1000)
        try await withTestNode { node in
            try await withAPI(node) { client in
                let before = try await scrape(client)
                let post = ["method": "POST", "route": "/chunks", "status": "2xx"]
                #expect(before.value("shoal_api_requests_total", post) == nil)
                #expect(before.value("shoal_store_chunks") == 0)

                #expect(try await client.upload(chunk).status == .created)
                let after = try await scrape(client)
                #expect(after.value("shoal_api_requests_total", post) == 1)
                #expect(after.value("shoal_api_request_duration_seconds_count", post) == 1)
                #expect(after.value("shoal_store_chunks") == 1)
                let bin = Proximity.bin(of: chunk.address, relativeTo: node.overlay)
                #expect(after.value("shoal_store_bin_chunks", ["bin": String(bin)]) == 1)
                #expect(after.value("shoal_node_info", ["overlay": node.overlay.hex, "network_id": "1"]) == 1)
                // The first scrape is counted too, once its body was written.
                #expect(after.value("shoal_api_requests_total", ["method": "GET", "route": "/metrics", "status": "2xx"]) == 1)
            }
        }
    }

    @Test func theRouteLabelIsThePatternNeverThePath() async throws {
        var source = SeededChunks(seed: 91)
        let absent = [source.chunk(), source.chunk()].map(\.address.hex)
        try await withTestNode { node in
            try await withAPI(node) { client in
                for address in absent { #expect(try await client.get("/chunks/\(address)").status == .notFound) }
                #expect(try await client.get("/no/such/\(absent[0])").status == .notFound)
                let text = try await scrape(client)
                #expect(text.value("shoal_api_requests_total", ["method": "GET", "route": "/chunks/{address}", "status": "4xx"]) == 2)
                #expect(text.value("shoal_api_requests_total", ["method": "GET", "route": "unmatched", "status": "4xx"]) == 1)
                for sample in text.samples {
                    for (_, value) in sample.labels {
                        #expect(!absent.contains(where: value.contains), "a raw path became a label: \(sample)")
                    }
                }
            }
        }
    }

    @Test func theNodesCountersAreMirroredAsCountersAndStartOverForANewNode() async throws {
        try await withTestNode { node in
            let metrics = ShoalMetrics()
            var status = try node.status()
            status.chunksReceived = 5
            status.chunksServed = 2
            status.connections.inbound = try JSONDecoder().decode(InboundStatus.self, from: Data(#"""
                {"limits": {"inboundMax": 64, "perAddressMax": 4, "perSubnetMax": 16, "handshakesMax": 32,
                            "offencesMax": 5, "offenceWindowMs": 60000, "penaltyMs": 300000},
                 "open": {"inbound": 3, "handshaking": 1, "addresses": 2, "subnets": 1, "penalized": 1},
                 "counters": {"admitted": 9, "refused": {"tooManyFromAddress": 4}, "offences": 6, "penalties": 1}}
                """#.utf8))
            metrics.refresh(from: status, peers: [])
            var text = try PrometheusText(String(decoding: metrics.exposition(), as: UTF8.self))
            #expect(text.value("shoal_sync_chunks_received_total") == 5)
            #expect(text.value("shoal_sync_chunks_served_total") == 2)
            #expect(text.value("shoal_inbound_admitted_total") == 9)
            #expect(text.value("shoal_inbound_refused_total", ["reason": "tooManyFromAddress"]) == 4)
            #expect(text.value("shoal_inbound_refused_total", ["reason": "penalized"]) == 0, "every reason is shown from the start")
            #expect(text.value("shoal_connections_inbound") == 3)
            #expect(text.value("shoal_connections_handshaking") == 1)

            status.chunksReceived = 8
            metrics.refresh(from: status, peers: [])
            metrics.refresh(from: status, peers: [])
            text = try PrometheusText(String(decoding: metrics.exposition(), as: UTF8.self))
            #expect(text.value("shoal_sync_chunks_received_total") == 8, "grows by the difference, once")

            status.chunksReceived = 3
            metrics.refresh(from: status, peers: [])
            text = try PrometheusText(String(decoding: metrics.exposition(), as: UTF8.self))
            #expect(text.value("shoal_sync_chunks_received_total") == 3, "a counter that went back is a new node's")
        }
    }

    @Test func twoAPIsInOneProcessKeepTheirOwnFigures() async throws {
        var source = SeededChunks(seed: 92)
        let chunks = [source.chunk(), source.chunk(), source.chunk()]
        try await withTestNode { first in
            try await withTestNode { second in
                try await withAPI(first) { client in
                    for chunk in chunks {
                        let response = try await client.upload(chunk)
                        #expect(response.status == .created)
                    }
                }
                try await withAPI(second) { client in
                    let text = try await scrape(client)
                    #expect(text.value("shoal_store_chunks") == 0)
                    #expect(text.value("shoal_api_requests_total", ["method": "POST", "route": "/chunks", "status": "2xx"]) == nil)
                }
            }
        }
    }

    @Test func theHandlersFiguresAndSwiftMetricsThroughTheFactoryAreExported() throws {
        let metrics = ShoalMetrics()
        metrics.uploadBytes(10_000)
        metrics.uploadBytes(-1)
        metrics.downloadBytes(4096)
        metrics.filesUploaded()
        metrics.retrievalChunksReconstructed(3)
        metrics.apiRequest(method: "BREW", route: "/", status: 999, seconds: 0.002)
        CoreMetrics.Counter(label: "shoal_test_events_total", factory: metrics.factory).increment(by: 2)
        let text = try PrometheusText(String(decoding: metrics.exposition(), as: UTF8.self))
        #expect(text.value("shoal_api_upload_bytes_total") == 10_000)
        #expect(text.value("shoal_api_download_bytes_total") == 4096)
        #expect(text.value("shoal_api_files_uploaded_total") == 1)
        #expect(text.value("shoal_retrieval_chunks_reconstructed_total") == 3)
        #expect(text.value("shoal_api_requests_total", ["method": "other", "route": "/", "status": "other"]) == 1,
                "unknown methods and statuses fold into one label value")
        #expect(text.value("shoal_api_request_duration_seconds_bucket",
                           ["method": "other", "route": "/", "status": "other", "le": "0.0025"]) == 1)
        #expect(text.value("shoal_test_events_total") == 2)
    }

    private func scrape(_ client: some TestClientProtocol, sourceLocation: SourceLocation = #_sourceLocation) async throws -> PrometheusText {
        let response = try await client.get("/metrics")
        #expect(response.status == .ok, sourceLocation: sourceLocation)
        return try PrometheusText(String(decoding: response.body.bytes, as: UTF8.self))
    }
}

/// The metric table of `Docs/Monitoring.md`: rows `| \`name\` | type | … |`.
enum MonitoringDoc {
    static var path: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Docs/Monitoring.md").path
    }

    static func metricTypes() throws -> [String: String] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var types: [String: String] = [:]
        for match in text.matches(of: /\| `(shoal_[a-z_]+)` \| (counter|gauge|histogram) \|/) {
            types[String(match.1)] = String(match.2)
        }
        return types
    }
}
