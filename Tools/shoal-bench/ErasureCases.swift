import ShoalCore
import ShoalErasure

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One shape measured by `shoal-bench erasure`: a code, a shard size and the data shards lost.
struct ErasureCase {
    let name: String
    let dataShards: Int
    let parityShards: Int
    let shardSize: Int
    /// The data shards lost in the reconstruct run: the first min(k, m), the worst case.
    var lost: Range<Int> { 0..<min(dataShards, parityShards) }

    /// Swarm's splits per 128-reference intermediate chunk, shards of span ‖ payload.
    static let levels = [("medium", 119, 9), ("strong", 107, 21), ("insane", 97, 31), ("paranoid", 37, 89)].map {
        ErasureCase(name: $0.0, dataShards: $0.1, parityShards: $0.2, shardSize: 4104)
    }
    /// zfec_speed.py's default: k = 16 of m = 20 blocks of 4096 bytes, i.e. 4 parity.
    static let zfecShape = ErasureCase(name: "k16_m20", dataShards: 16, parityShards: 4, shardSize: 4096)

    /// Encode and reconstruct over `totalBytes` of data (whole stripes, rounded down as zfec
    /// does), from at most `poolBytes` of data in memory; for zfec's shape also the array API.
    func measure(totalBytes: Int, poolBytes: Int) throws -> [ResultLine] {
        let code = try ReedSolomon(dataShards: dataShards, parityShards: parityShards)
        let (k, m, size) = (dataShards, parityShards, shardSize)
        let dataBytes = k * size, stripeBytes = (k + m) * size
        let stripes = max(1, totalBytes / dataBytes)
        let poolStripes = min(stripes, max(1, poolBytes / dataBytes))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: poolStripes * stripeBytes, alignment: 64)
        defer { buffer.deallocate() }
        func region(_ stripe: Int, _ shards: Range<Int>) -> UnsafeMutableRawBufferPointer {
            UnsafeMutableRawBufferPointer(rebasing: buffer[(stripe * stripeBytes + shards.lowerBound * size)..<(stripe * stripeBytes + shards.upperBound * size)])
        }
        // Touch every page before any clock (parity included): a first write into fresh memory
        // costs a host fault on this VM, which is not erasure coding.
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        var random = SplitMix64(seed: UInt64(k * 1000 + m))
        for s in 0..<poolStripes {
            let bytes = random.bytes(dataBytes)
            bytes.withUnsafeBytes { region(s, 0..<k).copyMemory(from: $0) }
        }

        let (_, encodeSeconds) = try timed {
            for i in 0..<stripes {
                let s = i % poolStripes
                try code.encode(shardSize: size, data: UnsafeRawBufferPointer(region(s, 0..<k)), parity: region(s, k..<(k + m)))
            }
        }
        // After the clock: the fast path's parity is the array API's.
        let firstData = (0..<k).map { [UInt8](region(0, $0..<($0 + 1))) }
        guard try code.encode(firstData, shardSize: size).flatMap({ $0 }) == [UInt8](region(0, k..<(k + m))) else {
            throw BenchError("\(name): contiguous and array encodes differ")
        }

        // The first rebuild of a loss pattern also builds its decode plan (then cached for the
        // process): timed apart, on an intact stripe, so the main clock sees the steady state.
        var present = [Bool](repeating: true, count: k + m)
        for index in lost { present[index] = false }
        let (_, firstRebuildSeconds) = try timed {
            try code.reconstructData(shardSize: size, shards: region(0, 0..<(k + m)), present: present)
        }
        let original = (0..<poolStripes).map { [UInt8](region($0, 0..<k)) }
        for s in 0..<poolStripes { region(s, lost).initializeMemory(as: UInt8.self, repeating: 0) }
        let (_, reconstructSeconds) = try timed {
            for i in 0..<stripes {
                try code.reconstructData(shardSize: size, shards: region(i % poolStripes, 0..<(k + m)), present: present)
            }
        }
        for s in 0..<poolStripes where [UInt8](region(s, 0..<k)) != original[s] {
            throw BenchError("\(name): stripe \(s) was not rebuilt to its data")
        }

        var encode = ResultLine("erasure-encode-\(name)")
        encode.throughput(bytes: stripes * dataBytes, seconds: encodeSeconds)
        describe(&encode, stripes: stripes, poolStripes: poolStripes)
        var reconstruct = ResultLine("erasure-reconstruct-\(name)")
        reconstruct.throughput(bytes: stripes * dataBytes, seconds: reconstructSeconds)
        describe(&reconstruct, stripes: stripes, poolStripes: poolStripes)
        reconstruct.add("lost_data_shards", lost.count)
        reconstruct.add("rebuilt_bytes", stripes * lost.count * size)
        reconstruct.add("first_rebuild_seconds", firstRebuildSeconds)
        var lines = [encode, reconstruct]
        if self.name == ErasureCase.zfecShape.name {
            lines += try measureArrays(code: code, stripes: stripes, original: original)
        }
        return lines
    }

    /// The `[[UInt8]]` API over the same stripes: new parity arrays per stripe (zfec returns
    /// new byte strings too), all k data shards returned per rebuilt stripe.
    private func measureArrays(code: ReedSolomon, stripes: Int, original: [[UInt8]]) throws -> [ResultLine] {
        let (k, size) = (dataShards, shardSize)
        let pool = original.map { data in (0..<k).map { Array(data[($0 * size)..<(($0 + 1) * size)]) } }
        var parity = [[[UInt8]]](repeating: [], count: pool.count)
        let (_, encodeSeconds) = try timed {
            for i in 0..<stripes { parity[i % pool.count] = try code.encode(pool[i % pool.count], shardSize: size) }
        }
        let damaged: [[[UInt8]?]] = pool.indices.map { s in
            var shards: [[UInt8]?] = pool[s] + parity[s]
            for index in lost { shards[index] = nil }
            return shards
        }
        var rebuiltOK = true
        let (_, reconstructSeconds) = try timed {
            for i in 0..<stripes {
                let rebuilt = try code.reconstructData(damaged[i % pool.count], shardSize: size)
                if i < pool.count { rebuiltOK = rebuiltOK && rebuilt == pool[i] }
            }
        }
        guard rebuiltOK else { throw BenchError("\(name): the array API did not rebuild the data") }
        var encode = ResultLine("erasure-encode-arrays-\(name)")
        encode.throughput(bytes: stripes * k * size, seconds: encodeSeconds)
        describe(&encode, stripes: stripes, poolStripes: pool.count)
        var reconstruct = ResultLine("erasure-reconstruct-arrays-\(name)")
        reconstruct.throughput(bytes: stripes * k * size, seconds: reconstructSeconds)
        describe(&reconstruct, stripes: stripes, poolStripes: pool.count)
        reconstruct.add("lost_data_shards", lost.count)
        return [encode, reconstruct]
    }

    private func describe(_ line: inout ResultLine, stripes: Int, poolStripes: Int) {
        line.add("k", dataShards)
        line.add("m", parityShards)
        line.add("shard", shardSize)
        line.add("stripes", stripes)
        line.add("pool_stripes", poolStripes)
    }
}
