import Foundation
import ShoalCore
import ShoalStore
import ShoalTestSupport
import Testing

/// `lmdb-inspect journal --peer/--bin/--event`, run as a real process against a store whose
/// journal holds an older free-text entry and the lines of two reconciliations.
struct JournalFilterTests {
    static let lines = [
        #"{"decision":"subscribe","bin":1}"#,
        "event=reconcile depth=0->2 radius=0->0 connected=2",
        "event=subscribe peer=3fa2c41b09d87e15 po=1 bins=1 reason=bin-equals-po",
        "event=subscribe peer=77aa000000000000 po=4 bins=2,3,4 reason=neighbour",
        "event=reconcile depth=2->3 radius=0->0 connected=1",
        "event=disconnect peer=3fa2c41b09d87e15 po=1 bins=1 reason=disconnected",
        "event=cancel peer=77aa000000000000 po=4 bins=2 reason=depth-changed",
    ]

    @Test func filtersKeepTheLinesEveryGivenFilterMatchesNewestLast() async throws {
        let dir = try TemporaryDirectory("journal-filter")
        let path = dir.sub("store")
        do {
            let store = try Store(directory: path, options: Store.Options(overlay: Address32(w0: 1, w1: 2, w2: 3, w3: 4)))
            defer { store.close() }
            var batch = StoreBatch()
            batch.journal = Self.lines
            _ = try store.apply(batch)
        }
        func texts(_ arguments: [String]) async throws -> [String] {
            let out = try await Tools.run("lmdb-inspect", ["journal", path, "--json"] + arguments, timeoutSeconds: 60)
            #expect(out.status == 0, "\(arguments): \(out.stderr)")
            return try JSONDecoder().decode(JournalListing.self, from: Data(out.stdout.utf8)).journal.map(\.text)
        }
        let all = try await texts([])
        #expect(all == Self.lines, "no filter: every entry, free text included")
        let peer = try await texts(["--peer", "3FA2"])
        #expect(peer == [Self.lines[2], Self.lines[5]])
        let wholeOverlay = try await texts(["--peer", "77aa" + String(repeating: "0", count: 60)])
        #expect(wholeOverlay == [Self.lines[3], Self.lines[6]])
        let bin2 = try await texts(["--bin", "2"])
        #expect(bin2 == [Self.lines[3], Self.lines[6]])
        let reconciles = try await texts(["--event", "reconcile", "--limit", "1"])
        #expect(reconciles == [Self.lines[4]], "the newest match")
        let all3 = try await texts(["--peer", "77", "--bin", "3", "--event", "subscribe"])
        #expect(all3 == [Self.lines[3]])
        let none = try await texts(["--bin", "9"])
        #expect(none.isEmpty)

        let text = try await Tools.run("lmdb-inspect", ["journal", path, "--event", "subscribe"], timeoutSeconds: 60)
        #expect(text.stdout.contains("2 matching entries of 7"))
        for bad in [["--peer", "xyz"], ["--bin", "32"], ["--event", "a b"]] {
            let out = try await Tools.run("lmdb-inspect", ["journal", path] + bad, timeoutSeconds: 60)
            #expect(out.status == 64, "\(bad) is refused as a usage error")
        }
    }
}
