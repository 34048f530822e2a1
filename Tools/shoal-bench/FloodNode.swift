import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Starting the flood's nodes, and what the flood watches of the victim through /proc.
extension NodeProcess {
    /// `shoal start` on 127.0.0.1 with `extra` arguments (the victim's limit flags), its stderr
    /// appended to `logPath` rather than piped: a node that logs every refused connection must
    /// not block on a pipe, and the log's size is itself a figure.
    static func startLogged(
        _ name: String, shoal: String, dataDirectory: String, peers: [String], extra: [String],
        logPath: String, logLevel: String, timeout: Double = 60
    ) throws -> NodeProcess {
        var arguments = ["start", "--data-dir", dataDirectory, "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0",
                         "--network-id", "7", "--log-level", logLevel]
        for peer in peers { arguments += ["--peer", peer] }
        arguments += extra
        // `exec` keeps the pid: /proc/<pid> is the node's own.
        let quoted = "'" + logPath.replacingOccurrences(of: "'", with: "'\\''") + "'"
        let child = try ChildProcess("/bin/sh", ["-c", "exec \"$0\" \"$@\" 2>>\(quoted)", shoal] + arguments)
        let deadline = monotonicSeconds() + timeout
        while monotonicSeconds() < deadline {
            let closed = child.pump(until: min(deadline, monotonicSeconds() + 0.05))
            if let line = child.stdoutLines.first(where: { $0.hasPrefix("shoal: listening on ") }) {
                let parts = line.dropFirst("shoal: listening on ".count).split(separator: ",")
                let listen = String(parts[0])
                let api = parts[1].split(separator: " ").last.map(String.init) ?? ""
                guard let apiPort = api.split(separator: ":").last.flatMap({ Int($0) }) else {
                    throw BenchError("\(name): cannot parse the ready line \(line)")
                }
                return NodeProcess(name: name, dataDirectory: dataDirectory, child: child, listen: listen, apiPort: apiPort)
            }
            if closed {
                child.wait(until: monotonicSeconds() + 5)
                let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
                throw BenchError("\(name) exited before it was ready: \(child.termination.map { "\($0)" } ?? "?")\n\(log.suffix(2000))")
            }
        }
        child.signal(SIGKILL)
        child.wait(until: monotonicSeconds() + 5)
        throw BenchError("\(name) was not ready within \(timeout) s")
    }

    /// The port part of `listen`.
    var listenPort: Int { listen.split(separator: ":").last.flatMap { Int($0) } ?? 0 }
}

/// One look at the victim: resident memory, descriptors, threads, and the bytes it logged.
struct NodeSample {
    var seconds: Double
    var phase: String
    var rssKB: Int
    var fds: Int
    var threads: Int
    var logBytes: Int
    var storeBytes: Int
    var chunks: Int

    static func take(pid: pid_t, at seconds: Double, phase: String, logPath: String, storePath: String, chunks: Int) -> NodeSample {
        var rss = 0, threads = 0
        if let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) {
            for line in status.split(separator: "\n") {
                if line.hasPrefix("VmRSS:") { rss = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0 }
                if line.hasPrefix("Threads:") { threads = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first.flatMap { Int($0) } ?? 0 }
            }
        }
        return NodeSample(seconds: seconds, phase: phase, rssKB: rss, fds: countDescriptors(pid), threads: threads,
                          logBytes: fileSize(logPath), storeBytes: Files.allocatedBytes(storePath), chunks: chunks)
    }

    var line: String {
        "flood: t=\(String(format: "%.1f", seconds)) \(phase) rss_kb=\(rssKB) fd=\(fds) threads=\(threads) log_kb=\(logBytes / 1024) store_kb=\(storeBytes / 1024) chunks=\(chunks)"
    }

    static func countDescriptors(_ pid: pid_t) -> Int {
        guard let dir = opendir("/proc/\(pid)/fd") else { return 0 }
        defer { closedir(dir) }
        var n = 0
        while readdir(dir) != nil { n += 1 }
        return max(0, n - 2)  // "." and ".."
    }

    static func fileSize(_ path: String) -> Int {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : 0
    }
}

/// Whether a series settled: the last third of `values` lies within `band` of its own maximum
/// (a fraction) or within `slack` in absolute terms, whichever is larger.
func flattened(_ values: [Int], band: Double, slack: Int) -> Bool {
    guard values.count >= 3 else { return true }
    let tail = values.suffix(max(1, values.count / 3))
    guard let low = tail.min(), let high = tail.max() else { return true }
    return high - low <= max(slack, Int(Double(high) * band))
}

/// The `q` quantile (0…1) of `values`, nearest rank; nan when empty.
func quantile(_ values: [Double], _ q: Double) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    let rank = Int((q * Double(sorted.count)).rounded(.up)) - 1
    return sorted[min(sorted.count - 1, max(0, rank))]
}
