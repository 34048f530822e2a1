#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A child process started with `posix_spawn`, its stdout and stderr read through pipes.
///
/// Everything is bounded by deadlines: `pump(until:)` reads until a moment, `wait(until:)`
/// SIGKILLs a child that has not exited by its deadline. Output kept is capped
/// (`outputBytesMax`), the oldest bytes of stderr going first.
final class ChildProcess {
    /// How a child ended.
    enum Termination: Equatable, CustomStringConvertible {
        case exited(Int32)
        case signalled(Int32)

        var description: String {
            switch self {
            case .exited(let code): return "exit \(code)"
            case .signalled(let signal): return "signal \(signal)"
            }
        }
    }

    /// At most this many bytes of stdout are kept (a child that prints more is a failure of
    /// the caller's bound, reported by `stdoutOverflowed`).
    static let outputBytesMax = 64 << 20
    /// At most this many bytes of stderr are kept: the tail.
    static let stderrBytesMax = 64 << 10

    let pid: pid_t
    let command: String
    private var stdoutFD: Int32
    private var stderrFD: Int32
    private(set) var stdout: [UInt8] = []
    private(set) var stderr: [UInt8] = []
    private(set) var stdoutOverflowed = false
    private(set) var termination: Termination?

    /// Starts `path` with `arguments` (argv[0] is `path`); stdin is /dev/null.
    init(_ path: String, _ arguments: [String]) throws {
        command = ([path] + arguments).joined(separator: " ")
        var outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0]
        guard pipe(&outPipe) == 0 else { throw BenchError("pipe: \(String(cString: strerror(errno)))") }
        guard pipe(&errPipe) == 0 else {
            close(outPipe[0]); close(outPipe[1])
            throw BenchError("pipe: \(String(cString: strerror(errno)))")
        }
        // Close-on-exec everywhere (Glibc's module does not export pipe2): the child gets the
        // write ends only as its fds 1 and 2, through dup2, which clears the flag on the copy.
        for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        // dup2 clears FD_CLOEXEC on the target: the child keeps fds 1 and 2 and nothing else.
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)

        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var child: pid_t = 0
        let rc = argv.withUnsafeBufferPointer { buffer in
            posix_spawn(&child, path, &actions, nil, buffer.baseAddress!, environ)
        }
        close(outPipe[1])
        close(errPipe[1])
        guard rc == 0 else {
            close(outPipe[0]); close(errPipe[0])
            throw BenchError("posix_spawn(\(path)): \(String(cString: strerror(rc)))")
        }
        pid = child
        stdoutFD = outPipe[0]
        stderrFD = errPipe[0]
    }

    deinit {
        if termination == nil {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        if stdoutFD >= 0 { close(stdoutFD) }
        if stderrFD >= 0 { close(stderrFD) }
    }

    /// True once both pipes reached end of file (the child and all its heirs closed them).
    var outputClosed: Bool { stdoutFD < 0 && stderrFD < 0 }

    /// Reads whatever the child writes until `deadline` (monotonic seconds) or until both pipes
    /// close. Returns true if they closed.
    @discardableResult
    func pump(until deadline: Double) -> Bool {
        while !outputClosed {
            let remaining = deadline - monotonicSeconds()
            if remaining <= 0 { return false }
            var fds: [pollfd] = []
            if stdoutFD >= 0 { fds.append(pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0)) }
            if stderrFD >= 0 { fds.append(pollfd(fd: stderrFD, events: Int16(POLLIN), revents: 0)) }
            let timeoutMs = Int32(min(1000, max(1, (remaining * 1000).rounded(.up))))
            let n = poll(&fds, nfds_t(fds.count), timeoutMs)
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            for entry in fds where entry.revents != 0 {
                readAvailable(entry.fd)
            }
        }
        return true
    }

    private func readAvailable(_ fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { return }
        if n <= 0 {
            close(fd)
            if fd == stdoutFD { stdoutFD = -1 } else { stderrFD = -1 }
            return
        }
        if fd == stdoutFD {
            if stdout.count + n <= ChildProcess.outputBytesMax {
                stdout.append(contentsOf: buffer[0..<n])
            } else {
                stdoutOverflowed = true
            }
        } else {
            stderr.append(contentsOf: buffer[0..<n])
            if stderr.count > ChildProcess.stderrBytesMax {
                stderr.removeFirst(stderr.count - ChildProcess.stderrBytesMax)
            }
        }
    }

    func signal(_ signal: Int32) {
        if termination == nil { kill(pid, signal) }
    }

    /// Waits for the child to exit, reading its output meanwhile, until `deadline`; then
    /// SIGKILLs it and reaps it. Returns how it ended and whether it ended by the deadline.
    @discardableResult
    func wait(until deadline: Double) -> (termination: Termination, inTime: Bool) {
        if let termination { return (termination, true) }
        while true {
            if let t = reap(block: false) {
                pump(until: min(deadline, monotonicSeconds() + 1))
                return (t, true)
            }
            if monotonicSeconds() >= deadline { break }
            if outputClosed {
                usleep(2_000)
            } else {
                pump(until: min(deadline, monotonicSeconds() + 0.01))
            }
        }
        kill(pid, SIGKILL)
        let t = reap(block: true)!
        pump(until: monotonicSeconds() + 1)
        return (t, false)
    }

    private func reap(block: Bool) -> Termination? {
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, block ? 0 : WNOHANG)
            if r == 0 { return nil }
            if r < 0 {
                if errno == EINTR { continue }
                // Not our child any more (cannot happen for a pid we spawned): treat as gone.
                termination = .exited(-1)
                return termination
            }
            break
        }
        // <sys/wait.h>: low 7 bits are the terminating signal, 0 for a normal exit.
        let signal = status & 0x7f
        termination = signal == 0 ? .exited((status >> 8) & 0xff) : .signalled(signal)
        return termination
    }

    /// Complete lines of stdout (a trailing line without a newline is left out: the child was
    /// cut off while writing it).
    var stdoutLines: [Substring] {
        let text = String(decoding: stdout, as: UTF8.self)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        lines.removeLast()  // what follows the last "\n": empty or an unfinished line
        return lines
    }

    var stderrText: String { String(decoding: stderr, as: UTF8.self) }

    /// Runs `path` to completion (at most `timeoutSeconds`) and returns it ended.
    static func run(_ path: String, _ arguments: [String], timeoutSeconds: Double) throws -> ChildProcess {
        let child = try ChildProcess(path, arguments)
        child.wait(until: monotonicSeconds() + timeoutSeconds)
        return child
    }

    /// Finds `name` in `$PATH`; nil if absent.
    static func which(_ name: String) -> String? {
        guard let raw = getenv("PATH") else { return nil }
        for dir in String(cString: raw).split(separator: ":") where !dir.isEmpty {
            let candidate = "\(dir)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }
}
