import Foundation
import LMDB
import ShoalCore
import ShoalStore
import ShoalTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// One writer per store, whichever process comes first: a store held writable by one process
/// (a node, `lmdb-inspect repair`, here `shoal-bench crash-writer`) is refused to every other
/// writer (a library open, a node starting, repair) at once, with the holder's pid; readers go on.
@Suite(.serialized) struct WriterLockTests {
    @Test(.timeLimit(.minutes(3)))
    func aStoreAnotherProcessHoldsWritableIsRefusedToEveryOtherWriter() async throws {
        let dir = try TemporaryDirectory("writer-lock")
        let data = dir.sub("node")
        let storeDirectory = data + "/store"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        let holder = try BackgroundProcess("shoal-bench", ["crash-writer", "--dir", storeDirectory, "--writers", "1", "--no-reader"])
        defer { holder.kill() }
        try await holder.waitForStandardOutput(containing: "COMMITTED batch=")

        // A library open in this process.
        let error = #expect(throws: StoreError.self) { try Store(directory: storeDirectory) }
        #expect(error?.code == .inUse)
        #expect(error?.message.contains("open for writing by process \(holder.pid)") == true, "\(String(describing: error))")
        // Reading is not writing.
        let reader = try Store(directory: storeDirectory, options: Store.Options(readOnly: true))
        #expect(try reader.count() > 0)
        reader.close()

        // Repair.
        let repair = try await Tools.run("lmdb-inspect", ["repair", storeDirectory], timeoutSeconds: 60)
        #expect(repair.status == 2, "\(repair.stdout)\(repair.stderr)")
        #expect(repair.stderr.contains("inUse"))

        // A node starting on the data directory (its own lock, shoal.lock, is free).
        let node = try await Tools.run("shoal", ["start", "--data-dir", data, "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"],
                                       timeoutSeconds: 60)
        #expect(node.status == 1, "\(node.stdout)\(node.stderr)")
        #expect(node.stderr.contains("open for writing by process \(holder.pid)"), "\(node.stderr)")

        // The kernel drops the lock with its holder, even on SIGKILL.
        holder.kill()
        let store = try Store(directory: storeDirectory)
        defer { store.close() }
        #expect(try store.count() > 0)
        let report = try store.verify()
        #expect(report.problems == [])
    }

    /// Repair's first check looks only at LMDB's lock table; the writer lock refuses a writer
    /// that check cannot see (one that took the store in the meantime).
    @Test func repairIsRefusedByTheWriterLockAlone() async throws {
        let f = try Fixture()
        let slot = try #require(await f.summaryChunk(f.chunks[3].address).slot)
        let file = try #require(FileHandle(forUpdatingAtPath: f.path + "/" + Schema.slotFileName))
        try file.seek(toOffset: slot * UInt64(Schema.slotSize) + 1)
        try file.write(contentsOf: Data([0xba, 0xad]))
        try file.close()

        // This process holds the writer lock, as a writer between repair's check and its open would.
        let fd = open(f.path + "/writer.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        #expect(fd >= 0)
        #expect(flock(fd, LOCK_EX | LOCK_NB) == 0)
        _ = "\(getpid())\n".withCString { pwrite(fd, $0, strlen($0), 0) }
        let refused = try await f.inspect(["repair", f.path])
        #expect(refused.status == 2, "\(refused.stdout)\(refused.stderr)")
        #expect(refused.stderr.contains("inUse: \(f.path) is open for writing by process \(getpid())"), "\(refused.stderr)")
        close(fd)

        let repaired = try await f.inspect(["repair", f.path])
        #expect(repaired.status == 0, "\(repaired.stdout)\(repaired.stderr)")
    }
}

/// A tool running in the background with its output collected, killed at the end.
final class BackgroundProcess: @unchecked Sendable {
    private let process = Process()
    private let lock = NSLock()
    private var out = Data()
    private var err = Data()

    init(_ tool: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        process.executableURL = URL(fileURLWithPath: Tools.path(tool))
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let outPipe = Pipe(), errPipe = Pipe()
        process.standardOutput = outPipe
        process.standardError = errPipe
        outPipe.fileHandleForReading.readabilityHandler = { [weak self] handle in self?.take(handle, stdout: true) }
        errPipe.fileHandleForReading.readabilityHandler = { [weak self] handle in self?.take(handle, stdout: false) }
        try process.run()
    }

    deinit { kill() }

    var pid: Int32 { process.processIdentifier }
    var standardOutput: String { lock.withLock { String(decoding: out, as: UTF8.self) } }
    var standardError: String { lock.withLock { String(decoding: err, as: UTF8.self) } }

    private func take(_ handle: FileHandle, stdout: Bool) {
        let data = handle.availableData
        if data.isEmpty {
            handle.readabilityHandler = nil
            return
        }
        lock.withLock { if stdout { out.append(data) } else { err.append(data) } }
    }

    /// Waits (at most `seconds`) until stdout holds `text`.
    func waitForStandardOutput(containing text: String, seconds: Int = 60) async throws {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while !standardOutput.contains(text) {
            guard process.isRunning, ContinuousClock.now < deadline else {
                throw TestFailure("no '\(text)' from the process; stderr: \(standardError.suffix(2000))")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Waits (at most `seconds`) for the process to exit and expects status 0.
    func waitForExit(seconds: Int = 30, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while process.isRunning {
            guard ContinuousClock.now < deadline else {
                kill()
                throw TestFailure("did not exit within \(seconds) s; stderr: \(standardError.suffix(2000))")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(process.terminationStatus == 0, "stderr: \(standardError.suffix(2000))", sourceLocation: sourceLocation)
    }

    /// SIGKILL, and a bounded wait for the process to be gone.
    func kill() {
        guard process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { usleep(10_000) }
    }
}
