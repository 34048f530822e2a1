#if canImport(Glibc)
import Glibc
#endif

/// A keep-alive HTTP/1.1 connection to one node's API: requests go one after another over the
/// same socket, so a timed request pays no connection setup. Reopened when the node closed it.
final class KeepAliveAPI {
    /// Seconds one `send` or `recv` may block; each request also has the caller's deadline.
    static let ioTimeoutSeconds = 30

    struct Answer {
        var head: HTTPResponseHead
        var body: [UInt8]
    }

    let port: Int
    private var exchange: HTTPExchange?

    init(port: Int) { self.port = port }

    /// Connects now, so that the first timed request finds the connection open.
    func open() throws {
        if exchange == nil { exchange = try HTTPExchange(port: port, ioTimeoutSeconds: Self.ioTimeoutSeconds) }
    }

    /// `method path` and its whole (small) answer. The connection is dropped after an error or
    /// when the node says it closes it.
    func request(_ method: String, _ path: String, deadline: Double) throws -> Answer {
        try open()
        guard let exchange else { throw BenchError("127.0.0.1:\(port): not connected") }
        do {
            try exchange.send("\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let head = try exchange.readHead(deadline: deadline)
            // A HEAD answer has a Content-Length but no body.
            let body = method == "HEAD" ? [] : try exchange.readSmallBody(head, deadline: deadline)
            if head.header("connection")?.lowercased() == "close" { self.exchange = nil }
            return Answer(head: head, body: body)
        } catch {
            self.exchange = nil
            throw error
        }
    }

    /// As `request`, once more on a fresh connection when the first try failed: for requests
    /// that are not timed and change nothing (the node may have closed an idle connection).
    func requestRetrying(_ method: String, _ path: String, deadline: Double) throws -> Answer {
        do {
            return try request(method, path, deadline: deadline)
        } catch {
            return try request(method, path, deadline: deadline)
        }
    }
}

/// Latencies of one run, in seconds, and the figures drawn from them.
struct LatencySummary {
    /// Upper edges of the histogram's buckets, in milliseconds (cumulative, as Prometheus's `le`).
    static let bucketEdgesMs: [Double] = [0.5, 1, 2, 5, 10, 20, 50, 100, 1000]

    private let sorted: [Double]

    init(_ seconds: [Double]) { sorted = seconds.sorted() }

    var count: Int { sorted.count }

    /// The nearest-rank percentile (`p` in 0…1) in milliseconds; 0 without samples.
    func percentileMs(_ p: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        let rank = Int((p * Double(sorted.count)).rounded(.up))
        return sorted[min(sorted.count, max(1, rank)) - 1] * 1000
    }

    var maxMs: Double { (sorted.last ?? 0) * 1000 }
    var meanMs: Double { sorted.isEmpty ? 0 : sorted.reduce(0, +) / Double(sorted.count) * 1000 }

    /// How many samples took at most each edge, then how many took longer than the last.
    func histogram() -> (atMost: [(edgeMs: Double, count: Int)], over: Int) {
        var atMost: [(Double, Int)] = []
        for edge in Self.bucketEdgesMs {
            atMost.append((edge, sorted.prefix { $0 <= edge / 1000 }.count))
        }
        return (atMost, sorted.count - (atMost.last?.1 ?? 0))
    }
}
