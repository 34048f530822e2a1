/// Why bytes from a peer (or a message about to be sent) are not a valid frame.
///
/// Every decode failure is one of these: the decoder never traps on input. The shell that owns
/// the connection turns it into a peer fault (drop and score down); `code` says what kind of
/// fault, `message` names the message type, the field and the numbers involved.
public struct WireError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, CaseIterable {
        /// The length field announces more than `ProtocolLimits.frameBytesMax` in all, or more
        /// than the largest valid frame of its message type. Raised as soon as the header bytes
        /// are seen, before the rest is buffered.
        case frameTooLarge
        /// The length field is below 2: no room for the version and type bytes.
        case frameTooShort
        /// The payload ends inside a fixed-size field, or the stream ended inside a frame.
        case truncated
        /// The version byte is not `WireFormat.version`.
        case unsupportedVersion
        /// The type byte names no message of this protocol version.
        case unknownType
        /// The payload holds bytes after the message's last field.
        case trailingBytes
        /// A list count is outside its bounds (e.g. 129 addresses in an offer, 0 chunks in a delivery).
        case countOutOfRange
        /// A count or length prefix needs more bytes than the payload has left.
        case countExceedsPayload
        /// A string is longer than its limit (or empty where it may not be).
        case textLengthOutOfRange
        /// A string is not valid UTF-8.
        case invalidUTF8
        /// A chunk whose payload is not 1…4096 bytes.
        case invalidChunkSize
        /// An enum field (`StreamError.Code`, `Goodbye.Reason`, `Refusal.Code`) holds an unknown raw value.
        case unknownEnumValue
        /// A bin above 31.
        case invalidBin
        /// Any other field outside its domain: a flag or outcome byte, a range with `from > to`,
        /// a limit of 0, hops above their bound, or (when encoding) a key, nonce or signature
        /// of the wrong size.
        case invalidValue
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
