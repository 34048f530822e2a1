#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An exclusive `flock` on `DATA/shoal.lock`, held while a `Node` has the data directory open,
/// so that two nodes (two daemons, or a daemon and a host embedding the library) never write
/// one store. LMDB would let two processes write it in turn, but each node keeps in-memory
/// state about its store (claims, the landing index) that the other's writes would falsify.
/// The lock is per open file description, so it also refuses a second `Node` in the same process.
/// `flock` locks are apart from the POSIX record locks LMDB takes on `lock.mdb`, so neither
/// disturbs the other, and the kernel drops this one when the process dies, even by `kill -9`.
final class DataDirectoryLock: Sendable {
    private let fd: Int32

    init(directory: String) throws(DataDirectoryLockError) {
        // Every check happens before `fd` is set: a class whose initializer throws after all
        // its properties are set runs `deinit`, which would close the descriptor a second time
        // (by then perhaps another file's).
        fd = try DataDirectoryLock.acquire(directory + "/shoal.lock")
    }

    /// Opens and locks `path`; the descriptor is closed again if the lock is refused.
    private static func acquire(_ path: String) throws(DataDirectoryLockError) -> Int32 {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw DataDirectoryLockError(path: path, reason: String(cString: strerror(errno))) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let reason = errno == EWOULDBLOCK ? "in use by another shoal process\(holder(fd))"
                                              : String(cString: strerror(errno))
            close(fd)
            throw DataDirectoryLockError(path: path, reason: reason)
        }
        // The holder's pid, for the message another start prints.
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress!, $0.count, 0) }
        return fd
    }

    deinit { close(fd) }

    private static func holder(_ fd: Int32) -> String {
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, $0.count, 0) }
        guard n > 0, let pid = Int(String(decoding: buffer[..<n], as: UTF8.self).filter(\.isNumber)) else { return "" }
        return " (pid \(pid))"
    }
}

/// The data directory is locked by another node, or the lock file cannot be opened.
public struct DataDirectoryLockError: Error, Equatable, Sendable, CustomStringConvertible {
    public var path: String
    public var reason: String
    public var description: String { "\(path): \(reason)" }
}
