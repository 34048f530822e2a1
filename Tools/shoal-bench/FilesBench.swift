import ArgumentParser
import Crypto
import ShoalCore
import ShoalFiles

/// Split and join of a file's chunk tree in memory: the pure cost of `ShoalFiles` (hashing,
/// tree building, parity, re-hashing and re-assembly), no store and no network.
///
/// Peer in the same run: SHA-256 over the same bytes in 4096-byte pieces (a split hashes each
/// leaf once, a join hashes each chunk again), so the figures say how far above the hash floor
/// the tree code costs. Rounds interleave sha256, split and join; each figure is the median.
struct FilesBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "files",
        abstract: "Split and join of a chunk tree from an in-memory source: MB/s against SHA-256 of the same bytes.")

    @Option(help: "File size (suffixes K, M, G).") var bytes: String = "256M"
    @Option(help: "Redundancy levels to measure, comma-separated (none, medium, strong, insane, paranoid).")
    var levels: String = "none"
    @Option(help: "Rounds; each figure is the median.") var rounds: Int = 3
    @Option(help: "Leaves the join requests ahead.") var prefetch: Int = 64
    @Option(help: "Also join with this percentage of the chunks (all but the root) lost at random: the rebuild path (levels with parity).")
    var lose: Double = 0
    @Option var seed: UInt64 = 1

    /// What the split is fed in each call.
    static let pieceBytes = 1 << 20

    func run() async throws {
        guard let total = parseByteSize(bytes), total > 0 else { throw ValidationError("bad --bytes \(bytes)") }
        let parsed = levels.split(separator: ",").map { RedundancyLevel(name: String($0)) }
        guard !parsed.isEmpty, parsed.allSatisfy({ $0 != nil }) else { throw ValidationError("bad --levels \(levels)") }
        let chosen = parsed.compactMap { $0 }
        var hashSeconds = [Double]()
        var splitSeconds = [RedundancyLevel: [Double]]()
        var joinSeconds = [RedundancyLevel: [Double]]()
        var chunkCounts = [RedundancyLevel: Int]()
        var lossySeconds = [RedundancyLevel: [Double]]()
        var lostCounts = [RedundancyLevel: Int]()
        var lossyFailures = [RedundancyLevel: Int]()
        for round in 1...max(1, rounds) {
            hashSeconds.append(hashPass(total: total))
            for level in chosen {
                let (seconds, source, root) = try splitPass(total: total, level: level)
                splitSeconds[level, default: []].append(seconds)
                chunkCounts[level] = source.chunks.count
                joinSeconds[level, default: []].append(try await joinPass(root: root, source: source, total: total))
                if lose > 0 && level != .none {
                    let (lossy, lost) = losing(lose, of: source, keeping: root, round: round)
                    lostCounts[level] = lost
                    do {
                        lossySeconds[level, default: []].append(try await joinPass(root: root, source: lossy, total: total))
                    } catch let error as FileError {
                        // More children of some intermediate lost than its parity covers.
                        Output.note("round \(round) \(level) with \(lost) chunks lost: \(error)")
                        lossyFailures[level, default: 0] += 1
                    }
                }
                Output.note("round \(round) \(level): split \(ResultLine.format(seconds)) s, join \(ResultLine.format(joinSeconds[level]!.last!)) s")
            }
        }
        var line = ResultLine("files-sha256")
        line.throughput(bytes: total, seconds: median(hashSeconds))
        line.add("rounds", hashSeconds.count)
        line.emit()
        for level in chosen {
            for (name, seconds) in [("files-split", splitSeconds[level]!), ("files-join", joinSeconds[level]!)] {
                var line = ResultLine(name)
                line.add("level", "\(level)")
                line.throughput(bytes: total, seconds: median(seconds))
                line.add("chunks", chunkCounts[level] ?? 0)
                line.add("rounds", seconds.count)
                if name == "files-join" { line.add("prefetch", prefetch) }
                line.emit()
            }
            if lose > 0 && level != .none {
                let seconds = lossySeconds[level] ?? []
                var line = ResultLine("files-join-lossy")
                line.add("level", "\(level)")
                line.throughput(bytes: seconds.isEmpty ? 0 : total, seconds: seconds.isEmpty ? 0 : median(seconds))
                line.add("failed_rounds", lossyFailures[level] ?? 0)
                line.add("lost_percent", lose)
                line.add("lost_chunks", lostCounts[level] ?? 0)
                line.add("rounds", seconds.count)
                line.emit()
            }
        }
    }

    /// The bytes of piece `index`: seeded, different for every piece.
    func piece(_ index: Int, count: Int) -> [UInt8] {
        var rng = SplitMix64(seed: seed &+ UInt64(index) &* 0x9E37_79B9)
        return rng.bytes(count)
    }

    func hashPass(total: Int) -> Double {
        var seconds = 0.0
        var sink: UInt8 = 0
        for (index, offset) in stride(from: 0, to: total, by: Self.pieceBytes).enumerated() {
            let bytes = piece(index, count: min(Self.pieceBytes, total - offset))
            let started = monotonicSeconds()
            bytes.withUnsafeBytes { raw in
                for leaf in stride(from: 0, to: raw.count, by: 4096) {
                    let digest = SHA256.hash(data: UnsafeRawBufferPointer(rebasing: raw[leaf..<min(leaf + 4096, raw.count)]))
                    sink ^= digest.withUnsafeBytes { $0[0] }
                }
            }
            seconds += monotonicSeconds() - started
        }
        if sink == 0 { Output.note("") }  // keeps the hashes from being optimized away
        return seconds
    }

    /// Splits `total` bytes into an in-memory source; only the splitter's calls are timed.
    func splitPass(total: Int, level: RedundancyLevel) throws -> (Double, MemoryChunks, ChunkAddress) {
        var splitter = FileSplitter(redundancy: level)
        var source = MemoryChunks()
        var seconds = 0.0
        for (index, offset) in stride(from: 0, to: total, by: Self.pieceBytes).enumerated() {
            let bytes = piece(index, count: min(Self.pieceBytes, total - offset))
            let started = monotonicSeconds()
            let chunks = try splitter.append(bytes)
            seconds += monotonicSeconds() - started
            for chunk in chunks { source.chunks[chunk.address] = chunk }
        }
        let started = monotonicSeconds()
        let (root, size, chunks) = try splitter.finish()
        seconds += monotonicSeconds() - started
        for chunk in chunks { source.chunks[chunk.address] = chunk }
        guard size == UInt64(total) else { throw BenchError("split \(size) bytes of \(total)") }
        return (seconds, source, root)
    }

    /// A copy of `source` without `percent` % of its chunks (never the root), chosen at random.
    func losing(_ percent: Double, of source: MemoryChunks, keeping root: ChunkAddress, round: Int) -> (MemoryChunks, Int) {
        var rng = SplitMix64(seed: seed &+ UInt64(round))
        var lossy = source
        var lost = 0
        for address in source.chunks.keys.sorted() where address != root && Double(rng.next() % 1_000_000) < percent * 10_000 {
            lossy.chunks[address] = nil
            lost += 1
        }
        return (lossy, lost)
    }

    /// Reads the whole file back and checks each piece of it against the bytes split.
    func joinPass(root: ChunkAddress, source: MemoryChunks, total: Int) async throws -> Double {
        let started = monotonicSeconds()
        let reader = try await FileReader.open(root: root, source: source)
        var count = 0
        var first = [UInt8]()
        for try await bytes in reader.bytes(prefetch: prefetch) {
            if first.count < 4096 { first += bytes.prefix(4096 - first.count) }
            count += bytes.count
        }
        let seconds = monotonicSeconds() - started
        guard count == total, first == Array(piece(0, count: min(Self.pieceBytes, total)).prefix(4096)) else {
            throw BenchError("joined \(count) bytes of \(total), or the first leaf differs")
        }
        return seconds
    }
}

/// Every chunk of the split in a dictionary: the join's source.
struct MemoryChunks: ChunkSource {
    var chunks: [ChunkAddress: Chunk] = [:]
    func chunk(_ address: ChunkAddress) async throws -> Chunk? { chunks[address] }
}
