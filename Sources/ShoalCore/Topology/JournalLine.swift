/// One line of the supervisor's journal: `key=value` tokens separated by single spaces, the
/// first one `event=…`, for example
///
///     event=subscribe peer=3fa2c41b09d87e15 po=4 bins=3,4,5 reason=neighbour
///
/// Keys are lower-case ASCII letters, digits, `-` and `_`; values are non-empty and hold no
/// space or control character. A peer is written as the first 16 hex digits of its overlay,
/// bins as an ascending comma-separated list. Older journal entries are free text; they do not
/// parse, and `Filter` shows them only when it filters nothing.
public struct JournalLine: Sendable, Equatable {
    public struct Field: Sendable, Equatable {
        public var key: String
        public var value: String
        public init(key: String, value: String) { (self.key, self.value) = (key, value) }
    }

    public var event: String
    /// The tokens after `event=`, in order.
    public var fields: [Field]

    public init(event: String, fields: [Field] = []) {
        self.event = event
        self.fields = fields
    }

    public init(_ event: String, _ fields: KeyValuePairs<String, String>) {
        self.init(event: event, fields: fields.map { Field(key: $0.key, value: $0.value) })
    }

    /// The line's text. Keys and values must obey the format (they come from our own code).
    public var text: String {
        let tokens = [Field(key: "event", value: event)] + fields
        for t in tokens {
            precondition(Self.isKey(t.key) && Self.isValue(t.value), "not a journal token: \(t)")
        }
        return tokens.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    }

    /// Parses a line; nil when it is not in the format (free text, JSON, a stray space).
    public init?(parsing text: String) {
        var tokens: [Field] = []
        for token in text.split(separator: " ", omittingEmptySubsequences: false) {
            guard let eq = token.firstIndex(of: "=") else { return nil }
            let field = Field(key: String(token[..<eq]), value: String(token[token.index(after: eq)...]))
            guard Self.isKey(field.key), Self.isValue(field.value) else { return nil }
            tokens.append(field)
        }
        guard let first = tokens.first, first.key == "event" else { return nil }
        self.init(event: first.value, fields: Array(tokens.dropFirst()))
    }

    /// The value of the first token named `key`.
    public subscript(key: String) -> String? { key == "event" ? event : fields.first { $0.key == key }?.value }

    /// The bins the line names: its `bins=` list and its `bin=` value (a malformed number is skipped).
    public var bins: [Int] {
        var out: [Int] = []
        for f in fields where f.key == "bins" || f.key == "bin" {
            out += f.value.split(separator: ",").compactMap { Int($0) }
        }
        return out
    }

    public static func peerToken(_ overlay: OverlayAddress) -> String { String(overlay.hex.prefix(16)) }

    public static func binList(_ bins: [UInt8]) -> String { bins.map { String($0) }.joined(separator: ",") }

    private static func isKey(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.allSatisfy {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_")
        }
    }

    private static func isValue(_ s: String) -> Bool {
        !s.isEmpty && s.unicodeScalars.allSatisfy { $0.value > 0x20 && $0.value != 0x7f && !$0.properties.isWhitespace }
    }

    /// Which lines `lmdb-inspect journal` keeps. A line matches when every filter given
    /// matches; a line that does not parse matches only when no filter is given.
    public struct Filter: Sendable, Equatable {
        /// Hex digits (either case) the line's `peer=` starts with. A prefix longer than the
        /// line's 16 digits (a whole overlay) matches when it starts with them.
        public var peerPrefix: String?
        /// A bin the line's `bins=` list (or `bin=`) holds.
        public var bin: Int?
        /// The line's event, exactly.
        public var event: String?

        public init(peerPrefix: String? = nil, bin: Int? = nil, event: String? = nil) {
            (self.peerPrefix, self.bin, self.event) = (peerPrefix?.lowercased(), bin, event)
        }

        public var isEmpty: Bool { peerPrefix == nil && bin == nil && event == nil }

        public func matches(_ text: String) -> Bool {
            guard !isEmpty else { return true }
            guard let line = JournalLine(parsing: text) else { return false }
            if let event, line.event != event { return false }
            if let bin, !line.bins.contains(bin) { return false }
            if let peerPrefix {
                guard let peer = line["peer"]?.lowercased(),
                      peer.hasPrefix(peerPrefix) || (peer.count == 16 && peerPrefix.hasPrefix(peer)) else { return false }
            }
            return true
        }
    }
}
