import ShoalCore

/// What can go wrong splitting or reading a file's chunk tree. Every bad tree a source can
/// hand the reader ends as one of these, never as a crash.
public enum FileError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Not available and not rebuildable: the source had no chunk for the reference, or its
    /// chunk did not hash to the reference, and parity could not stand in for it.
    case missing(ChunkAddress)
    /// The chunk cannot be a node of a tree: a payload that is not a whole number of
    /// references, a reference count no data/parity split gives, an empty-file root that is not
    /// the empty-file chunk.
    case notATree(ChunkAddress, String)
    /// A span disagrees with the tree: a child's span is not its share of its parent's, a
    /// leaf's payload length is not its span.
    case spanMismatch(ChunkAddress, String)
    /// A child claims to stand for at least as many bytes as its parent: followed, such a tree
    /// would never get smaller going down (a cycle or an endless chain).
    case tooDeep(ChunkAddress)
    /// A child rebuilt from its siblings and parity does not hash to its reference: the
    /// parity does not match the data.
    case parityMismatch(ChunkAddress)
    /// A byte range that starts past the end of the file, or bytes past the largest file.
    case rangeNotSatisfiable(Range<UInt64>, size: UInt64)
    /// The redundancy byte (the top byte of an intermediate's span) is not a level (0…4), or not
    /// the root's level.
    case invalidRedundancy(UInt8)

    public var description: String {
        switch self {
        case .missing(let a): "chunk \(a) is not available (absent or corrupt) and cannot be rebuilt from parity"
        case .notATree(let a, let why): "chunk \(a) is not a node of a file tree: \(why)"
        case .spanMismatch(let a, let why): "chunk \(a) has a span that disagrees with the tree: \(why)"
        case .tooDeep(let a): "chunk \(a) stands for at least as many bytes as its parent: the tree does not shrink going down (a cycle or a chain)"
        case .parityMismatch(let a): "chunk \(a) rebuilt from parity does not hash to its reference: the parity does not match the data"
        case .rangeNotSatisfiable(let r, let size): "byte range \(r.lowerBound)..<\(r.upperBound) is not satisfiable for \(size) bytes"
        case .invalidRedundancy(let b): "redundancy byte \(b) is not a level of this tree (0…4, the root's level)"
        }
    }
}
