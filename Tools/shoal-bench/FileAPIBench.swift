import ArgumentParser
import ShoalCore

#if canImport(Glibc)
import Glibc
#endif

/// `shoal-bench file-api`: files through a real node's HTTP API: upload, download from two
/// nodes that hold the file, range reads, and the node's peak memory meanwhile; each beside a
/// reference measured in the same pass.
struct FileAPIBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "file-api",
        abstract: "Benchmark files through the HTTP API of real `shoal start` processes (release build).",
        discussion: """
            Each round (--rounds) runs on fresh nodes and a fresh random file of --bytes:
              torrent-2seeders        ../shared/peers/torrent_transfer.py SIZE --seeders 2 (its own line too; --no-peer skips it)
              sha256sum               `sha256sum FILE`, spawn to exit
              file-upload             POST /bytes on node A, Content-Length, body streamed from the file; until the 201
              store-put               `shoal-bench store` durable group-committed puts of the same number of 4 KiB chunks
              file-download-2seeders  B pulls the file from A; then C starts with --peer A --peer B; from C's spawn until
                                      GET /bytes/{ref} on C (Shoal-Wait-Seconds: 60) returned every byte, SHA-256 checked
              sync-2seeders           D starts with --peer A --peer B and only syncs: from D's spawn until its
                                      /status counts every chunk of the file (C first in odd rounds, D in even)
            then medians (NAME-median) and ratios of medians: upload-vs-sha256sum, upload-vs-store-put,
            download-vs-torrent-2seeders, download-vs-sync-2seeders. Then, unless --no-range, one node and a file of --range-file-bytes:
              rss-idle                VmHWM of the node just started
              file-upload-1g          POST /bytes of that file
              rss-upload-1g           the node's VmHWM after the upload
              range-ttfb              after a restart, --range-requests GETs of 1 MiB ranges about the middle: time to
                                      first and last body byte (from connect), medians; bytes checked
              file-download-local-1g  GET of the whole file from the same node, SHA-256 checked
              rss-download-1g         the restarted node's VmHWM after that download
            """)

    @Option(help: "Size of the file uploaded and downloaded each round (suffixes K, M, G).") var bytes = "256M"
    @Option(name: .customLong("range-file-bytes"), help: "Size of the file for the range reads and peak RSS.") var rangeFileBytes = "1G"
    @Option(help: "Rounds of upload and download, each interleaved with the torrent run.") var rounds = 3
    @Option(name: .customLong("range-requests"), help: "Range requests (the median is reported).") var rangeRequests = 9
    @Flag(name: .customLong("no-peer"), help: "Skip the libtorrent comparison.") var noPeer = false
    @Flag(name: .customLong("no-range"), help: "Skip the range reads and the peak-RSS figures.") var noRange = false
    @Option(name: .customLong("peers-dir"), help: "Directory of torrent_transfer.py (default: ../shared/peers from the working directory).")
    var peersDir: String?
    @Option(help: "Scratch directory (default: a fresh one, removed at the end).") var dir: String?
    @Option(help: "Path of the shoal executable (default: beside this one).") var shoal: String?
    @Option(help: "Bound in seconds on each wait: a sync, an upload, a download, a child process.") var timeout: Double = 600
    @Option var seed: UInt64 = 1
    @Flag(help: "Keep the scratch directory.") var keep = false

    static let rangeBytes = 1 << 20

    func validate() throws {
        guard let size = parseByteSize(bytes), size >= 1 else { throw ValidationError("bad --bytes \(bytes)") }
        guard size <= 1 << 40 else { throw ValidationError("--bytes is at most 1T") }
        guard let rangeSize = parseByteSize(rangeFileBytes), rangeSize >= 4 << 20, rangeSize <= 1 << 40 else {
            throw ValidationError("--range-file-bytes must be 4M…1T, got \(rangeFileBytes)")
        }
        guard (1...100).contains(rounds) else { throw ValidationError("--rounds must be 1…100") }
        guard (1...1000).contains(rangeRequests) else { throw ValidationError("--range-requests must be 1…1000") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }

    func run() throws {
        #if DEBUG
        Output.note("# note: this is a debug build; figures mean nothing (swift build -c release --product shoal-bench)")
        #endif
        let size = parseByteSize(bytes)!, rangeSize = parseByteSize(rangeFileBytes)!
        let shoal = self.shoal ?? siblingExecutable("shoal")
        guard Files.exists(shoal) else { throw BenchError("no shoal executable at \(shoal) (swift build -c release --product shoal, or --shoal)") }
        let scratch = try dir ?? Files.makeTemporaryDirectory(in: Files.defaultScratchParent(), prefix: "file-api")
        defer { if !keep && dir == nil { Files.removeTree(scratch) } }
        if dir != nil { try Files.makeDirectory(scratch) }
        Output.note("# scratch in \(scratch)")

        var figures = RoundFigures()
        for round in 1...rounds {
            if !noPeer {
                let peers = peersDir ?? Files.currentDirectory() + "/../shared/peers"
                if let fields = try FileAPIReferences.torrent2Seeders(peersDirectory: peers, bytes: size, timeoutSeconds: timeout),
                   let mbps = fields["MBps"].flatMap(Double.init), let seconds = fields["seconds"].flatMap(Double.init) {
                    var line = ResultLine("torrent-2seeders")
                    line.add("round", round)
                    line.throughput(bytes: size, seconds: seconds)
                    line.add("first_byte_s", fields["first_byte_s"] ?? "?")
                    line.add("src_split_pct", fields["src_split_pct"] ?? "?")
                    line.emit()
                    figures.torrent.append(mbps)
                }
            }
            let roundDir = scratch + "/round\(round)"
            try Files.makeDirectory(roundDir)
            try runRound(round, size: size, directory: roundDir, shoal: shoal, figures: &figures)
            if !keep { Files.removeTree(roundDir) }
        }
        figures.emitSummary()
        if !noRange {
            let rangeDir = scratch + "/range"
            try Files.makeDirectory(rangeDir)
            try rangeAndMemory(size: rangeSize, directory: rangeDir, shoal: shoal)
            if !keep { Files.removeTree(rangeDir) }
        }
    }

    private var deadline: Double { monotonicSeconds() + timeout }

    // MARK: Upload and download rounds

    private func runRound(_ round: Int, size: Int, directory: String, shoal: String, figures: inout RoundFigures) throws {
        Output.note("# round \(round): writing \(size) random bytes")
        let file = try RandomFile.write(directory + "/file.bin", size: size, seed: derivedSeed(seed, UInt64(round)))

        let shaSeconds = try FileAPIReferences.sha256sum(file, timeoutSeconds: timeout)
        var sha = ResultLine("sha256sum")
        sha.add("round", round)
        sha.throughput(bytes: size, seconds: shaSeconds)
        sha.emit()
        figures.sha256sum.append(Double(size) / 1e6 / shaSeconds)

        let a = try startNode("A", shoal: shoal, directory: directory, peers: [])
        defer { if a.child.termination == nil { a.kill() } }
        let upload = try FileAPIClient.upload(port: a.apiPort, file: file, deadline: deadline)
        var up = ResultLine("file-upload")
        up.add("round", round)
        up.throughput(bytes: size, seconds: upload.seconds)
        if let chunks = upload.chunks { up.add("chunks", chunks) }
        up.add("node_cpu_s", a.usage().cpuSeconds)
        up.add("node_peak_rss_kib", procStatusKiB(a.child.pid, "VmHWM") ?? -1)
        up.add("reference", upload.reference)
        up.emit()
        figures.upload.append(Double(size) / 1e6 / upload.seconds)

        let leaves = (size + Chunk.payloadMax - 1) / Chunk.payloadMax
        let put = try FileAPIReferences.storePut(chunks: leaves, scratchParent: directory, timeoutSeconds: timeout)
        guard let putSeconds = put["seconds"].flatMap(Double.init), putSeconds > 0 else { throw BenchError("store-put-durable without seconds") }
        var store = ResultLine("store-put")
        store.add("round", round)
        store.add("chunks", leaves)
        store.throughput(bytes: leaves * Chunk.payloadMax, seconds: putSeconds)
        store.add("commits", put["commits"] ?? "?")
        store.emit()
        figures.storePut.append(Double(leaves * Chunk.payloadMax) / 1e6 / putSeconds)

        // B takes the file from A by pull sync; C then has two nodes that hold it.
        let held = try chunkCount(a)
        let b = try startNode("B", shoal: shoal, directory: directory, peers: [a.listen])
        defer { if b.child.termination == nil { b.kill() } }
        let syncStarted = monotonicSeconds()
        try waitForChunks(b, count: held, others: [a])
        let syncSeconds = monotonicSeconds() - syncStarted

        // C reads the file while it arrives; D only syncs it. They alternate who goes first,
        // since the first warms A's and B's page cache for the second.
        let holders = Holders(a: a, b: b, chunks: held, bSyncSeconds: syncSeconds)
        if round % 2 == 1 {
            try downloadOnC(round, holders: holders, file: file, reference: upload.reference, shoal: shoal, directory: directory, figures: &figures)
            try syncOnD(round, holders: holders, size: size, shoal: shoal, directory: directory, figures: &figures)
        } else {
            try syncOnD(round, holders: holders, size: size, shoal: shoal, directory: directory, figures: &figures)
            try downloadOnC(round, holders: holders, file: file, reference: upload.reference, shoal: shoal, directory: directory, figures: &figures)
        }
        try stopAll([b, a])
    }

    /// Two nodes that hold the file: A (it was uploaded there) and B (it pulled it from A).
    private struct Holders {
        let a: NodeProcess
        let b: NodeProcess
        let chunks: Int
        let bSyncSeconds: Double
    }

    /// C starts with both holders as peers; from its spawn until `GET /bytes/{ref}` on it
    /// returned every byte (it waits for what pull sync brings).
    private func downloadOnC(_ round: Int, holders: Holders, file: RandomFile, reference: String, shoal: String,
                             directory: String, figures: inout RoundFigures) throws {
        let (a, b) = (holders.a, holders.b)
        let servedBefore = try (served(a), served(b))
        let cpuBefore = (a.usage().cpuSeconds, b.usage().cpuSeconds)
        let started = monotonicSeconds()
        let c = try startNode("C", shoal: shoal, directory: directory, peers: [a.listen, b.listen])
        defer { if c.child.termination == nil { c.kill() } }
        let readySeconds = monotonicSeconds() - started
        let got = try FileAPIClient.downloadChecked(port: c.apiPort, reference: reference, file: file,
                                                    headers: ["Shoal-Wait-Seconds: 60"], deadline: deadline)
        let seconds = monotonicSeconds() - started
        let statusC = try c.getJSON("/status")
        let servedA = try served(a) - servedBefore.0, servedB = try served(b) - servedBefore.1
        var down = ResultLine("file-download-2seeders")
        down.add("round", round)
        down.throughput(bytes: file.size, seconds: seconds)
        down.add("ready_s", readySeconds)
        down.add("first_byte_s", readySeconds + got.firstByteSeconds)
        down.add("MBps_from_ready", Double(file.size) / 1e6 / (seconds - readySeconds))
        down.add("b_sync_s", holders.bSyncSeconds)
        down.add("chunks_held", holders.chunks)
        down.add("c_received", statusC["chunksReceived"] as? Int ?? -1)
        down.add("c_duplicate", statusC["chunksDuplicate"] as? Int ?? -1)
        down.add("served_a", servedA)
        down.add("served_b", servedB)
        down.add("a_cpu_s", a.usage().cpuSeconds - cpuBefore.0)
        down.add("b_cpu_s", b.usage().cpuSeconds - cpuBefore.1)
        down.add("c_cpu_s", c.usage().cpuSeconds)
        down.add("c_peak_rss_kib", procStatusKiB(c.child.pid, "VmHWM") ?? -1)
        down.emit()
        figures.download.append(Double(file.size) / 1e6 / seconds)
        try stopAll([c])
    }

    /// The same two sources without the reader: D only pull-syncs, so the difference to C is
    /// what reading through `GET /bytes` while the chunks arrive costs.
    private func syncOnD(_ round: Int, holders: Holders, size: Int, shoal: String, directory: String,
                         figures: inout RoundFigures) throws {
        let started = monotonicSeconds()
        let d = try startNode("D", shoal: shoal, directory: directory, peers: [holders.a.listen, holders.b.listen])
        defer { if d.child.termination == nil { d.kill() } }
        try waitForChunks(d, count: holders.chunks, others: [holders.a, holders.b])
        let seconds = monotonicSeconds() - started
        var line = ResultLine("sync-2seeders")
        line.add("round", round)
        line.throughput(bytes: size, seconds: seconds)
        line.add("d_cpu_s", d.usage().cpuSeconds)
        line.add("d_peak_rss_kib", procStatusKiB(d.child.pid, "VmHWM") ?? -1)
        line.emit()
        figures.syncOnly.append(Double(size) / 1e6 / seconds)
        try stopAll([d])
    }

    // MARK: Range reads and memory

    private func rangeAndMemory(size: Int, directory: String, shoal: String) throws {
        Output.note("# range file: writing \(size) random bytes")
        let file = try RandomFile.write(directory + "/file.bin", size: size, seed: derivedSeed(seed, 0xF11E))
        var node = try startNode("R", shoal: shoal, directory: directory, peers: [])
        defer { if node.child.termination == nil { node.kill() } }
        usleep(1_000_000)
        let idle = try memory(node)
        var idleLine = ResultLine("rss-idle")
        idleLine.add("kib", idle.hwm)
        idleLine.add("rss_kib", idle.rss)
        idleLine.add("anon_kib", procStatusKiB(node.child.pid, "RssAnon") ?? -1)
        idleLine.add("file_kib", procStatusKiB(node.child.pid, "RssFile") ?? -1)
        idleLine.emit()

        let upload = try FileAPIClient.upload(port: node.apiPort, file: file, deadline: deadline)
        var up = ResultLine("file-upload-1g")
        up.throughput(bytes: size, seconds: upload.seconds)
        if let chunks = upload.chunks { up.add("chunks", chunks) }
        up.emit()
        try emitMemory("rss-upload-1g", node, idle: idle, size: size)

        // A restart, so the download's peak is its own and the reads start from the store.
        try stopAll([node])
        node = try startNode("R", shoal: shoal, directory: directory, peers: [])
        usleep(1_000_000)
        let idleAgain = try memory(node)

        try rangeReads(node, reference: upload.reference, file: file)

        let beforeDownload = try memory(node)
        let got = try FileAPIClient.downloadChecked(port: node.apiPort, reference: upload.reference, file: file, deadline: deadline)
        var down = ResultLine("file-download-local-1g")
        down.throughput(bytes: size, seconds: got.seconds)
        down.add("first_byte_ms", got.firstByteSeconds * 1000)
        down.emit()
        try emitMemory("rss-download-1g", node, idle: idleAgain, before: beforeDownload, size: size)
        try stopAll([node])
    }

    /// 1 MiB ranges about the middle of the file, each starting off a chunk boundary and
    /// `stride` apart, so that no request reads a chunk an earlier one read.
    private func rangeReads(_ node: NodeProcess, reference: String, file: RandomFile) throws {
        let length = Self.rangeBytes
        let stride = min(8 << 20, file.size / 2 / rangeRequests)
        var ttfb: [Double] = [], ttlb: [Double] = [], head: [Double] = []
        for i in 0..<rangeRequests {
            let wanted = file.size / 2 - length / 2 + (i - rangeRequests / 2) * stride + 1237
            let start = max(0, min(file.size - length, wanted))
            let range = start...(start + length - 1)
            var body: [UInt8] = []
            body.reserveCapacity(length)
            let got = try FileAPIClient.download(port: node.apiPort, reference: reference, range: range, expectedStatus: 206,
                                                 bytesMax: length, deadline: deadline) { body += $0 }
            let contentRange = got.head.header("content-range")
            guard contentRange == "bytes \(range.lowerBound)-\(range.upperBound)/\(file.size)" else {
                throw BenchError("range \(range): Content-Range \(contentRange ?? "absent")")
            }
            guard body == (try file.bytes(at: start, count: length)) else {
                throw BenchError("range \(range): \(body.count) bytes that differ from the file's")
            }
            ttfb.append(got.firstByteSeconds * 1000)
            ttlb.append(got.seconds * 1000)
            head.append(got.headSeconds * 1000)
        }
        var line = ResultLine("range-ttfb")
        line.add("requests", rangeRequests)
        line.add("range_bytes", length)
        line.add("file_bytes", file.size)
        line.add("ttfb_ms", median(ttfb))
        line.add("ttfb_ms_min", ttfb.min()!)
        line.add("ttfb_ms_max", ttfb.max()!)
        line.add("first_ttfb_ms", ttfb[0])
        line.add("head_ms", median(head))
        line.add("ttlb_ms", median(ttlb))
        line.add("MBps", Double(length) / 1e3 / median(ttlb))
        line.emit()
    }

    // MARK: Nodes

    private func startNode(_ name: String, shoal: String, directory: String, peers: [String]) throws -> NodeProcess {
        let data = directory + "/" + name.lowercased()
        return try NodeProcess.start(name, shoal: shoal, dataDirectory: data, peers: peers, logPath: data + ".log")
    }

    /// `name kib=<VmHWM now>` beside the idle peak (and the peak before the step, if given).
    private func emitMemory(_ name: String, _ node: NodeProcess, idle: (hwm: Int, rss: Int),
                            before: (hwm: Int, rss: Int)? = nil, size: Int) throws {
        let now = try memory(node)
        var line = ResultLine(name)
        line.add("kib", now.hwm)
        line.add("idle_kib", idle.hwm)
        if let before { line.add("before_kib", before.hwm) }
        line.add("rss_now_kib", now.rss)
        // What the resident set is made of now: the heap and stacks, and mapped files (LMDB's map).
        line.add("anon_now_kib", procStatusKiB(node.child.pid, "RssAnon") ?? -1)
        line.add("file_now_kib", procStatusKiB(node.child.pid, "RssFile") ?? -1)
        line.add("file_bytes", size)
        line.emit()
    }

    private func memory(_ node: NodeProcess) throws -> (hwm: Int, rss: Int) {
        guard let hwm = procStatusKiB(node.child.pid, "VmHWM"), let rss = procStatusKiB(node.child.pid, "VmRSS") else {
            throw BenchError("\(node.name): no /proc/\(node.child.pid)/status (did it exit?)")
        }
        return (hwm, rss)
    }

    private func chunkCount(_ node: NodeProcess) throws -> Int {
        guard let chunks = try node.getJSON("/status")["chunks"] as? Int else { throw BenchError("\(node.name): /status has no chunks") }
        return chunks
    }

    private func served(_ node: NodeProcess) throws -> Int {
        try node.getJSON("/status")["chunksServed"] as? Int ?? 0
    }

    /// Polls `node`'s `/status` until it holds `count` chunks, at most `timeout` seconds.
    private func waitForChunks(_ node: NodeProcess, count: Int, others: [NodeProcess]) throws {
        let until = deadline
        var held = 0
        while monotonicSeconds() < until {
            node.drain()
            for other in others { other.drain() }
            held = try chunkCount(node)
            if held >= count { return }
            usleep(20_000)
        }
        throw BenchError("\(node.name) holds \(held) of \(count) chunks after \(timeout) s")
    }

    /// SIGTERM to each in turn; each must exit 0, and its store must pass `lmdb-inspect verify`
    /// when that tool is beside this one.
    private func stopAll(_ nodes: [NodeProcess]) throws {
        for node in nodes {
            let ended = node.stop()
            guard ended == .exited(0) else {
                let log = (try? String(contentsOfFile: node.dataDirectory + ".log", encoding: .utf8)) ?? ""
                throw BenchError("\(node.name) ended with \(ended), not exit 0\n\(log.suffix(2000))")
            }
            if Files.exists(siblingExecutable("lmdb-inspect")) && !verifyWithInspector(node.dataDirectory) {
                throw BenchError("lmdb-inspect verify \(node.dataDirectory) failed")
            }
        }
    }
}

/// Per-round figures in MB/s, and what is printed from them at the end.
struct RoundFigures {
    var upload: [Double] = []
    var sha256sum: [Double] = []
    var storePut: [Double] = []
    var download: [Double] = []
    var torrent: [Double] = []
    var syncOnly: [Double] = []

    func emitSummary() {
        for (name, values) in [("file-upload", upload), ("sha256sum", sha256sum), ("store-put", storePut),
                               ("file-download-2seeders", download), ("torrent-2seeders", torrent),
                               ("sync-2seeders", syncOnly)] where !values.isEmpty {
            var line = ResultLine(name + "-median")
            line.add("rounds", values.count)
            line.add("MBps", median(values))
            line.add("runs", values.map(ResultLine.format).joined(separator: "/"))
            line.emit()
        }
        Self.ratio("upload-vs-sha256sum", upload, sha256sum)
        Self.ratio("upload-vs-store-put", upload, storePut)
        Self.ratio("download-vs-torrent-2seeders", download, torrent)
        Self.ratio("download-vs-sync-2seeders", download, syncOnly)
    }

    /// The ratio of the medians, and each round's own ratio (the two were measured minutes apart).
    private static func ratio(_ name: String, _ ours: [Double], _ theirs: [Double]) {
        guard !ours.isEmpty, !theirs.isEmpty else { return }
        var line = ResultLine(name)
        line.add("ratio", median(ours) / median(theirs))
        line.add("ours_MBps", median(ours))
        line.add("theirs_MBps", median(theirs))
        line.add("per_round", zip(ours, theirs).map { ResultLine.format($0 / $1) }.joined(separator: "/"))
        line.emit()
    }
}
