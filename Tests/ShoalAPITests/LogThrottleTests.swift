import Locking
import Hummingbird
import HummingbirdTesting
import Logging
import ShoalAPI
import ShoalCore
import ShoalNode
import ShoalStore
import Testing

/// Keeps every log line, with its level and metadata.
private final class Lines: Sendable {
    struct Line: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }

    private let lines = Locked<[Line]>([])
    var all: [Line] { lines.withLock { $0 } }

    func logger(level: Logger.Level) -> Logger {
        var logger = Logger(label: "shoal.api.test") { _ in Handler(lines: self) }
        logger.logLevel = level
        return logger
    }

    private struct Handler: LogHandler {
        let lines: Lines
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }.mapValues { "\($0)" }
            lines.lines.withLock { $0.append(Line(level: event.level, message: "\(event.message)", metadata: merged)) }
        }
    }
}


@Suite struct APILogThrottleTests {
    @Test func aFloodOfFailingRequestsIsLoggedAsAFewLinesAndASummary() async throws {
        let lines = Lines()
        let log = ThrottledLog(logger: lines.logger(level: .debug), linesPerWindow: 5, windowMs: 60_000)
        let app = Application(router: makeRouter(node: FailingNode(failure: "disk on fire"), log: log), logger: lines.logger(level: .critical))
        try await app.test(.router) { client in
            for _ in 0..<200 {
                try await client.execute(uri: "/status", method: .get) { #expect($0.status == .internalServerError) }
            }
        }
        log.flush(all: true)
        let errors = lines.all.filter { $0.message == "request failed" }
        let access = lines.all.filter { $0.message.hasPrefix("GET /status 500") }
        #expect(errors.count == 5)
        #expect(errors.allSatisfy { $0.level == .error && $0.metadata["error.code"] == "storeError" })
        #expect(access.count == 5)
        let summaries = Dictionary(uniqueKeysWithValues: lines.all.compactMap { line in
            line.metadata["log.event"].map { ($0, (line.metadata["log.suppressed"] ?? "", line.level)) }
        })
        #expect(summaries["api.error.storeError"]?.0 == "195")
        #expect(summaries["api.error.storeError"]?.1 == .error)
        #expect(summaries["api.access.5xx"]?.0 == "195")
        #expect(lines.all.count == 12)
    }

    @Test func requestsBelowTheLogLevelCostNoLineAndNoCount() async throws {
        let lines = Lines()
        let log = ThrottledLog(logger: lines.logger(level: .info), linesPerWindow: 5, windowMs: 60_000)
        let app = Application(router: makeRouter(node: FailingNode(failure: "disk on fire"), log: log), logger: lines.logger(level: .critical))
        try await app.test(.router) { client in
            for _ in 0..<20 {
                try await client.execute(uri: "/nothing-here", method: .get) { #expect($0.status == .notFound) }
            }
        }
        log.flush(all: true)
        #expect(lines.all.isEmpty)
    }
}
