import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An exclusive `flock` on `STORE/writer.lock`, held by every writable `Store` from its open
/// until `close()`, so that two writers (a node and `lmdb-inspect repair`, two nodes, two
/// opens in one process) never write one store, whichever of them starts first.
///
/// LMDB itself lets processes write one environment in turn; the store does not: its writer
/// keeps state in memory (the landing index, a stopped writer after an I/O failure) that
/// another writer's commits would falsify, and repair must not change records under a node.
/// Read-only opens never take the lock, so the inspector works beside a live node. The lock
/// belongs to the open file description: the kernel drops it when the process dies, even by
/// `kill -9`, and a second open in the same process is refused like one in another process.
/// `flock` locks are apart from the POSIX record locks LMDB takes on `lock.mdb`.
final class WriterLock: Sendable {
    static let fileName = "writer.lock"

    /// The locked descriptor; -1 once released.
    private let fd: Mutex<Int32>

    init(directory: String) throws(StoreError) {
        // Acquired before anything is stored: if this initializer threw with every property
        // set, `deinit` would run and close a descriptor that is not ours.
        let fd = try WriterLock.acquire(directory + "/" + WriterLock.fileName, directory: directory)
        self.fd = Mutex(fd)
    }

    deinit { release() }

    /// Unlocks (closes the file); later calls do nothing.
    func release() {
        fd.withLock { fd in
            guard fd >= 0 else { return }
            close(fd)
            fd = -1
        }
    }

    /// Opens and locks `path`, and writes this process's pid into it for the message another
    /// open prints; the descriptor is closed again if the lock is refused.
    private static func acquire(_ path: String, directory: String) throws(StoreError) -> Int32 {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError.system("open(\(path))", errno: errno) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            let holder = code == EWOULDBLOCK ? holderPID(fd) : nil
            close(fd)
            guard code == EWOULDBLOCK else { throw StoreError.system("flock(\(path))", errno: code) }
            let who: String
            switch holder {
            case getpid(): who = "this process (pid \(getpid()))"
            case let pid?: who = "process \(pid)"
            case nil: who = "another process"
            }
            throw StoreError(.inUse, "\(directory) is open for writing by \(who) (\(fileName) is locked); "
                             + "one writer at a time: stop the node, or wait for repair to finish")
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress!, $0.count, 0) }
        return fd
    }

    /// The pid the holder wrote, if it has written it yet.
    private static func holderPID(_ fd: Int32) -> pid_t? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, $0.count, 0) }
        guard n > 0 else { return nil }
        return pid_t(String(decoding: buffer[..<n], as: UTF8.self).filter(\.isNumber))
    }
}
