import ArgumentParser
import ShoalErasure

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `shoal-bench erasure`: Reed–Solomon encode and worst-case reconstruct throughput on one core,
/// per redundancy level, and in zfec's own shape with `peers/zfec_speed.py` run in the same pass.
struct ErasureBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "erasure",
        abstract: "Benchmark Reed–Solomon erasure coding (release build, one core), against zfec.",
        discussion: """
            Every figure is one RESULT line on stdout (progress goes to stderr):
              erasure-encode-<level>            parity of 4104-byte shards (span ‖ payload) per level:
                                                medium 119+9, strong 107+21, insane 97+31, paranoid 37+89;
                                                MBps counts data bytes in
              erasure-reconstruct-<level>       the worst case: min(k, m) data shards lost, rebuilt in
                                                place; MBps counts data bytes of the stripes restored
              erasure-encode-k16_m20            zfec_speed.py's shape: 16 data + 4 parity blocks of 4096
              erasure-reconstruct-k16_m20       … with the first 4 data blocks lost (zfec's worst set)
              erasure-*-arrays-k16_m20          the same through the [[UInt8]] API (allocating, copying)
              zfec_encode_k16_m20, zfec_decode_k16_m20   zfec_speed.py's own lines, unchanged (--zfec)
            With --rounds N each round runs every case once, alternating which of Shoal and zfec goes
            first; then `*-median` lines and the ratios erasure-vs-zfec-encode/-decode (Shoal ÷ zfec
            medians) follow.
            """)

    @Option(help: "Bytes of data per case and round (suffixes K, M, G).")
    var bytes = "256M"

    @Option(help: "Rounds; medians are printed when there is more than one.")
    var rounds = 3

    @Option(help: "Path of peers/zfec_speed.py to run interleaved with Shoal's cases (needs python3 with zfec).")
    var zfec: String?

    @Option(help: "Data bytes held in memory per case (default: all of --bytes, as zfec_speed.py does); a smaller pool is cycled over.")
    var pool: String?

    func run() throws {
        guard let total = parseByteSize(bytes), total > 0 else { throw ValidationError("bad --bytes \(bytes)") }
        guard let poolBytes = parseByteSize(pool ?? bytes), poolBytes > 0 else { throw ValidationError("bad --pool \(pool ?? "")") }
        guard (1...100).contains(rounds) else { throw ValidationError("--rounds must be in 1...100") }
        var python: String?
        if let zfec {
            guard Files.exists(zfec) else { throw ValidationError("no zfec script at \(zfec)") }
            guard let found = ChildProcess.which("python3") else { throw BenchError("python3 not found in PATH") }
            python = found
        }

        let cases = ErasureCase.levels + [ErasureCase.zfecShape]
        var figures: [String: [Double]] = [:]
        for round in 0..<rounds {
            Output.note("round \(round + 1)/\(rounds)")
            let zfecFirst = round % 2 == 1
            if zfecFirst, let python, let zfec { try runZfec(python: python, script: zfec, total: total, into: &figures) }
            for erasureCase in cases {
                for line in try erasureCase.measure(totalBytes: total, poolBytes: poolBytes) {
                    line.emit()
                    if let mbps = line.mbps { figures[line.name, default: []].append(mbps) }
                }
            }
            if !zfecFirst, let python, let zfec { try runZfec(python: python, script: zfec, total: total, into: &figures) }
        }
        guard rounds > 1 || zfec != nil else { return }
        for name in figures.keys.sorted() {
            var line = ResultLine(name + "-median")
            line.add("MBps", median(figures[name]!))
            line.add("rounds", figures[name]!.count)
            line.emit()
        }
        for (ours, theirs, name) in [
            ("erasure-encode-k16_m20", "zfec_encode_k16_m20", "erasure-vs-zfec-encode"),
            ("erasure-reconstruct-k16_m20", "zfec_decode_k16_m20", "erasure-vs-zfec-decode"),
            ("erasure-encode-arrays-k16_m20", "zfec_encode_k16_m20", "erasure-arrays-vs-zfec-encode"),
            ("erasure-reconstruct-arrays-k16_m20", "zfec_decode_k16_m20", "erasure-arrays-vs-zfec-decode"),
        ] {
            guard let a = figures[ours], let b = figures[theirs] else { continue }
            var line = ResultLine(name)
            line.add("ratio", median(a) / median(b))
            line.add("shoal_MBps", median(a))
            line.add("zfec_MBps", median(b))
            line.add("rounds", min(a.count, b.count))
            line.emit()
        }
    }

    /// Runs `zfec_speed.py` in zfec's default shape over the same byte count, echoes its lines.
    private func runZfec(python: String, script: String, total: Int, into figures: inout [String: [Double]]) throws {
        let child = try ChildProcess.run(python, [script, String(total), "-k", "16", "-m", "20"], timeoutSeconds: 900)
        guard child.termination == .exited(0) else {
            throw BenchError("zfec_speed.py: \(child.termination.map { "\($0)" } ?? "?")\n\(child.stderrText.suffix(2000))")
        }
        for line in child.stdoutLines {
            guard let parsed = ResultLine.parse(line) else { continue }
            Output.line(String(line))
            if let mbps = parsed.fields["MBps"].flatMap(Double.init) { figures[parsed.name, default: []].append(mbps) }
        }
    }
}

extension ResultLine {
    /// The MBps figure this line carries, if any.
    var mbps: Double? { ResultLine.parse(text)?.fields["MBps"].flatMap(Double.init) }
}
