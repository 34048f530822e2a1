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
final class SlotFile: @unchecked Sendable {
    let path: String
    let slotSize: Int
    private let fd: Int32
    let readOnly: Bool

    init(path: String, slotSize: Int, readOnly: Bool) throws(StoreError) {
        self.path = path
        self.slotSize = slotSize
        self.readOnly = readOnly
        let flags = readOnly ? O_RDONLY : (O_RDWR | O_CREAT)
        let fd = open(path, flags | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError.system("open(\(path))", errno: errno) }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Writes `payload` at the start of `slot`. Not durable until `sync()`.
    func write(slot: UInt64, payload: UnsafeRawBufferPointer) throws(StoreError) {
        precondition(payload.count <= slotSize, "payload larger than a slot")
        precondition(slot < slotsMax, "slot \(slot) beyond any file")
        let offset = off_t(slot) * off_t(slotSize)
        var done = 0
        while done < payload.count {
            let n = pwrite(fd, payload.baseAddress! + done, payload.count - done, offset + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw StoreError.system("pwrite(\(path), slot \(slot))", errno: errno)
            }
            done += n
        }
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

    /// Makes every write so far durable (`fdatasync`).
    func sync() throws(StoreError) {
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
