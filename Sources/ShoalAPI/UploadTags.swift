import Locking
import ShoalCore

/// Upload progress, Bee's "tags": a client makes a tag (`POST /tags`), names it in an upload
/// (`Shoal-Tag: <uid>`), and watches it (`GET /tags/{uid}`) from another connection while the
/// upload runs. Every upload to `POST /bytes` gets a tag, named or not, so `GET /tags` and the
/// status page also show uploads in flight.
///
/// Tags live in memory only (a restart forgets them; what an upload stored stays stored) and
/// at most `capacity` of them: a new tag makes room by forgetting the oldest finished one, and
/// when every tag is still running, `POST /tags` is refused.
public final class UploadTags: Sendable {
    public struct Tag: Codable, Sendable, Equatable {
        public var uid: UInt64
        /// Body bytes read so far.
        public var bytes: UInt64
        /// Chunks made by the splitter (leaves, intermediates, parities).
        public var split: Int
        /// Chunks committed to the store (new or already there).
        public var stored: Int
        /// Of those, the ones the store already held.
        public var seen: Int
        /// The file's root once the upload finished.
        public var reference: String?
        public var done: Bool
        /// Why the upload failed, if it did.
        public var failed: String?
        /// Milliseconds since 1970.
        public var startedAtMs: UInt64
    }

    public static let defaultCapacity = 1024

    private struct State {
        var next: UInt64 = 1
        var tags: [UInt64: Tag] = [:]
    }

    private let state = Locked(State())
    private let capacity: Int
    private let now: @Sendable () -> UInt64

    public init(capacity: Int = UploadTags.defaultCapacity, nowMs: @escaping @Sendable () -> UInt64) {
        self.capacity = max(1, capacity)
        now = nowMs
    }

    /// A new tag, or nil when `capacity` tags are all still running.
    public func make() -> Tag? {
        state.withLock { s in
            if s.tags.count >= capacity {
                guard let oldest = s.tags.values.filter({ $0.done || $0.failed != nil }).min(by: { $0.uid < $1.uid }) else { return nil }
                s.tags[oldest.uid] = nil
            }
            let tag = Tag(uid: s.next, bytes: 0, split: 0, stored: 0, seen: 0, reference: nil, done: false, failed: nil,
                          startedAtMs: now())
            s.next += 1
            s.tags[tag.uid] = tag
            return tag
        }
    }

    public func get(_ uid: UInt64) -> Tag? { state.withLock { $0.tags[uid] } }

    /// Every tag, oldest first.
    public func all() -> [Tag] { state.withLock { $0.tags.values.sorted { $0.uid < $1.uid } } }

    /// Tags of uploads still running.
    public var running: Int { state.withLock { $0.tags.values.count(where: { !$0.done && $0.failed == nil }) } }

    @discardableResult
    public func remove(_ uid: UInt64) -> Bool { state.withLock { $0.tags.removeValue(forKey: uid) != nil } }

    /// Applies `change` to tag `uid` if it still exists.
    func update(_ uid: UInt64, _ change: (inout Tag) -> Void) {
        state.withLock { s in
            guard var tag = s.tags[uid] else { return }
            change(&tag)
            s.tags[uid] = tag
        }
    }
}
