#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Unbuffered output: a line written here is on its way before the call returns, so a
/// supervisor waiting for the ready line sees it at once (no stdio buffer to flush).
enum Terminal {
    static func out(_ line: String) { write(fd: 1, line + "\n") }
    static func err(_ line: String) { write(fd: 2, line + "\n") }
    /// Text on stderr as is (a progress bar redrawn with "\r").
    static func errRaw(_ text: String) { write(fd: 2, text) }

    private static func write(fd: Int32, _ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { writeAll(fd: fd, $0) }
    }

    /// Writes all of `bytes` to `fd`, retrying short writes and EINTR; the errno of a failure.
    static func writeAll(fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32? {
        var offset = 0
        while offset < bytes.count {
            #if canImport(Glibc)
            let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            #else
            let n = Darwin.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            #endif
            if n < 0 && errno == EINTR { continue }
            if n < 0 { return errno }
            if n == 0 { return EIO }
            offset += n
        }
        return nil
    }
}
