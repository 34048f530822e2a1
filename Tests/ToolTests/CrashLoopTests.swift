import Foundation
import ShoalTestSupport
import Testing

/// The store's crash promise, checked on real processes: a writer SIGKILLed at random moments
/// loses nothing it acknowledged, leaves `lmdb-inspect verify` clean and leaves no reader slot.
@Suite struct CrashLoopTests {
    @Test func killedWritersLoseNoAcknowledgedBatch() async throws {
        let dir = try TemporaryDirectory("crash-loop")
        let run = try await Tools.run("shoal-bench", ["crash-loop", "--dir", dir.sub("store"), "--cycles", "5", "--seed", "7"],
                                timeoutSeconds: 120)
        #expect(run.status == 0, "crash-loop failed:\n\(run.stderr)")
        let result = try #require(resultFields(run.stdout, "crash-loop"), "no crash-loop RESULT:\n\(run.stdout)\n\(run.stderr)")
        #expect(result["cycles"] == "5")
        #expect(result["lost"] == "0", "\(run.stderr)")
        #expect(result["verify_failures"] == "0", "\(run.stderr)")
        #expect(result["reader_slots_left"] == "0", "\(run.stderr)")
        let detail = try #require(resultFields(run.stdout, "crash-loop-detail"))
        // The loop must have had something to check: batches were acknowledged and re-read.
        #expect((Int(detail["batches"] ?? "") ?? 0) > 0, "no batch was committed before any kill:\n\(run.stderr)")
        #expect((Int(detail["chunks_checked"] ?? "") ?? 0) > 0)
        #expect(detail["writer_failures"] == "0", "\(run.stderr)")
    }

    /// With a capacity, bins are evicted and their slots reused while writers are killed: every
    /// acknowledged chunk outside the evicted bins is still there and re-hashes to its address.
    @Test func killedWritersAtCapacityLoseNothingOutsideEvictedBins() async throws {
        let dir = try TemporaryDirectory("crash-loop-capacity")
        let run = try await Tools.run("shoal-bench", ["crash-loop", "--dir", dir.sub("store"), "--cycles", "4", "--seed", "11",
                                                "--capacity-chunks", "3000"],
                                timeoutSeconds: 120)
        #expect(run.status == 0, "crash-loop failed:\n\(run.stderr)")
        let result = try #require(resultFields(run.stdout, "crash-loop"), "no crash-loop RESULT:\n\(run.stdout)\n\(run.stderr)")
        #expect(result["lost"] == "0", "\(run.stderr)")
        #expect(result["verify_failures"] == "0", "\(run.stderr)")
        #expect(result["reader_slots_left"] == "0", "\(run.stderr)")
    }
}

/// The key=value fields of the `RESULT name=<name> …` line in `stdout`, or nil.
private func resultFields(_ stdout: String, _ name: String) -> [String: String]? {
    for line in stdout.split(separator: "\n") where line.hasPrefix("RESULT ") {
        var fields: [String: String] = [:]
        for part in line.split(separator: " ").dropFirst() {
            guard let eq = part.firstIndex(of: "=") else { continue }
            fields[String(part[..<eq])] = String(part[part.index(after: eq)...])
        }
        if fields["name"] == name { return fields }
    }
    return nil
}
