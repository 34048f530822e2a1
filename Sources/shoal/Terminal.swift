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

    private static func write(fd: Int32, _ text: String) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                #if canImport(Glibc)
                Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                #else
                Darwin.write(fd, raw.baseAddress! + offset, raw.count - offset)
                #endif
            }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            offset += n
        }
    }
}
