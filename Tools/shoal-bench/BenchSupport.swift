import Locking
import ShoalCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: RESULT lines

/// One `RESULT name=<name> key=value …` line, the format of `/work/shared/peers`' scripts, so
/// that `summarize.py` can put Shoal's figures beside the peers'. Values never contain spaces.
struct ResultLine {
    let name: String
    private var fields: [(String, String)] = []

    init(_ name: String) { self.name = name }

    /// Adds `bytes`, `seconds` and the derived `MBps` (decimal megabytes per second).
    mutating func throughput(bytes: Int, seconds: Double) {
        add("bytes", bytes)
        add("seconds", seconds)
        if seconds > 0 { add("MBps", Double(bytes) / 1e6 / seconds) }
    }

    mutating func add(_ key: String, _ value: Int) { fields.append((key, String(value))) }
    mutating func add(_ key: String, _ value: UInt64) { fields.append((key, String(value))) }
    mutating func add(_ key: String, _ value: Double) { fields.append((key, ResultLine.format(value))) }
    mutating func add(_ key: String, _ value: String) {
        fields.append((key, String(value.map { $0 == " " ? "_" : $0 })))
    }

    var text: String {
        (["RESULT", "name=\(name)"] + fields.map { "\($0.0)=\($0.1)" }).joined(separator: " ")
    }

    /// Prints to stdout and flushes at once (stdout is a pipe when a harness reads it).
    func emit() { Output.line(text) }

    /// The number format of `_bench_common.fmt`: 4 significant digits for the very large or
    /// very small, 4 decimals below 10, one decimal above.
    static func format(_ v: Double) -> String {
        if !v.isFinite { return "nan" }
        let a = abs(v)
        if v != 0 && (a >= 1e7 || a < 1e-3) { return cFormat("%.4g", v) }
        return cFormat(a < 10 ? "%.4f" : "%.1f", v)
    }

    private static func cFormat(_ format: String, _ v: Double) -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        _ = withVaList([v]) { vsnprintf(&buffer, buffer.count, format, $0) }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Parses `RESULT name=x k=v …`; nil for any other line.
    static func parse(_ line: some StringProtocol) -> (name: String, fields: [String: String])? {
        let parts = line.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.first == "RESULT" else { return nil }
        var fields: [String: String] = [:]
        for part in parts.dropFirst() {
            guard let eq = part.firstIndex(of: "=") else { continue }
            fields[String(part[..<eq])] = String(part[part.index(after: eq)...])
        }
        guard let name = fields["name"] else { return nil }
        return (name, fields)
    }
}

/// Unbuffered, whole-line writes to stdout and stderr. Each line goes out in one `write(2)`, so
/// lines from concurrent tasks never interleave, and a line a killed process printed is either
/// whole in the pipe or absent.
enum Output {
    private static let lock = Locked(())

    static func line(_ text: String) { write(fd: 1, text + "\n") }
    static func note(_ text: String) { write(fd: 2, text + "\n") }

    private static func write(fd: Int32, _ text: String) {
        lock.withLock { _ in
            var bytes = Array(text.utf8)
            bytes.withUnsafeMutableBytes { raw in
                var done = 0
                while done < raw.count {
                    let n = Glibc.write(fd, raw.baseAddress! + done, raw.count - done)
                    if n < 0 {
                        if errno == EINTR { continue }
                        return
                    }
                    done += n
                }
            }
        }
    }
}

// MARK: Time

/// Monotonic wall time in seconds.
func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Times `body`; returns its result and the seconds it took.
func timed<R>(_ body: () throws -> R) rethrows -> (R, Double) {
    let start = monotonicSeconds()
    let result = try body()
    return (result, monotonicSeconds() - start)
}

func median(_ values: [Double]) -> Double {
    precondition(!values.isEmpty)
    let s = values.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

// MARK: Files

/// A failure of the bench itself (bad arguments, a missing tool, a check that failed).
struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

enum Files {
    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Bytes a file occupies on disk (`st_blocks × 512`, what `du` counts); 0 if absent.
    static func allocatedBytes(_ path: String) -> Int {
        var st = stat()
        guard stat(path, &st) == 0 else { return 0 }
        return Int(st.st_blocks) * 512
    }

    static func makeDirectory(_ path: String) throws {
        if mkdir(path, 0o700) != 0 && errno != EEXIST {
            throw BenchError("mkdir(\(path)): \(String(cString: strerror(errno)))")
        }
    }

    /// A fresh directory `<parent>/<prefix>-XXXXXX`.
    static func makeTemporaryDirectory(in parent: String, prefix: String) throws -> String {
        try makeDirectory(parent)
        var template = Array("\(parent)/\(prefix)-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw BenchError("mkdtemp(\(parent)): \(String(cString: strerror(errno)))")
        }
        return String(cString: made)
    }

    /// Removes `path` and everything below it (no symlinks are followed).
    static func removeTree(_ path: String) {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            if let dir = opendir(path) {
                var names: [String] = []
                while let entry = readdir(dir) {
                    let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                        String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                    }
                    if name != "." && name != ".." { names.append(name) }
                }
                closedir(dir)
                for name in names { removeTree(path + "/" + name) }
            }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    /// Where scratch stores go by default: `.tmp-bench/` in the working directory when it is a
    /// SwiftPM package (the repository's disk, git-ignored), else `/tmp`.
    static func defaultScratchParent() -> String {
        let cwd = currentDirectory()
        if exists(cwd + "/Package.swift") { return cwd + "/.tmp-bench" }
        return "/tmp"
    }

    static func currentDirectory() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard let cwd = getcwd(&buffer, buffer.count) else { return "." }
        return String(cString: cwd)
    }

    /// The absolute path of this executable (`/proc/self/exe`).
    static func executablePath() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return CommandLine.arguments[0] }
        return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Bytes written so far to the block device holding `path` (`/sys/dev/block/M:m/stat`,
    /// sectors written × 512): what reached the disk, whoever wrote it, so a figure is only
    /// meaningful on an otherwise quiet machine. 0 where the kernel does not say.
    /// (`/proc/self/io`'s `write_bytes` is no substitute: it charges whole folios when they are
    /// dirtied, which over-counts LMDB's scattered 4 KiB page writes on large-folio kernels.)
    static func deviceWrittenBytes(_ path: String) -> Int {
        var st = stat()
        guard stat(path, &st) == 0 else { return 0 }
        let dev = UInt64(st.st_dev)
        // glibc's gnu_dev_major / gnu_dev_minor.
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & ~UInt64(0xfff))
        let minor = (dev & 0xff) | ((dev >> 12) & ~UInt64(0xff))
        let fd = open("/sys/dev/block/\(major):\(minor)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return 0 }
        // Fields (Documentation/block/stat.rst): the 7th is sectors written.
        let fields = String(decoding: buffer[0..<n], as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard fields.count > 6, let sectors = Int(fields[6]) else { return 0 }
        return sectors * 512
    }

    /// Reads `path` from start to end (to bring it into the page cache); returns the bytes read.
    static func readThrough(_ path: String) -> Int {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var total = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return total }
            total += n
        }
    }

    /// Drops `path`'s pages from the page cache after making them durable, so the next read
    /// comes from the disk (`posix_fadvise(POSIX_FADV_DONTNEED)` evicts only clean pages).
    static func dropFromPageCache(_ path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        fsync(fd)
        posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED))
        close(fd)
    }
}

// MARK: Hex

extension Array where Element == UInt8 {
    var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(count * 2)
        for byte in self {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xf)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

// MARK: Seeds

/// Derives independent generator seeds from one seed and a path of numbers, so that any one
/// piece of a run (batch 17's chunk 3) can be regenerated without replaying the rest.
func derivedSeed(_ seed: UInt64, _ path: UInt64...) -> UInt64 {
    var g = SplitMix64(seed: seed)
    var s = g.next()
    for p in path {
        g = SplitMix64(seed: s ^ (p &* 0xD1B5_4A32_D192_ED03))
        s = g.next()
    }
    return s
}
