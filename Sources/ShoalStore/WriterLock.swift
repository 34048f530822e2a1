import Locking

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

    /// Lock files (device, inode) this process holds. A `flock` is refused to a second open in
    /// this process too, but a refusal names only a pid, and this set tells "another open of
    /// ours" from "a child process that has not yet exec'd" (below).
    private static let heldHere = Locked<Set<FileID>>([])

    /// A fork copies every descriptor, and the copy holds the lock until the child execs and
    /// `O_CLOEXEC` closes it. A store closed and reopened while another thread spawns a process
    /// can meet that copy; it goes away within microseconds, so wait this long for it.
    static let inheritedCopyWaitMaxMs = 2000

    private struct FileID: Hashable { var device: UInt64; var inode: UInt64 }

    /// The locked descriptor and its file; fd -1 once released.
    private let held: Locked<(fd: Int32, file: FileID)>

    init(directory: String) throws(StoreError) {
        // Acquired before anything is stored: if this initializer threw with every property
        // set, `deinit` would run and close a descriptor that is not ours.
        let held = try WriterLock.acquire(directory + "/" + WriterLock.fileName, directory: directory)
        self.held = Locked(held)
    }

    deinit { release() }

    /// Unlocks (closes the file); later calls do nothing.
    func release() {
        held.withLock { held in
            guard held.fd >= 0 else { return }
            _ = WriterLock.heldHere.withLock { $0.remove(held.file) }
            close(held.fd)
            held.fd = -1
        }
    }

    /// Opens and locks `path`, and writes this process's pid into it for the message another
    /// open prints; the descriptor is closed again if the lock is refused.
    private static func acquire(_ path: String, directory: String) throws(StoreError) -> (fd: Int32, file: FileID) {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError.system("open(\(path))", errno: errno) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let code = errno
            close(fd)
            throw StoreError.system("fstat(\(path))", errno: code)
        }
        let file = FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
        let refusal: StoreError? = heldHere.withLock { held in
            if held.contains(file) { return inUse(directory, by: "this process (pid \(getpid()))") }
            var waitedMs = 0
            while flock(fd, LOCK_EX | LOCK_NB) != 0 {
                let code = errno
                if code == EINTR { continue }
                guard code == EWOULDBLOCK else { return StoreError.system("flock(\(path))", errno: code) }
                let holder = holderPID(fd)
                // Our pid in the file, yet no open of ours holds it: a forked child's copy.
                if holder == getpid() && waitedMs < inheritedCopyWaitMaxMs {
                    usleep(1000)
                    waitedMs += 1
                    continue
                }
                switch holder {
                case getpid(): return inUse(directory, by: "a child of this process (pid \(getpid()))")
                case let pid?: return inUse(directory, by: "process \(pid)")
                case nil: return inUse(directory, by: "another process")
                }
            }
            held.insert(file)
            return nil
        }
        if let refusal {
            close(fd)
            throw refusal
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress!, $0.count, 0) }
        return (fd, file)
    }

    private static func inUse(_ directory: String, by who: String) -> StoreError {
        StoreError(.inUse, "\(directory) is open for writing by \(who) (\(fileName) is locked); "
                   + "one writer at a time: stop the node, or wait for repair to finish")
    }

    /// The pid the holder wrote, if it has written it yet.
    private static func holderPID(_ fd: Int32) -> pid_t? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, $0.count, 0) }
        guard n > 0 else { return nil }
        return pid_t(String(decoding: buffer[..<n], as: UTF8.self).filter(\.isNumber))
    }
}
