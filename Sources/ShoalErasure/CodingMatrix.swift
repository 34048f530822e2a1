import CISAL
import Locking

/// The coding matrix of one (k, m) code and ISA-L's expanded tables for its parity rows.
/// Immutable once built; shared between every `ReedSolomon` of that shape.
final class CodingMatrix: Sendable {
    let dataShards: Int
    let parityShards: Int
    /// (k + m) × k, row-major: the identity on top (the code is systematic: data shards are
    /// stored as they are), then m Cauchy rows `1 / (i ⊕ j)` for row i in k..<k+m, column j.
    let matrix: [UInt8]
    /// `ec_init_tables` of the m parity rows: 32 bytes per coefficient, 32 · k · m in all.
    let encodeTables: [UInt8]

    init(dataShards k: Int, parityShards m: Int) {
        dataShards = k
        parityShards = m
        var matrix = [UInt8](repeating: 0, count: (k + m) * k)
        matrix.withUnsafeMutableBufferPointer { a in
            // "Any sub-matrix of a Cauchy matrix should be invertable" (erasure_code.h), unlike
            // gf_gen_rs_matrix's Vandermonde rows, which fail for some large (k, m).
            gf_gen_cauchy1_matrix(a.baseAddress, Int32(k + m), Int32(k))
        }
        var tables = [UInt8](repeating: 0, count: 32 * k * m)
        if m > 0 {
            matrix.withUnsafeMutableBufferPointer { a in
                tables.withUnsafeMutableBufferPointer { t in
                    ec_init_tables(Int32(k), Int32(m), a.baseAddress! + k * k, t.baseAddress)
                }
            }
        }
        self.matrix = matrix
        encodeTables = tables
    }

    /// Coefficient of the coding matrix at `row` (0..<k+m), `column` (0..<k).
    func coefficient(_ row: Int, _ column: Int) -> UInt8 { matrix[row * dataShards + column] }

    var bytes: Int { matrix.count + encodeTables.count }
}

/// How to rebuild the lost data shards of one erasure pattern: the k shards to read, the data
/// shards they rebuild, and ISA-L's tables for the rows of the inverse that rebuild them.
final class DecodePlan: Sendable {
    /// The k shard indices read, ascending: every present data shard, then the first present
    /// parity shards, as many as there are lost data shards.
    let survivors: [Int]
    /// The data shard indices rebuilt, ascending.
    let lost: [Int]
    /// lost.count × k, row-major: row r gives `lost[r]` as a combination of `survivors`.
    let matrix: [UInt8]
    /// `ec_init_tables(k, lost.count, matrix)`: the expanded form the kernel reads.
    let tables: [UInt8]

    /// The plan for `present` (which must hold at least k shards of the code).
    ///
    /// Rather than inverting the k × k matrix of the surviving rows (O(k³); 10.6 ms at k = 119),
    /// only the e × e block that couples the e lost data shards to the e parity rows used is
    /// inverted. With D the data, L the lost columns, R the present data columns, P the parity
    /// rows used and C the coding matrix, the parity equations give
    ///   C[P, L] · D[L] = p[P] + C[P, R] · D[R]     (addition is ⊕ in GF(2^8))
    /// so with N = C[P, L]⁻¹ the lost data is D[L] = N · p[P] + (N · C[P, R]) · D[R]: one e × k
    /// matrix over the survivors. C[P, L] is a square block of a Cauchy matrix, so invertible.
    /// The result is the same as the lost rows of the full inverse (a test checks it).
    init(code: CodingMatrix, present: ShardSet) throws(ErasureError) {
        let k = code.dataShards, m = code.parityShards
        let presentData = (0..<k).filter { present.contains($0) }
        let lost = (0..<k).filter { !present.contains($0) }
        let e = lost.count
        let parityUsed = Array((k..<(k + m)).filter { present.contains($0) }.prefix(e))
        guard parityUsed.count == e else {
            throw .tooFewShards(present: presentData.count + parityUsed.count, needed: k)
        }
        survivors = presentData + parityUsed
        self.lost = lost
        var tables = [UInt8](repeating: 0, count: 32 * k * e)
        var decode = [UInt8](repeating: 0, count: e * k)
        if e > 0 {
            var block = [UInt8](repeating: 0, count: e * e)
            for (i, p) in parityUsed.enumerated() {
                for (j, l) in lost.enumerated() { block[i * e + j] = code.coefficient(p, l) }
            }
            var inverse = [UInt8](repeating: 0, count: e * e)
            let rc = block.withUnsafeMutableBufferPointer { b in
                inverse.withUnsafeMutableBufferPointer { n in gf_invert_matrix(b.baseAddress, n.baseAddress, Int32(e)) }
            }
            guard rc == 0 else { throw .singularMatrix }
            // Row a of the decode matrix: coefficients over `survivors` for lost shard lost[a].
            for a in 0..<e {
                for (column, r) in presentData.enumerated() {
                    var sum: UInt8 = 0
                    for i in 0..<e { sum ^= gf_mul(inverse[a * e + i], code.coefficient(parityUsed[i], r)) }
                    decode[a * k + column] = sum
                }
                for i in 0..<e { decode[a * k + presentData.count + i] = inverse[a * e + i] }
            }
            decode.withUnsafeMutableBufferPointer { d in
                tables.withUnsafeMutableBufferPointer { t in
                    ec_init_tables(Int32(k), Int32(e), d.baseAddress, t.baseAddress)
                }
            }
        }
        matrix = decode
        self.tables = tables
    }

    var bytes: Int { tables.count + matrix.count + 8 * (survivors.count + lost.count) }
}

/// The process-wide table caches, bounded by bytes, safe to use from any thread.
///
/// Shared rather than per `ReedSolomon` value because a node makes a coder per intermediate
/// chunk it splits or joins, and the same few shapes (k, m) and erasure patterns recur across
/// them; a per-value cache would start cold every time.
enum CodingCache {
    /// Encode matrices and tables per (k, m). The largest shape (37 + 89) takes ≈ 110 KB, so
    /// this holds every level's full and partial shapes a file commonly needs.
    static let codeBytesMax = 8 << 20
    /// Decode plans per (k, m, surviving shards). A plan of the worst pattern takes ≈ 105 KB
    /// (37 data shards rebuilt from 37 parity shards), the common ones far less.
    static let decodeBytesMax = 8 << 20

    struct CodeKey: Hashable { let k: Int, m: Int }
    struct DecodeKey: Hashable { let k: Int, m: Int, survivors: ShardSet }

    private static let codes = Locked(TableCache<CodeKey, CodingMatrix>(bytesMax: codeBytesMax))
    private static let plans = Locked(TableCache<DecodeKey, DecodePlan>(bytesMax: decodeBytesMax))

    /// The coding matrix for (k, m), built on first use.
    static func code(dataShards k: Int, parityShards m: Int) -> CodingMatrix {
        let key = CodeKey(k: k, m: m)
        if let cached = codes.withLock({ $0.value(for: key) }) { return cached }
        // Built outside the lock: two threads may both build it; the second insert wins, and
        // both results are identical.
        let built = CodingMatrix(dataShards: k, parityShards: m)
        codes.withLock { $0.insert(built, bytes: built.bytes, for: key) }
        return built
    }

    /// The decode plan for `present` under `code`, computed on first use of that pattern.
    /// The key is the set of survivors actually read, so patterns that differ only in extra
    /// parity shards share a plan.
    static func plan(for code: CodingMatrix, present: ShardSet) throws(ErasureError) -> DecodePlan {
        let k = code.dataShards, m = code.parityShards
        var survivors = ShardSet()
        var taken = 0
        for index in 0..<(k + m) where taken < k && present.contains(index) {
            survivors.insert(index)
            taken += 1
        }
        guard taken == k else { throw .tooFewShards(present: present.count, needed: k) }
        let key = DecodeKey(k: k, m: m, survivors: survivors)
        if let cached = plans.withLock({ $0.value(for: key) }) { return cached }
        let built = try DecodePlan(code: code, present: survivors)
        plans.withLock { $0.insert(built, bytes: built.bytes, for: key) }
        return built
    }

    /// Entries and bytes held, for tests of the bounds.
    static var statistics: (codes: Int, codeBytes: Int, plans: Int, planBytes: Int) {
        let c = codes.withLock { ($0.count, $0.bytes) }
        let p = plans.withLock { ($0.count, $0.bytes) }
        return (c.0, c.1, p.0, p.1)
    }
}
