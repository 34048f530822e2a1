import Foundation
import ShoalTestSupport
import Testing

/// `shoal-bench download` and `download-crash` at small sizes, with real node processes on
/// 127.0.0.1: they run end to end and report their figures. Not timing tests: they check that
/// every holder served a share, that nothing is missing, and that crashes lose nothing.
@Suite(.serialized) struct DownloadBenchTests {
    @Test(.timeLimit(.minutes(3)))
    func aLightNodeDownloadsFromEveryHolderAndANormalNodeSyncsTheSame() async throws {
        let dir = try TemporaryDirectory("download-bench")
        let run = try await Tools.run("shoal-bench", ["download", "--chunks", "2000", "--holders", "3", "--timeout", "100",
                                                      "--dir", dir.sub("work"), "--shoal", Tools.path("shoal")],
                                      timeoutSeconds: 170)
        let failure = "\(run.stdout)\n\(run.stderr.suffix(4000))"
        #expect(run.status == 0, "\(failure)")
        let results = resultLines(run.stdout)
        let download = try #require(results["download"], "no RESULT name=download; \(failure)")
        #expect(download["chunks"] == "2000" && download["holders"] == "3")
        #expect(download["held"] == "2000")
        #expect(positive(download["MBps"]), "\(failure)")
        // Every holder got work.
        #expect(download["shares"]?.split(separator: ",").count == 3)
        #expect(positive(download["share_min"]), "a holder served nothing: \(failure)")
        #expect((Int(download["fetched_twice"] ?? "") ?? -1) >= 0)
        let compare = try #require(results["download-vs-sync"], "no RESULT name=download-vs-sync; \(failure)")
        #expect(positive(compare["sync_MBps"]) && positive(compare["download_MBps"]) && positive(compare["ratio"]))
    }

    @Test(.timeLimit(.minutes(4)))
    func aLightNodeKilledDuringItsDownloadResumesAndLosesNothing() async throws {
        let dir = try TemporaryDirectory("download-crash")
        let run = try await Tools.run("shoal-bench", ["download-crash", "--chunks", "6000", "--holders", "2", "--kills", "3",
                                                      "--seed", "7", "--timeout", "120",
                                                      "--dir", dir.sub("work"), "--shoal", Tools.path("shoal")],
                                      timeoutSeconds: 220)
        let failure = "\(run.stdout)\n\(run.stderr.suffix(4000))"
        #expect(run.status == 0, "\(failure)")
        let result = try #require(resultLines(run.stdout)["download-crash"], "no RESULT name=download-crash; \(failure)")
        #expect(result["kills"] == "3" && result["chunks"] == "6000")
        #expect(result["lost"] == "0", "\(failure)")
        #expect(result["verify_failures"] == "0", "\(failure)")
        #expect(result["resumes_shown"] == result["resumes_checked"], "\(failure)")
        #expect((Int(result["fetched_twice"] ?? "") ?? .max) <= (Int(result["bound"] ?? "") ?? 0), "\(failure)")
        #expect((Int(result["kills_during_download"] ?? "") ?? 0) > 0, "\(failure)")
    }
}
