/// A `Range` request header (RFC 9110 §14) for one byte range, resolved against a file's size.
///
/// One range per request: a list of several is refused (`multipleRanges`) rather than answered
/// with a multipart body. A header of another unit or a malformed one is `malformed`; a range
/// that starts at or past the end (or a suffix of 0 bytes) is `unsatisfiable` (416).
public enum ByteRangeRequest: Equatable, Sendable {
    /// Bytes `range` of the file (never empty, within the file).
    case satisfiable(Range<UInt64>)
    case unsatisfiable
    case malformed(String)
    case multipleRanges

    /// Parses `header` (e.g. `bytes=0-99`, `bytes=100-`, `bytes=-500`) for a file of `size` bytes.
    public init(header: String, size: UInt64) {
        let trimmed = header.trimmingSpaces
        guard trimmed.lowercased().hasPrefix("bytes=") else {
            self = .malformed("Range must be 'bytes=FIRST-LAST', 'bytes=FIRST-' or 'bytes=-SUFFIX'")
            return
        }
        let spec = trimmed.dropFirst("bytes=".count).trimmingSpaces
        if spec.contains(",") {
            self = .multipleRanges
            return
        }
        guard let dash = spec.firstIndex(of: "-") else {
            self = .malformed("Range '\(spec)' has no '-'")
            return
        }
        let first = String(spec[..<dash]).trimmingSpaces
        let last = String(spec[spec.index(after: dash)...]).trimmingSpaces
        func number(_ s: String) -> UInt64? {
            guard !s.isEmpty, s.utf8.count <= 20, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            return UInt64(s)
        }
        switch (first.isEmpty, last.isEmpty) {
        case (true, true):
            self = .malformed("Range '\(spec)' names no bytes")
        case (true, false):
            // The last `n` bytes.
            guard let n = number(last) else { self = .malformed("Range suffix '\(last)' is not a number"); return }
            guard n > 0, size > 0 else { self = .unsatisfiable; return }
            self = .satisfiable((size - min(n, size))..<size)
        case (false, _):
            guard let a = number(first) else { self = .malformed("Range start '\(first)' is not a number"); return }
            var end = size  // exclusive
            if !last.isEmpty {
                guard let b = number(last) else { self = .malformed("Range end '\(last)' is not a number"); return }
                guard b >= a else { self = .malformed("Range end \(b) is before its start \(a)"); return }
                end = b == .max ? size : min(b + 1, size)
            }
            guard a < size else { self = .unsatisfiable; return }
            self = .satisfiable(a..<end)
        }
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        String(drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
    }
}
