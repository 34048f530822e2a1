import Locking
import ShoalCore
import ShoalFiles

// A whole file as one download: the node reads the file's tree (its root and intermediates,
// from the store, else by retrieval, as a file read does), names every chunk of it, and starts
// one download of them all. What of the tree is named is `TreeChunks`: by default the data
// (root, intermediates, leaves), which is all a reader needs; parity only when asked, since a
// parity chunk nobody holds would fail a download of a file that reads whole without it.

extension Node {
    /// Starts one download of every chunk of the file `root` (see `TreeChunks` for which).
    ///
    /// Reads the tree first: the root and each intermediate from the store, else from the
    /// network. Throws `FileError` when the tree cannot be read (`.missing` for a root or an
    /// intermediate nobody had, `.notATree` and the others for a chunk that is not a file's),
    /// `TreeTooLarge` when the file has more distinct chunks than one download may name
    /// (`DownloadLimits.chunksPerDownloadMax`: such a file is refused, not split), and
    /// `DownloadRejected` as `startDownload` does. The download's report names the root
    /// (`fileRoot(of:)`) from then on, while the node runs.
    public func startFileDownload(root: ChunkAddress, including: TreeChunks = .data, policy: DownloadPolicy = .eagerPin,
                                  hints: [OverlayAddress] = []) async throws -> DownloadReport {
        let addresses = try await FileTreeAddresses.collect(root: root, source: RetrievingChunkSource(node: self), including: including,
                                                            chunksMax: configuration.downloads.chunksPerDownloadMax)
        let report = try await startDownload(addresses, policy: policy, hints: hints)
        fileDownloadRoots.record(report.id, root: root)
        return report
    }

    /// The file root a download was started for (`startFileDownload`), if it was one and the
    /// node has not restarted since.
    public func fileRoot(of id: DownloadID) -> ChunkAddress? {
        fileDownloadRoots.root(of: id)
    }
}

/// The file root of each download started for a file, kept in memory (the store's download
/// record has no field for it: after a restart a resumed file download shows no root).
/// Bounded: the newest `entriesMax` are kept, more than the downloads alive and those the
/// downloader remembers as ended.
public final class FileDownloadRoots: Sendable {
    /// `DownloadLimits.downloadsMax` (64) alive and 256 ended remembered fit four times over.
    public static let entriesMax = 1024

    private struct State {
        var roots: [DownloadID: ChunkAddress] = [:]
        /// Oldest first, for the bound.
        var order: [DownloadID] = []
    }

    private let state = Locked(State())

    init() {}

    func record(_ id: DownloadID, root: ChunkAddress) {
        state.withLock { s in
            if s.roots.updateValue(root, forKey: id) == nil { s.order.append(id) }
            if s.order.count > Self.entriesMax {
                let dropped = s.order.count - Self.entriesMax
                for old in s.order.prefix(dropped) { s.roots[old] = nil }
                s.order.removeFirst(dropped)
            }
        }
    }

    func root(of id: DownloadID) -> ChunkAddress? {
        state.withLock { $0.roots[id] }
    }
}

/// A file's chunks as the node reads them to walk a tree: the store, else retrieval (which
/// does not store what it fetched: the download fetches those intermediates again, and keeps
/// them). A chunk nobody had is absent; the reader re-hashes every chunk it gets.
struct RetrievingChunkSource: ChunkSource {
    let node: Node

    func chunk(_ address: ChunkAddress) async throws -> Chunk? {
        switch try await node.retrieve(address) {
        case .success(let chunk): chunk
        case .failure: nil
        }
    }
}
