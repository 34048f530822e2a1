import Foundation

/// A fresh directory of its own under the system's temporary directory (`mkdtemp`), removed with
/// everything in it when the value is released (or `remove()` is called).
public final class TemporaryDirectory: Sendable {
    public let path: String

    /// `prefix` names the directory (`<tmp>/<prefix>-XXXXXX`), for finding what a failed test left.
    public init(_ prefix: String = "shoal-test") throws {
        var template = Array((FileManager.default.temporaryDirectory.path + "/\(prefix)-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw TestFailure("mkdtemp(\(prefix)) failed: \(String(cString: strerror(errno)))")
        }
        path = String(cString: made)
    }

    deinit { remove() }

    /// Removes the directory and everything in it now.
    public func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// The path of `name` inside the directory.
    public func sub(_ name: String) -> String { path + "/" + name }

    /// The names in the directory.
    public var names: [String] { (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] }
}
