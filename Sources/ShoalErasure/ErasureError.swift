/// Why an erasure-coding call refused its input. Every case carries enough to say what was
/// wrong; none is a crash.
public enum ErasureError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The code's shape or a call's shard list does not fit (k < 1, m < 0, k + m > 256, a list
    /// with the wrong number of entries).
    case invalidParameters(String)
    /// A shard, or a buffer of shards, is not the size the call was given.
    case shardSize(String)
    /// Fewer than k shards are present, so the data cannot be rebuilt.
    case tooFewShards(present: Int, needed: Int)
    /// The matrix of the surviving rows could not be inverted. With a Cauchy matrix every square
    /// submatrix is invertible, so this means a bug or corrupted tables, never a bad input.
    case singularMatrix

    public var description: String {
        switch self {
        case .invalidParameters(let why): return "invalid erasure-coding parameters: \(why)"
        case .shardSize(let why): return "wrong shard size: \(why)"
        case .tooFewShards(let present, let needed):
            return "too few shards to rebuild the data: \(present) present, \(needed) needed"
        case .singularMatrix: return "the decoding matrix of the surviving shards is singular"
        }
    }
}
