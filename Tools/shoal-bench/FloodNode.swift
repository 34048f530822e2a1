import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Starting the flood's nodes, and what the flood watches of the victim through /proc.
extension NodeProcess {
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
