/// GF(2^8) over the polynomial x⁸ + x⁴ + x³ + x² + 1 (0x11D), written out in plain Swift with
/// no ISA-L: the independent computation the tests hold ISA-L's results against.
enum ReferenceField {
    /// exp[i] = 2^i, doubled in length so a sum of two logarithms needs no reduction.
    static let exp: [UInt8] = {
        var table = [UInt8](repeating: 0, count: 512)
        var x = 1
        for i in 0..<255 {
            table[i] = UInt8(x)
            table[i + 255] = UInt8(x)
            x <<= 1
            if x & 0x100 != 0 { x ^= 0x11D }
        }
        return table
    }()

    static let log: [Int] = {
        var table = [Int](repeating: 0, count: 256)
        for i in 0..<255 { table[Int(exp[i])] = i }
        return table
    }()

    static func mul(_ a: UInt8, _ b: UInt8) -> UInt8 {
        a == 0 || b == 0 ? 0 : exp[log[Int(a)] + log[Int(b)]]
    }

    /// The inverse of a nonzero element.
    static func inv(_ a: UInt8) -> UInt8 {
        precondition(a != 0, "0 has no inverse")
        return exp[255 - log[Int(a)]]
    }

    /// Row `row` (0..<k+m) of the systematic Cauchy matrix: the identity, then 1 / (row ⊕ column).
    static func codingRow(_ row: Int, k: Int) -> [UInt8] {
        (0..<k).map { column in
            row < k ? (row == column ? 1 : 0) : inv(UInt8(row ^ column))
        }
    }

    /// Parity shards computed byte by byte from the definition.
    static func parity(of data: [[UInt8]], parityShards m: Int) -> [[UInt8]] {
        let k = data.count
        let size = data.first?.count ?? 0
        return (k..<(k + m)).map { row in
            let coefficients = codingRow(row, k: k)
            return (0..<size).map { b in
                var sum: UInt8 = 0
                for j in 0..<k { sum ^= mul(coefficients[j], data[j][b]) }
                return sum
            }
        }
    }

    /// Gauss–Jordan inverse of an n × n row-major matrix; nil if singular.
    static func invert(_ matrix: [UInt8], n: Int) -> [UInt8]? {
        var a = matrix
        var out = [UInt8](repeating: 0, count: n * n)
        for i in 0..<n { out[i * n + i] = 1 }
        for column in 0..<n {
            guard let pivot = (column..<n).first(where: { a[$0 * n + column] != 0 }) else { return nil }
            if pivot != column {
                for j in 0..<n {
                    a.swapAt(pivot * n + j, column * n + j)
                    out.swapAt(pivot * n + j, column * n + j)
                }
            }
            let scale = inv(a[column * n + column])
            for j in 0..<n {
                a[column * n + j] = mul(a[column * n + j], scale)
                out[column * n + j] = mul(out[column * n + j], scale)
            }
            for row in 0..<n where row != column {
                let factor = a[row * n + column]
                guard factor != 0 else { continue }
                for j in 0..<n {
                    a[row * n + j] ^= mul(factor, a[column * n + j])
                    out[row * n + j] ^= mul(factor, out[column * n + j])
                }
            }
        }
        return out
    }
}
