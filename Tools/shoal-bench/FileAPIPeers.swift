import Crypto
import ShoalCore

#if canImport(Glibc)
import Glibc
#endif

/// A file of seeded random bytes written for a run, with its SHA-256 (computed while writing,
/// so the file is never held whole).
struct RandomFile {
    let path: String
    let size: Int
    let sha256: [UInt8]

    static let pieceBytes = 1 << 20

    static func write(_ path: String, size: Int, seed: UInt64) throws -> RandomFile {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw BenchError("open(\(path)): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var rng = SplitMix64(seed: seed)
        var hasher = SHA256()
        var written = 0
        while written < size {
            let piece = rng.bytes(min(pieceBytes, size - written))
            hasher.update(data: piece)
            try piece.withUnsafeBytes { raw in
                var done = 0
                while done < raw.count {
                    let n = Glibc.write(fd, raw.baseAddress! + done, raw.count - done)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { throw BenchError("write(\(path)): \(String(cString: strerror(errno)))") }
                    done += n
                }
            }
            written += piece.count
        }
        return RandomFile(path: path, size: size, sha256: Array(hasher.finalize()))
    }

    /// `count` bytes at `offset`, read back from the file.
    func bytes(at offset: Int, count: Int) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BenchError("open(\(path)): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var out = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw BenchError("pread(\(path)) at \(offset + done): \(n == 0 ? "end of file" : String(cString: strerror(errno)))") }
            done += n
        }
        return out
    }
}

/// A field of `/proc/PID/status` in KiB (`VmHWM`, `VmRSS`); nil when the process is gone.
func procStatusKiB(_ pid: pid_t, _ field: String) -> Int? {
    let fd = open("/proc/\(pid)/status", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 8192)
    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard n > 0 else { return nil }
    let text = String(decoding: buffer[0..<n], as: UTF8.self)
    guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }) else { return nil }
    return line.split(separator: " ").dropFirst().first.flatMap { Int($0) }
}

/// The references the file bench compares against, each run as a child process in the same
/// pass as Shoal's figures.
enum FileAPIReferences {
    /// `sha256sum FILE`, timed from spawn to exit; checks its digest against `file`'s.
    static func sha256sum(_ file: RandomFile, timeoutSeconds: Double) throws -> Double {
        guard let tool = ChildProcess.which("sha256sum") else { throw BenchError("sha256sum is not on PATH") }
        let started = monotonicSeconds()
        let child = try ChildProcess.run(tool, [file.path], timeoutSeconds: timeoutSeconds)
        let seconds = monotonicSeconds() - started
        guard child.termination == .exited(0) else {
            throw BenchError("sha256sum \(file.path): \(child.termination.map { "\($0)" } ?? "?") \(child.stderrText.suffix(500))")
        }
        let printed = String(decoding: child.stdout.prefix(64), as: UTF8.self)
        guard printed == file.sha256.hexString else {
            throw BenchError("sha256sum printed \(printed), the file's SHA-256 is \(file.sha256.hexString)")
        }
        return seconds
    }

    /// The store's own durable put rate for `chunks` chunks of 4096 bytes: `shoal-bench store`
    /// (this executable) with only its group-committed put phase. Returns its
    /// `store-put-durable` fields.
    static func storePut(chunks: Int, scratchParent: String, timeoutSeconds: Double) throws -> [String: String] {
        let arguments = ["store", "--chunks", String(chunks), "--dir", scratchParent,
                         "--no-lmdb", "--skip-apply", "--skip-reads"]
        let child = try ChildProcess.run(Files.executablePath(), arguments, timeoutSeconds: timeoutSeconds)
        guard child.termination == .exited(0) else {
            throw BenchError("shoal-bench \(arguments.joined(separator: " ")): \(child.termination.map { "\($0)" } ?? "?")\n\(child.stderrText.suffix(1000))")
        }
        guard let put = child.stdoutLines.compactMap({ ResultLine.parse($0) }).first(where: { $0.name == "store-put-durable" }) else {
            throw BenchError("shoal-bench store printed no store-put-durable line")
        }
        return put.fields
    }

    /// `python3 torrent_transfer.py SIZE --seeders 2` from `peersDirectory`: its RESULT line
    /// (passed through to stdout) as fields, or nil with a note on stderr when the script or
    /// its libtorrent is missing.
    static func torrent2Seeders(peersDirectory: String, bytes: Int, timeoutSeconds: Double) throws -> [String: String]? {
        let script = peersDirectory + "/torrent_transfer.py"
        guard Files.exists(script) else {
            Output.note("# note: \(script) not found (pass --peers-dir, or --no-peer); the torrent comparison is skipped")
            return nil
        }
        guard let python = ChildProcess.which("python3") else {
            Output.note("# note: python3 not found; the torrent comparison is skipped")
            return nil
        }
        let probe = try ChildProcess.run(python, ["-c", "import libtorrent"], timeoutSeconds: 30)
        guard probe.termination == .exited(0) else {
            Output.note("# note: python3 cannot import libtorrent (run \(peersDirectory)/setup_deps.sh); the torrent comparison is skipped")
            return nil
        }
        let arguments = [script, String(bytes), "--seeders", "2", "--timeout", String(Int(timeoutSeconds))]
        Output.note("# python3 \(arguments.joined(separator: " "))")
        let child = try ChildProcess.run(python, arguments, timeoutSeconds: timeoutSeconds + 120)
        var fields: [String: String]?
        for line in child.stdoutLines {
            guard let parsed = ResultLine.parse(line) else { continue }
            Output.line(String(line))
            if parsed.name.hasPrefix("libtorrent_") { fields = parsed.fields }
        }
        guard child.termination == .exited(0), let fields, fields["MBps"].flatMap(Double.init) != nil else {
            throw BenchError("torrent_transfer.py ended with \(child.termination.map { "\($0)" } ?? "?") and no figure\n\(child.stderrText.suffix(1500))")
        }
        return fields
    }
}
