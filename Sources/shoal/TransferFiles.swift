#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What `shoal upload` reads: a file, or stdin (`-`). A regular file (also stdin redirected
/// from one) has a known length and goes with `Content-Length`; a pipe or terminal does not
/// and goes chunked.
struct UploadInput {
    let fd: Int32
    /// Bytes left to read, when known.
    let length: UInt64?
    /// Whether `fd` is ours to close (not stdin).
    let owned: Bool
    let name: String

    static func open(_ path: String) throws(CommandFailure) -> UploadInput {
        if path == "-" { return try describe(fd: 0, owned: false, name: "standard input") }
        let fd = sysOpen(path, O_RDONLY)
        guard fd >= 0 else { throw CommandFailure(CLIExit.localIO, "cannot open \(path): \(String(cString: strerror(errno)))") }
        do {
            return try describe(fd: fd, owned: true, name: path)
        } catch {
            _ = sysClose(fd)
            throw error
        }
    }

    private static func describe(fd: Int32, owned: Bool, name: String) throws(CommandFailure) -> UploadInput {
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw CommandFailure(CLIExit.localIO, "cannot stat \(name): \(String(cString: strerror(errno)))")
        }
        let type = info.st_mode & S_IFMT
        if type == S_IFDIR { throw CommandFailure(CLIExit.localIO, "\(name) is a directory") }
        guard type == S_IFREG else { return UploadInput(fd: fd, length: nil, owned: owned, name: name) }
        // Stdin redirected from a file may have been read partly already: send what is left.
        let offset = lseek(fd, 0, SEEK_CUR)
        let size = UInt64(max(0, info.st_size))
        let position = offset > 0 ? UInt64(offset) : 0
        return UploadInput(fd: fd, length: size > position ? size - position : 0, owned: owned, name: name)
    }

    func close() {
        if owned { _ = sysClose(fd) }
    }
}

/// Where `shoal download` writes: stdout, or a file written whole or not at all. The file is
/// written as a temporary sibling (`.NAME.shoal-PID.part`, mode 0600 until done), flushed and
/// renamed over `NAME` only when the transfer is complete; any failure removes it, and so does
/// SIGINT, SIGTERM or SIGHUP during the transfer.
final class DownloadOutput {
    private let fd: Int32
    /// The final path; nil for stdout.
    private let path: String?
    private let temporaryPath: String?
    private var finished = false

    /// Standard output.
    init() {
        fd = 1
        path = nil
        temporaryPath = nil
    }

    /// A temporary file beside `path`, renamed to it by `commit()`.
    init(path: String) throws(CommandFailure) {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[...$0]) } ?? ""
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        guard !name.isEmpty, name != ".", name != ".." else {
            throw CommandFailure(CLIExit.usage, "-o \(path): not a file name")
        }
        let temporary = "\(directory).\(name).shoal-\(getpid()).part"
        TemporaryFileCleanup.register(temporary)
        let fd = sysOpen(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else {
            let message = String(cString: strerror(errno))
            TemporaryFileCleanup.clear()
            throw CommandFailure(CLIExit.localIO, "cannot create \(temporary): \(message)")
        }
        self.fd = fd
        self.path = path
        temporaryPath = temporary
    }

    deinit { if !finished { discard() } }

    private var name: String { path ?? "standard output" }

    func write(_ bytes: UnsafeRawBufferPointer) throws(HTTPClientError) {
        if let code = Terminal.writeAll(fd: fd, bytes) {
            throw .output("cannot write to \(name): \(String(cString: strerror(code)))")
        }
    }

    /// The download is complete: the file is flushed and takes its name (mode 0666 less the
    /// umask, as any new file). A failure removes the temporary file.
    func commit() throws(CommandFailure) {
        finished = true
        guard let path, let temporaryPath else { return }
        defer { TemporaryFileCleanup.clear() }
        let mask = umask(0)
        umask(mask)
        var failure: String?
        if fchmod(fd, 0o666 & ~mask) != 0 || fsync(fd) != 0 {
            failure = "cannot write \(temporaryPath): \(String(cString: strerror(errno)))"
        }
        if sysClose(fd) != 0 && failure == nil {
            failure = "cannot write \(temporaryPath): \(String(cString: strerror(errno)))"
        }
        if failure == nil && rename(temporaryPath, path) != 0 {
            failure = "cannot rename \(temporaryPath) to \(path): \(String(cString: strerror(errno)))"
        }
        if let failure {
            unlink(temporaryPath)
            throw CommandFailure(CLIExit.localIO, failure)
        }
    }

    /// The download failed: the temporary file goes, `path` is untouched.
    func discard() {
        guard !finished else { return }
        finished = true
        guard let temporaryPath else { return }
        _ = sysClose(fd)
        unlink(temporaryPath)
        TemporaryFileCleanup.clear()
    }
}

/// The one temporary file a download has open, removed by a signal handler if the process is
/// interrupted. The path lives in C memory so the handler touches nothing but `unlink`.
enum TemporaryFileCleanup {
    nonisolated(unsafe) private static var path: UnsafeMutablePointer<CChar>?
    nonisolated(unsafe) private static var installed = false

    static func register(_ temporary: String) {
        clear()
        path = strdup(temporary)
        guard !installed else { return }
        installed = true
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal(sig) { received in
                if let path = TemporaryFileCleanup.path { unlink(path) }
                signal(received, SIG_DFL)
                raise(received)
            }
        }
    }

    static func clear() {
        if let old = path {
            path = nil
            free(old)
        }
    }
}

#if canImport(Glibc)
private func sysOpen(_ path: String, _ flags: Int32, _ mode: mode_t = 0) -> Int32 { Glibc.open(path, flags, mode) }
private func sysClose(_ fd: Int32) -> Int32 { Glibc.close(fd) }
#else
private func sysOpen(_ path: String, _ flags: Int32, _ mode: mode_t = 0) -> Int32 { Darwin.open(path, flags, mode) }
private func sysClose(_ fd: Int32) -> Int32 { Darwin.close(fd) }
#endif
