import ShoalAPI
import Testing

struct ByteRangeTests {
    @Test(arguments: [
        ("bytes=0-99", 1000, ByteRangeRequest.satisfiable(0..<100)),
        ("bytes=0-0", 1000, .satisfiable(0..<1)),
        ("bytes=500-", 1000, .satisfiable(500..<1000)),
        ("bytes=990-5000", 1000, .satisfiable(990..<1000)),
        ("bytes=999-999", 1000, .satisfiable(999..<1000)),
        ("bytes=-100", 1000, .satisfiable(900..<1000)),
        ("bytes=-5000", 1000, .satisfiable(0..<1000)),
        (" bytes= 10 - 19 ", 1000, .satisfiable(10..<20)),
        ("BYTES=1-2", 1000, .satisfiable(1..<3)),
        ("bytes=0-18446744073709551615", 1000, .satisfiable(0..<1000)),
        ("bytes=1000-", 1000, .unsatisfiable),
        ("bytes=1000-2000", 1000, .unsatisfiable),
        ("bytes=-0", 1000, .unsatisfiable),
        ("bytes=0-", 0, .unsatisfiable),
        ("bytes=-1", 0, .unsatisfiable),
        ("bytes=0-1,5-6", 1000, .multipleRanges),
    ] as [(String, UInt64, ByteRangeRequest)])
    func rangesResolveAgainstTheSize(header: String, size: UInt64, expected: ByteRangeRequest) {
        #expect(ByteRangeRequest(header: header, size: size) == expected)
    }

    @Test(arguments: ["items=0-1", "bytes=", "bytes=-", "bytes=5", "bytes=a-b", "bytes=5-4", "bytes=+1-2",
                      "bytes=0x10-", "bytes=99999999999999999999999-", "bytes=1-2-3", ""])
    func malformedRangesAreRefused(header: String) {
        guard case .malformed = ByteRangeRequest(header: header, size: 1000) else {
            Issue.record("'\(header)' should be malformed, got \(ByteRangeRequest(header: header, size: 1000))")
            return
        }
    }
}
