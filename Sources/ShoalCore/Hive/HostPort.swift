/// A "host:port" listen address as a node advertises it (hello, hive), parsed strictly.
///
/// Accepted: a DNS name (labels of ASCII letters, digits, `-` and `_`, 1…63 bytes each, not
/// starting or ending with `-`, 253 bytes in all), a dotted IPv4 address (four decimal parts
/// 0…255, no leading zero), or an IPv6 address in brackets (no zone); then ":" and a port
/// 1…65535 without a leading zero. Nothing is repaired or normalised, so `description` gives
/// back exactly the text parsed, and `parse(hp.description) == hp`. A string from a peer is
/// never handed to a resolver or a dialer without passing here first: no spaces, no control
/// characters, no paths, no user parts, no second port.
public struct HostPort: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable {
        case name
        case ipv4
        case ipv6
    }

    /// The host as written, without the brackets of an IPv6 address.
    public let host: String
    public let port: UInt16
    public let kind: Kind

    /// A DNS name is at most 253 bytes (RFC 1035 §2.3.4, without the trailing dot).
    public static let hostBytesMax = 253
    /// One DNS label (RFC 1035 §2.3.4).
    public static let labelBytesMax = 63
    /// "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".
    public static let ipv6BytesMax = 45

    public var description: String {
        kind == .ipv6 ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// The address in `text`, or nil when it is not exactly one of the accepted forms.
    public static func parse(_ text: String) -> HostPort? {
        let bytes = Array(text.utf8)
        let hostBytes: ArraySlice<UInt8>
        let portBytes: ArraySlice<UInt8>
        let kind: Kind
        if bytes.first == UInt8(ascii: "[") {
            guard let close = bytes.firstIndex(of: UInt8(ascii: "]")), close + 1 < bytes.count,
                bytes[close + 1] == UInt8(ascii: ":")
            else { return nil }
            hostBytes = bytes[1..<close]
            portBytes = bytes[(close + 2)...]
            guard isIPv6(hostBytes) else { return nil }
            kind = .ipv6
        } else {
            guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else { return nil }
            hostBytes = bytes[..<colon]
            portBytes = bytes[(colon + 1)...]
            if isIPv4(hostBytes) {
                kind = .ipv4
            } else if isName(hostBytes) {
                kind = .name
            } else {
                return nil
            }
        }
        guard let port = parsePort(portBytes) else { return nil }
        return HostPort(host: String(decoding: hostBytes, as: UTF8.self), port: port, kind: kind)
    }

    private init(host: String, port: UInt16, kind: Kind) {
        (self.host, self.port, self.kind) = (host, port, kind)
    }

    // MARK: The parts

    private static func isDigit(_ b: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) }

    private static func isHexDigit(_ b: UInt8) -> Bool {
        isDigit(b) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(b) || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(b)
    }

    /// Decimal digits, no leading zero, value within `max`.
    private static func decimal(_ digits: ArraySlice<UInt8>, max: Int) -> Int? {
        guard !digits.isEmpty, digits.count <= 5, digits.allSatisfy(isDigit) else { return nil }
        guard digits.count == 1 || digits.first != UInt8(ascii: "0") else { return nil }
        let value = digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
        return value <= max ? value : nil
    }

    private static func parsePort(_ digits: ArraySlice<UInt8>) -> UInt16? {
        guard let port = decimal(digits, max: Int(UInt16.max)), port > 0 else { return nil }
        return UInt16(port)
    }

    private static func isIPv4(_ host: ArraySlice<UInt8>) -> Bool {
        let parts = host.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { decimal($0, max: 255) != nil }
    }

    /// A DNS name. A last label of digits only would make it look like a mistyped IPv4
    /// address ("10.0.1", "host.1"), which resolvers read in surprising ways; top-level
    /// domains are never numeric, so such a name is refused.
    private static func isName(_ host: ArraySlice<UInt8>) -> Bool {
        guard (1...hostBytesMax).contains(host.count) else { return false }
        let labels = host.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        for label in labels {
            guard (1...labelBytesMax).contains(label.count),
                label.first != UInt8(ascii: "-"), label.last != UInt8(ascii: "-"),
                label.allSatisfy({ isDigit($0) || isLetter($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") })
            else { return false }
        }
        return !(labels.last?.allSatisfy(isDigit) ?? true)
    }

    private static func isLetter(_ b: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(b)
    }

    /// An IPv6 address in text form (RFC 4291 §2.2): eight groups of 1…4 hex digits, or fewer
    /// around one "::", the last two groups optionally written as a dotted IPv4 address.
    private static func isIPv6(_ host: ArraySlice<UInt8>) -> Bool {
        guard (2...ipv6BytesMax).contains(host.count) else { return false }
        let text = Array(host)
        var elision: Int? = nil
        for i in 0..<(text.count - 1) where text[i] == UInt8(ascii: ":") && text[i + 1] == UInt8(ascii: ":") {
            guard elision == nil else { return false }  // a second "::", or ":::"
            elision = i
        }
        let sides: [ArraySlice<UInt8>] = elision.map { [text[..<$0], text[($0 + 2)...]] } ?? [text[...]]
        var groups = 0
        for (index, side) in sides.enumerated() where !side.isEmpty {
            let parts = side.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
            for (i, part) in parts.enumerated() {
                let isLast = index == sides.count - 1 && i == parts.count - 1
                if isLast && part.contains(UInt8(ascii: ".")) {
                    guard isIPv4(part) else { return false }
                    groups += 2
                } else {
                    guard (1...4).contains(part.count), part.allSatisfy(isHexDigit) else { return false }
                    groups += 1
                }
            }
        }
        return elision == nil ? groups == 8 : groups <= 7
    }
}
