import Foundation
import ShoalCore
import ShoalStore
import ShoalTestSupport

/// Helpers for tests that run Shoal's executables as real processes.
enum Tools {
    /// The directory holding the built products (beside the test bundle).
    static var productsDirectory: URL {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        // On Linux the runner is `.build/<config>/<Package>PackageTests.xctest` (a file).
        while !FileManager.default.fileExists(atPath: dir.appendingPathComponent("lmdb-inspect").path),
              dir.path != "/" {
            dir = dir.deletingLastPathComponent()
        }
        return dir
    }

    static func path(_ tool: String) -> String {
        productsDirectory.appendingPathComponent(tool).path
    }

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs `tool` (one of ours, or an absolute path) with `arguments`, waits at most
    /// `timeoutSeconds`, and returns its output.
    /// The waiting happens on a thread of its own: blocking one of Swift's cooperative threads
    /// (two on this machine) would starve every other test meanwhile.
    static func run(_ tool: String, _ arguments: [String], timeoutSeconds: Double = 120) async throws -> Output {
        try await onOwnThread { try runBlocking(tool, arguments, timeoutSeconds: timeoutSeconds) }
    }

    static func runBlocking(_ tool: String, _ arguments: [String], timeoutSeconds: Double) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool.hasPrefix("/") ? tool : path(tool))
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Drain both pipes while the process runs so a full pipe cannot block it.
        let group = DispatchGroup()
        nonisolated(unsafe) var outData = Data(), errData = Data()
        group.enter()
        DispatchQueue.global().async { outData = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter()
        DispatchQueue.global().async { errData = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            // The tool's own children (the node processes a bench started) go first: killed
            // with the tool, they would outlive it, and hold its pipes open.
            for child in descendants(of: process.processIdentifier) { kill(child, SIGKILL) }
            process.terminate()
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
        group.wait()
        return Output(status: process.terminationStatus,
                      stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }
}

/// Every process below `pid` (children, their children…), read from /proc.
func descendants(of pid: Int32) -> [Int32] {
    var parents: [Int32: [Int32]] = [:]
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
        guard let child = Int32(entry),
              let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { continue }
        // "pid (comm) state ppid …": the parent is the second field after the command name.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        if fields.count > 1, let parent = Int32(fields[1]) { parents[parent, default: []].append(child) }
    }
    var out: [Int32] = []
    var queue = [pid]
    while let next = queue.popLast() {
        let children = parents[next] ?? []
        out += children
        queue += children
    }
    return out
}
