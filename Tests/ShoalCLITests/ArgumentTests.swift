@testable import shoal
import Testing

/// The client commands' own argument types: ranges and references.
struct ArgumentTests {
    @Test(arguments: [
        ("0-0", "bytes=0-0"), ("5-9", "bytes=5-9"), ("5-", "bytes=5-"), ("-7", "bytes=-7"),
        ("18446744073709551615-", "bytes=18446744073709551615-"),
    ])
    func aValidRangeBecomesItsHeader(_ text: String, _ header: String) throws {
        #expect(try #require(ByteRange(argument: text)).header == header)
    }

    @Test(arguments: ["", "-", "9-5", "-0", "a-b", "1-2-3", " 1-2", "1 -2", "+1-2", "18446744073709551616-", "0x1-2", "１-2"])
    func anInvalidRangeIsRefused(_ text: String) {
        #expect(ByteRange(argument: text) == nil)
    }

    @Test func aReferenceIs64HexDigitsAndIsSentInLowercase() throws {
        let upper = String(repeating: "AB", count: 32)
        #expect(try #require(Reference(argument: upper)).hex == String(repeating: "ab", count: 32))
        #expect(Reference(argument: String(repeating: "a", count: 63)) == nil)
        #expect(Reference(argument: String(repeating: "a", count: 65)) == nil)
        #expect(Reference(argument: String(repeating: "g", count: 64)) == nil)
        #expect(Reference(argument: "../" + String(repeating: "a", count: 61)) == nil)
    }
}
