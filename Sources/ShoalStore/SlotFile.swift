import LMDB

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The payloads of chunks, in fixed-size slots of a file beside the LMDB environment.
///
/// Slot `i` occupies bytes `[i × slotSize, (i + 1) × slotSize)`. The file knows nothing of which
/// slot is used: `chunks` records point into it, and `meta.slots_next` plus the `slots` free list
/// account for every slot. A payload is written and `fdatasync`ed before the transaction that
/// points to its slot commits (see `Store.apply`).
///
/// Writes are staged: `write` copies the payload into an aligned buffer, and runs of adjacent
/// slots go to the disk in one `pwrite` when the buffer fills, a run breaks, or `sync` is called.
/// Where the file system allows it, that `pwrite` uses `O_DIRECT`, so payloads do not pass
/// through the page cache (decision 0010: on this machine a buffered 4 KiB write cost more CPU
/// than the whole LMDB transaction). Reads use a second, buffered descriptor.
///
/// Not thread-safe for writing: only the one write transaction that is running stages payloads
/// (LMDB admits one writer at a time).
final class SlotFile: @unchecked Sendable {
    let path: String
    let slotSize: Int
    let readOnly: Bool
    /// Buffered descriptor for reads (and writes where `O_DIRECT` is refused).
    private let fd: Int32
    /// Descriptor the staged runs are written through: `O_DIRECT` when `direct`.
    private let writeFD: Int32
    /// True when staged runs bypass the page cache.
    let direct: Bool
    /// Staging buffer of `stagingSlots` slots, aligned for `O_DIRECT`.
    private var staging: UnsafeMutableRawPointer?
    private let stagingSlots: Int
    /// The run staged so far: `stagedCount` slots starting at `stagedFirst`.
    private var stagedFirst: UInt64 = 0
    private var stagedCount = 0

    init(path: String, slotSize: Int, readOnly: Bool, stagingBytes: Int = 4 << 20) throws(StoreError) {
        self.path = path
        self.slotSize = slotSize
        self.readOnly = readOnly
        let flags = readOnly ? O_RDONLY : (O_RDWR | O_CREAT)
        let fd = open(path, flags | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError.system("open(\(path))", errno: errno) }
        self.fd = fd
        stagingSlots = max(1, stagingBytes / slotSize)
        if readOnly {
            writeFD = -1
            direct = false
            return
        }
        // O_DIRECT needs block-aligned offsets and lengths; a slot size that is not a multiple
        // of 4096, or a file system that refuses the flag (tmpfs), falls back to buffered writes.
        let directFD = slotSize % SlotFile.directAlignment == 0 && SlotFile.directFlag != 0
            ? open(path, O_WRONLY | SlotFile.directFlag | O_CLOEXEC) : -1
        writeFD = directFD >= 0 ? directFD : fd
        direct = directFD >= 0
    }

    deinit {
        if direct { close(writeFD) }
        close(fd)
        staging?.deallocate()
    }

    static let directAlignment = 4096

    /// `O_DIRECT`, which Glibc's Swift overlay does not export (it needs `_GNU_SOURCE`).
    static var directFlag: Int32 {
        #if os(Linux) && (arch(arm64) || arch(arm))
        return 0o200000
        #elseif os(Linux)
        return 0o40000
        #else
        return 0
        #endif
    }

    /// Stages `payload` for the start of `slot` (the rest of the slot is zeroed). Not on disk
    /// until `sync()`; a read before that does not see it.
    func write(slot: UInt64, payload: UnsafeRawBufferPointer) throws(StoreError) {
        precondition(payload.count <= slotSize, "payload larger than a slot")
        precondition(slot < slotsMax, "slot \(slot) beyond any file")
        if stagedCount > 0 && (slot != stagedFirst + UInt64(stagedCount) || stagedCount == stagingSlots) {
            try flush()
        }
        if staging == nil { staging = SlotFile.allocateStaging(bytes: stagingSlots * slotSize) }
        if stagedCount == 0 { stagedFirst = slot }
        let target = staging! + stagedCount * slotSize
        if let base = payload.baseAddress, payload.count > 0 { target.copyMemory(from: base, byteCount: payload.count) }
        if payload.count < slotSize { (target + payload.count).initializeMemory(as: UInt8.self, repeating: 0, count: slotSize - payload.count) }
        stagedCount += 1
    }

    /// An aligned staging buffer, backed by huge pages where the kernel gives them: an
    /// `O_DIRECT` write pins every page of its buffer, and pinning 4 KiB pages one by one
    /// (`gup_fast_fallback`) was most of the CPU a 4 MiB direct write cost.
    private static func allocateStaging(bytes: Int) -> UnsafeMutableRawPointer {
        let hugePage = 2 << 20
        let alignment = bytes >= hugePage ? hugePage : directAlignment
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: alignment)
        #if os(Linux)
        if alignment == hugePage { _ = madvise(buffer, bytes, 14 /* MADV_HUGEPAGE */) }
        #endif
        return buffer
    }

    /// Drops what is staged and not yet written (the transaction that staged it is being retried).
    func discardStaged() { stagedCount = 0 }

    /// Writes the staged run.
    private func flush() throws(StoreError) {
        guard stagedCount > 0, let staging else { return }
        let bytes = stagedCount * slotSize
        let offset = off_t(stagedFirst) * off_t(slotSize)
        var done = 0
        while done < bytes {
            let n: Int
            if let code = _Failpoints.fault(.pwrite, path: path) {
                errno = code
                n = -1
            } else {
                n = pwrite(writeFD, staging + done, bytes - done, offset + off_t(done))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw StoreError.system("pwrite(\(path), slots \(stagedFirst)…\(stagedFirst + UInt64(stagedCount) - 1))", errno: errno)
            }
            done += n
        }
        stagedCount = 0
    }

    /// Reads `length` bytes of `slot` into `buffer`; fails if the file ends first.
    func read(slot: UInt64, length: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) {
        precondition(length <= buffer.count && length <= slotSize)
        // A slot number comes from disk and may be damaged: it must not overflow the offset.
        guard slot < slotsMax else { throw StoreError.slotMissing(slot: slot, fileBytes: fileSize()) }
        let offset = off_t(slot) * off_t(slotSize)
        var done = 0
        while done < length {
            let n = pread(fd, buffer.baseAddress! + done, length - done, offset + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw StoreError.system("pread(\(path), slot \(slot))", errno: errno)
            }
            if n == 0 { throw StoreError.slotMissing(slot: slot, fileBytes: fileSize()) }
            done += n
        }
    }

    func read(slot: UInt64, length: Int) throws(StoreError) -> [UInt8] {
        var failure: StoreError?
        let bytes = [UInt8](unsafeUninitializedCapacity: length) { buffer, count in
            do throws(StoreError) {
                try read(slot: slot, length: length, into: UnsafeMutableRawBufferPointer(buffer))
                count = length
            } catch {
                failure = error
                count = 0
            }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Writes what is staged and makes every write so far durable (`fdatasync`).
    func sync() throws(StoreError) {
        try flush()
        if let code = _Failpoints.fault(.fdatasync, path: path) {
            throw StoreError.system("fdatasync(\(path))", errno: code)
        }
        guard fdatasync(fd) == 0 else { throw StoreError.system("fdatasync(\(path))", errno: errno) }
    }

    /// Slot numbers whose byte offset fits in `off_t`.
    var slotsMax: UInt64 { UInt64(off_t.max) / UInt64(slotSize) }

    func fileSize() -> UInt64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return 0 }
        return UInt64(st.st_size)
    }

    /// Bytes the file occupies on disk (it may be sparse).
    func allocatedBytes() -> UInt64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return 0 }
        return UInt64(st.st_blocks) * 512
    }

    /// Shrinks the file to `slots` slots (used by repair and compaction only).
    func truncate(slots: UInt64) throws(StoreError) {
        guard ftruncate(fd, off_t(slots) * off_t(slotSize)) == 0 else {
            throw StoreError.system("ftruncate(\(path))", errno: errno)
        }
    }
}
