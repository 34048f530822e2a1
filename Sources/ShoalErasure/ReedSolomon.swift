import CISAL

/// A systematic Reed–Solomon erasure code over GF(2^8): k data shards and m parity shards of
/// equal size, any k of the k + m enough to rebuild the data.
///
/// The coding matrix is ISA-L's Cauchy matrix (`gf_gen_cauchy1_matrix`, field polynomial
/// 0x11D): the identity over the data, then rows `1 / (i ⊕ j)`, so every k × k choice of rows is
/// invertible and any m losses can be repaired. The SIMD work is ISA-L's `ec_encode_data`.
/// Encode tables are cached per (k, m), decode tables per (k, m, erasure pattern), both in
/// process-wide caches bounded by bytes (`CodingCache`), so a value is cheap to make and to copy.
public struct ReedSolomon: Sendable {
    /// k: shards of data, 1 or more.
    public let dataShards: Int
    /// m: shards of parity, 0 or more; k + m ≤ 256.
    public let parityShards: Int
    let code: CodingMatrix

    /// The most shards a code over GF(2^8) can have: the Cauchy rows need distinct field elements.
    public static let totalShardsMax = 256

    public init(dataShards: Int, parityShards: Int) throws(ErasureError) {
        guard dataShards >= 1 else {
            throw .invalidParameters("data shards must be at least 1, got \(dataShards)")
        }
        guard parityShards >= 0 else {
            throw .invalidParameters("parity shards must be at least 0, got \(parityShards)")
        }
        guard dataShards <= Self.totalShardsMax - parityShards else {
            throw .invalidParameters(
                "data + parity shards must be at most \(Self.totalShardsMax), got \(dataShards) + \(parityShards)")
        }
        self.dataShards = dataShards
        self.parityShards = parityShards
        code = CodingCache.code(dataShards: dataShards, parityShards: parityShards)
    }

    public var totalShards: Int { dataShards + parityShards }

    // MARK: Arrays

    /// m parity shards of `shardSize` bytes each from k data shards of exactly `shardSize` bytes.
    public func encode(_ data: [[UInt8]], shardSize: Int) throws(ErasureError) -> [[UInt8]] {
        try checkShardSize(shardSize)
        guard data.count == dataShards else {
            throw .invalidParameters("expected \(dataShards) data shards, got \(data.count)")
        }
        for (index, shard) in data.enumerated() where shard.count != shardSize {
            throw .shardSize("data shard \(index) has \(shard.count) bytes, expected \(shardSize)")
        }
        let m = parityShards
        guard m > 0 else { return [] }
        guard shardSize > 0 else { return Array(repeating: [], count: m) }
        // ISA-L writes all parity rows in one pass, so it needs every output address at once:
        // one contiguous buffer, then cut into arrays.
        let out = [UInt8](unsafeUninitializedCapacity: m * shardSize) { buffer, initialized in
            let base = UnsafeMutableRawPointer(buffer.baseAddress!)
            withBaseAddresses(of: data, indices: 0..<dataShards) { sources in
                runKernel(code.encodeTables, sources: sources, outputs: m, length: shardSize) { base + $0 * shardSize }
            }
            initialized = m * shardSize
        }
        return (0..<m).map { Array(out[($0 * shardSize)..<(($0 + 1) * shardSize)]) }
    }

    /// `shards` has k + m entries (data first, then parity); nil = lost. Needs at least k present.
    /// Returns all k data shards (present ones as given, lost ones rebuilt).
    public func reconstructData(_ shards: [[UInt8]?], shardSize: Int) throws(ErasureError) -> [[UInt8]] {
        try checkShardSize(shardSize)
        guard shards.count == totalShards else {
            throw .invalidParameters("expected \(totalShards) shards (\(dataShards) data + \(parityShards) parity), got \(shards.count)")
        }
        var present = ShardSet()
        for (index, shard) in shards.enumerated() {
            guard let shard else { continue }
            guard shard.count == shardSize else {
                throw .shardSize("shard \(index) has \(shard.count) bytes, expected \(shardSize)")
            }
            present.insert(index)
        }
        let plan = try CodingCache.plan(for: code, present: present)
        var result = shards.prefix(dataShards).map { $0 ?? [] }
        let e = plan.lost.count
        guard e > 0, shardSize > 0 else {
            for index in plan.lost { result[index] = [UInt8](repeating: 0, count: shardSize) }
            return result
        }
        let survivors = plan.survivors.map { shards[$0] ?? [] }
        let out = [UInt8](unsafeUninitializedCapacity: e * shardSize) { buffer, initialized in
            let base = UnsafeMutableRawPointer(buffer.baseAddress!)
            withBaseAddresses(of: survivors, indices: 0..<survivors.count) { sources in
                runKernel(plan.tables, sources: sources, outputs: e, length: shardSize) { base + $0 * shardSize }
            }
            initialized = e * shardSize
        }
        for (row, index) in plan.lost.enumerated() {
            result[index] = Array(out[(row * shardSize)..<((row + 1) * shardSize)])
        }
        return result
    }

    func checkShardSize(_ shardSize: Int) throws(ErasureError) {
        guard shardSize >= 0, shardSize <= Int(Int32.max) else {
            throw .shardSize("shard size must be in 0...\(Int32.max), got \(shardSize)")
        }
    }
}

/// Calls `body` with the base address of each of `arrays[indices]`, all valid at once. The
/// scopes nest (one per array, at most 256 deep), so nothing is copied.
func withBaseAddresses<R>(of arrays: [[UInt8]], indices: Range<Int>, _ body: ([UnsafeRawPointer]) -> R) -> R {
    var pointers: [UnsafeRawPointer] = []
    pointers.reserveCapacity(indices.count)
    func nest(_ i: Int) -> R {
        guard i < indices.upperBound else { return body(pointers) }
        return arrays[i].withUnsafeBytes { raw in
            // Callers pass only non-empty arrays (shardSize > 0); an empty one has no address.
            guard let base = raw.baseAddress else { preconditionFailure("empty shard reached the kernel") }
            pointers.append(base)
            return nest(i + 1)
        }
    }
    return nest(indices.lowerBound)
}

/// `ec_encode_data`: `outputs` rows of `length` bytes from `sources.count` inputs through
/// `tables` (from `ec_init_tables(sources.count, outputs, …)`).
func runKernel(
    _ tables: [UInt8], sources: [UnsafeRawPointer], outputs rows: Int, length: Int,
    output: (Int) -> UnsafeMutableRawPointer
) {
    runKernel(tables, sourceCount: sources.count, outputs: rows, length: length, source: { sources[$0] }, output: output)
}

@inline(__always)
func runKernel(
    _ tables: [UInt8], sourceCount k: Int, outputs rows: Int, length: Int,
    source: (Int) -> UnsafeRawPointer, output: (Int) -> UnsafeMutableRawPointer
) {
    precondition(tables.count == 32 * k * rows, "tables of \(tables.count) bytes for \(k) × \(rows)")
    withUnsafeTemporaryAllocation(of: UnsafeMutablePointer<UInt8>?.self, capacity: k + rows) { pointers in
        // ISA-L's signature is not const-correct: it only reads the sources and the tables.
        for i in 0..<k { pointers[i] = UnsafeMutablePointer(mutating: source(i).assumingMemoryBound(to: UInt8.self)) }
        for r in 0..<rows { pointers[k + r] = output(r).assumingMemoryBound(to: UInt8.self) }
        tables.withUnsafeBufferPointer { t in
            ec_encode_data(
                Int32(length), Int32(k), Int32(rows), UnsafeMutablePointer(mutating: t.baseAddress!),
                pointers.baseAddress!, pointers.baseAddress! + k)
        }
    }
}
