import Foundation
import ShoalCore

/// Everything the inspector prints goes through here: text or one JSON document on stdout,
/// one-line errors on stderr.
enum Output {
    private static func encoder(pretty: Bool) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                                          : [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    static func encode(_ value: some Encodable, pretty: Bool = true) -> String {
        do {
            return String(decoding: try encoder(pretty: pretty).encode(value), as: UTF8.self)
        } catch {
            // Our own report types always encode; a failure here is a bug in this tool.
            preconditionFailure("cannot encode \(type(of: value)) as JSON: \(error)")
        }
    }

    /// Prints `value` as the command's one JSON document.
    static func json(_ value: some Encodable) {
        line(encode(value))
    }

    static func line(_ text: String = "") {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }

    static func error(_ text: String) {
        FileHandle.standardError.write(Data(("lmdb-inspect: " + text + "\n").utf8))
    }
}

/// A listing that may be long (chunks, fetch set, …), written entry by entry so memory stays
/// bounded: text rows, or a JSON object whose first member is an array of entries and whose
/// later members (count, truncated, …) are known only at the end.
///
/// Output is held back until `flushBytes` have gathered, so a listing that fails part-way
/// usually prints nothing but the error. One that fails after output has gone out is closed
/// with an `"error"` member (`abandon`), so stdout still holds one JSON document.
final class Listing {
    let json: Bool
    private(set) var count = 0
    private var buffer = ""
    private var wroteAny = false
    private static let flushBytes = 4 << 20

    /// The listing being written, if any: a failure must finish it rather than start a new
    /// document. The inspector is single-threaded.
    nonisolated(unsafe) static var active: Listing?

    init(json: Bool, arrayKey: String, textHeader: String?) {
        self.json = json
        if json {
            buffer += "{\n  \"\(arrayKey)\" : ["
        } else if let textHeader {
            buffer += textHeader + "\n"
        }
        Listing.active = self
    }

    func add(_ entry: some Encodable, text: @autoclosure () -> String) {
        if json {
            buffer += (count == 0 ? "\n    " : ",\n    ") + Output.encode(entry, pretty: false)
        } else {
            buffer += text() + "\n"
        }
        count += 1
        if buffer.utf8.count >= Self.flushBytes { flushBuffer() }
    }

    /// Closes the document. `trailer`'s members follow the array in JSON; `textFooter` ends
    /// the text listing.
    func finish(trailer: some Encodable, textFooter: String?) {
        if json {
            buffer += (count == 0 ? "]" : "\n  ]")
            // Splice the trailer object's members into ours: pretty-printed, its members are
            // already indented as ours are.
            let members = Output.encode(trailer).trimmingCharacters(in: .whitespacesAndNewlines)
            let inner = members.dropFirst().dropLast().trimmingCharacters(in: .whitespacesAndNewlines)
            if !inner.isEmpty { buffer += ",\n  " + inner }
            buffer += "\n}\n"
        } else if let textFooter {
            buffer += textFooter + "\n"
        }
        flushBuffer()
        Listing.active = nil
    }

    /// Ends a listing that failed. Returns false when nothing was written yet: the caller
    /// then prints the error as its own document.
    func abandon(error: some Encodable) -> Bool {
        Listing.active = nil
        guard wroteAny else {
            buffer = ""
            return false
        }
        if json {
            buffer += (count == 0 ? "]" : "\n  ]") + ",\n  \"error\" : " + Output.encode(error, pretty: false) + "\n}\n"
        }
        flushBuffer()
        return true
    }

    private func flushBuffer() {
        FileHandle.standardOutput.write(Data(buffer.utf8))
        buffer = ""
        wroteAny = true
    }
}

/// What a listing says after its entries.
struct ListingTrailer: Encodable {
    var count: Int
    /// More entries exist than were printed (raise `--limit`, or `--limit 0` for all).
    var truncated: Bool
    /// The LMDB snapshot the listing was read from.
    var snapshotTransactionID: Int
}

enum Format {
    /// Milliseconds since 1970 as ISO 8601 UTC, or nil for 0 ("never").
    static func time(ms: UInt64) -> String? {
        guard ms > 0 else { return nil }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
    }

    static func timeText(ms: UInt64) -> String { time(ms: ms) ?? "never" }

    /// 1536 → "1.5 KiB".
    static func bytes(_ n: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(n)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(n) B" : String(format: "%.1f %@", value, units[unit])
    }

    static func bytes(_ n: Int) -> String { bytes(UInt64(max(0, n))) }

    static func ratio(_ x: Double?) -> String {
        guard let x else { return "n/a" }
        return String(format: "%.2f×", x)
    }

    static func percent(_ part: Int, of whole: Int) -> String {
        guard whole > 0 else { return "n/a" }
        return String(format: "%.1f%%", 100 * Double(part) / Double(whole))
    }

    /// "1 chunk", "2 chunks", "0 fetch entries".
    static func count(_ n: some BinaryInteger, _ singular: String, _ plural: String? = nil) -> String {
        "\(n) \(n == 1 ? singular : plural ?? singular + "s")"
    }

    /// The footer of a text listing.
    static func listed(_ n: Int, truncated: Bool, _ singular: String, _ plural: String? = nil) -> String {
        truncated ? count(n, singular, plural) + " listed; more follow (raise --limit, or --limit 0 for all)"
                  : count(n, singular, plural)
    }

    static func pad(_ s: String, _ width: Int) -> String {
        s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
    }

    static func padLeft(_ s: String, _ width: Int) -> String {
        s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
    }

    static func padLeft(_ n: some BinaryInteger, _ width: Int) -> String { padLeft(String(n), width) }

    static func hex(_ bytes: some Sequence<UInt8>) -> String { bytes.hexEncoded }

    /// `hexdump -C` layout: offset, sixteen bytes in hex, the printable ones as text.
    static func hexDump(_ bytes: [UInt8]) -> String {
        var lines: [String] = []
        var offset = 0
        while offset < bytes.count {
            let row = bytes[offset..<min(offset + 16, bytes.count)]
            var hexPart = ""
            for (i, b) in row.enumerated() {
                hexPart += hex([b]) + (i == 7 ? "  " : " ")
            }
            let text = String(row.map { (0x20...0x7e).contains($0) ? Character(UnicodeScalar($0)) : "." })
            lines.append(String(format: "%08x  ", offset) + pad(hexPart, 49) + " |" + text + "|")
            offset += 16
        }
        lines.append(String(format: "%08x", bytes.count))
        return lines.joined(separator: "\n")
    }
}
