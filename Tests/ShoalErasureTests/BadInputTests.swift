import Testing
@testable import ShoalErasure

/// Every malformed call is an `ErasureError` saying what is wrong, never a crash.
struct BadInputTests {
    @Test(arguments: [
        (0, 4, "data shards must be at least 1, got 0"),
        (-1, 0, "data shards must be at least 1, got -1"),
        (4, -1, "parity shards must be at least 0, got -1"),
        (200, 57, "data + parity shards must be at most 256, got 200 + 57"),
        (Int.max, 1, "data + parity shards must be at most 256, got \(Int.max) + 1"),
    ])
    func impossibleShapesAreRefused(k: Int, m: Int, message: String) {
        #expect(throws: ErasureError.invalidParameters(message)) { try ReedSolomon(dataShards: k, parityShards: m) }
    }

    @Test(arguments: [(1, 0), (1, 255), (128, 128), (255, 1)])
    func theLargestShapesAreAccepted(k: Int, m: Int) throws {
        let code = try ReedSolomon(dataShards: k, parityShards: m)
        #expect(code.totalShards == k + m)
    }

    @Test func encodeChecksItsShards() throws {
        let code = try ReedSolomon(dataShards: 3, parityShards: 2)
        let good: [[UInt8]] = [[1, 2], [3, 4], [5, 6]]
        #expect(throws: ErasureError.shardSize("data shard 1 has 1 bytes, expected 2")) {
            try code.encode([[1, 2], [3], [5, 6]], shardSize: 2)
        }
        #expect(throws: ErasureError.invalidParameters("expected 3 data shards, got 2")) {
            try code.encode(Array(good.prefix(2)), shardSize: 2)
        }
        #expect(throws: ErasureError.shardSize("shard size must be in 0...2147483647, got -1")) {
            try code.encode(good, shardSize: -1)
        }
        #expect(throws: ErasureError.shardSize("data shard 0 has 2 bytes, expected 3")) {
            try code.encode(good, shardSize: 3)
        }
    }

    @Test func reconstructChecksItsShards() throws {
        let code = try ReedSolomon(dataShards: 3, parityShards: 2)
        let data: [[UInt8]] = [[1, 2], [3, 4], [5, 6]]
        let shards: [[UInt8]?] = data + (try code.encode(data, shardSize: 2))
        #expect(throws: ErasureError.invalidParameters("expected 5 shards (3 data + 2 parity), got 4")) {
            try code.reconstructData(Array(shards.prefix(4)), shardSize: 2)
        }
        var short = shards
        short[0] = nil
        short[4] = [9]
        #expect(throws: ErasureError.shardSize("shard 4 has 1 bytes, expected 2")) {
            try code.reconstructData(short, shardSize: 2)
        }
        #expect(throws: ErasureError.tooFewShards(present: 2, needed: 3)) {
            try code.reconstructData([nil, nil, nil] + Array(shards[3...]), shardSize: 2)
        }
    }

    @Test func fastPathsCheckTheirBuffers() throws {
        let code = try ReedSolomon(dataShards: 4, parityShards: 2)
        var buffer = [UInt8](repeating: 0, count: 6 * 8)
        try buffer.withUnsafeMutableBytes { raw in
            #expect(throws: ErasureError.shardSize("data buffer has 24 bytes, expected 4 × 8")) {
                try code.encode(shardSize: 8, data: UnsafeRawBufferPointer(rebasing: raw[0..<24]),
                                parity: UnsafeMutableRawBufferPointer(rebasing: raw[32..<48]))
            }
            #expect(throws: ErasureError.shardSize("parity buffer has 8 bytes, expected 2 × 8")) {
                try code.encode(shardSize: 8, data: UnsafeRawBufferPointer(rebasing: raw[0..<32]),
                                parity: UnsafeMutableRawBufferPointer(rebasing: raw[40..<48]))
            }
            #expect(throws: ErasureError.shardSize("shards buffer has 48 bytes, expected 6 × 9")) {
                try code.reconstructData(shardSize: 9, shards: raw, present: [Bool](repeating: true, count: 6))
            }
            #expect(throws: ErasureError.invalidParameters("expected 6 presence flags, got 5")) {
                try code.reconstructData(shardSize: 8, shards: raw, present: [Bool](repeating: true, count: 5))
            }
            #expect(throws: ErasureError.tooFewShards(present: 3, needed: 4)) {
                try code.reconstructData(shardSize: 8, shards: raw, present: [false, true, false, true, false, true])
            }
            #expect(throws: ErasureError.shardSize("shards buffer has 48 bytes, expected 6 × 2147483647")) {
                try code.reconstructData(shardSize: Int(Int32.max), shards: raw, present: [Bool](repeating: true, count: 6))
            }
            #expect(throws: ErasureError.shardSize("shard size must be in 0...2147483647, got \(Int.max)")) {
                try code.reconstructData(shardSize: Int.max, shards: raw, present: [Bool](repeating: true, count: 6))
            }
        }
    }

    @Test func errorsDescribeThemselves() {
        #expect(ErasureError.tooFewShards(present: 100, needed: 119).description
            == "too few shards to rebuild the data: 100 present, 119 needed")
        #expect(ErasureError.singularMatrix.description.contains("singular"))
    }
}
