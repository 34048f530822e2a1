import ArgumentParser
import Foundation
import LMDB
import ShoalCore
import ShoalStore

// MARK: chunks

struct Chunks: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List stored chunks: address, bin, bin ID, span, length, slot.",
        discussion: "Chunks are listed bin by bin, in bin-ID order (the order pull sync offers them), from the `pull` index.")

    @OptionGroup var location: StoreLocation
    @Option(help: "Only this bin (0…31).") var bin: Int?
    @OptionGroup var limit: LimitOption
    @OptionGroup var output: OutputOptions

    func validate() throws {
        if let bin, !(0..<Proximity.binCount).contains(bin) {
            throw ValidationError("--bin must be 0…\(Proximity.maxBin); got \(bin)")
        }
    }

    struct Entry: Encodable {
        var address: String
        var bin: Int
        var binID: UInt64
        /// nil when the `pull` entry points to a chunk with no record (run `verify`).
        var span: UInt64?
        var length: UInt16?
        var slot: UInt64?
        var problem: String?
    }

    /// Entries are read from `pull` in pages, so memory stays bounded however large the store.
    static let pageEntriesMax = 4096

    func run() throws {
        try runReporting(json: output.json) {
            try location.withReadOnlyStore { store in
                let listing = Listing(json: output.json, arrayKey: "chunks", textHeader:
                    Format.pad("address", 66) + Format.padLeft("bin", 4) + Format.padLeft("bin ID", 12)
                        + Format.padLeft("span", 12) + Format.padLeft("length", 8) + Format.padLeft("slot", 12))
                var truncated = false
                let snapshot = try store.read { reader -> Int in
                    bins: for b in bin.map({ [$0] }) ?? Array(0..<Proximity.binCount) {
                        var from: UInt64 = 1
                        while true {
                            let page = try reader.range(bin: b, from: from, limit: Chunks.pageEntriesMax)
                            for (binID, address) in page {
                                guard listing.count < limit.count else { truncated = true; break bins }
                                let e = try Chunks.entry(reader, b, binID, address)
                                listing.add(e, text: Chunks.row(e))
                            }
                            guard page.count == Chunks.pageEntriesMax, let last = page.last?.binID, last < .max else { break }
                            from = last + 1
                        }
                    }
                    return reader.transactionID
                }
                listing.finish(trailer: ListingTrailer(count: listing.count, truncated: truncated, snapshotTransactionID: snapshot),
                               textFooter: Format.listed(listing.count, truncated: truncated, "chunk"))
                return ExitStatus.ok
            }
        }
    }

    static func entry(_ reader: StoreReader, _ bin: Int, _ binID: UInt64, _ address: ChunkAddress) throws -> Entry {
        var e = Entry(address: address.hex, bin: bin, binID: binID)
        do {
            guard let record = try reader.record(address) else {
                e.problem = "no chunk record (run verify)"
                return e
            }
            (e.span, e.length, e.slot) = (record.span, record.length, record.slot)
            if Int(record.bin) != bin || record.binID != binID {
                e.problem = "record says bin \(record.bin), bin ID \(record.binID)"
            }
        } catch let error as LMDBDecodingError {
            e.problem = "record does not decode: \(error.message)"
        }
        return e
    }

    static func row(_ e: Entry) -> String {
        var s = Format.pad(e.address, 66) + Format.padLeft(e.bin, 4) + Format.padLeft(e.binID, 12)
        s += Format.padLeft(e.span.map(String.init) ?? "-", 12) + Format.padLeft(e.length.map(String.init) ?? "-", 8)
            + Format.padLeft(e.slot.map(String.init) ?? "-", 12)
        if let problem = e.problem { s += "  ! " + problem }
        return s
    }
}

// MARK: chunk

struct ChunkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chunk",
        abstract: "Show one chunk's record and check that its payload re-hashes to its address.",
        discussion: "Exit status 1 when the chunk is absent or its payload does not hash to its address.")

    @OptionGroup var location: StoreLocation
    @Argument(help: ArgumentHelp("The chunk address: 64 hex digits.", valueName: "address"))
    var address: String
    @Flag(help: "Also print the payload (hex dump; in JSON, a hex string).") var payload = false
    @OptionGroup var output: OutputOptions

    func validate() throws { _ = try parseAddress(address, "ADDRESS") }

    struct Report: Encodable {
        var address: String
        var present: Bool
        var bin: Int?
        var binID: UInt64?
        var span: UInt64?
        var length: UInt16?
        var slot: UInt64?
        /// Byte offset of the payload in chunks.slots.
        var slotOffset: UInt64?
        /// The payload re-hashes to the address.
        var intact: Bool?
        /// `pull` holds (bin, bin ID) → this address.
        var indexed: Bool?
        /// Which table holds the record: `landing` (not merged yet) or `chunks`.
        var table: String?
        var problems: [String] = []
        /// When absent: the fetch-set entry, if the node still wants the chunk.
        var fetch: FetchEntry?
        var payloadHex: String?
        var snapshotTransactionID: Int
    }

    func run() throws {
        let wanted = try parseAddress(address, "ADDRESS")
        try runReporting(json: output.json) {
            try location.withReadOnlyStore { store in
                let (report, payloadBytes) = try store.read { reader in try inspect(reader, wanted, overlay: store.overlay) }
                if output.json {
                    var r = report
                    if payload { r.payloadHex = payloadBytes.map { Format.hex($0) } }
                    Output.json(r)
                } else {
                    Output.line(text(report))
                    if payload, let payloadBytes {
                        Output.line("payload (\(payloadBytes.count) bytes):")
                        Output.line(Format.hexDump(payloadBytes))
                    }
                }
                return report.present && report.problems.isEmpty ? ExitStatus.ok : ExitStatus.problems
            }
        }
    }

    private func inspect(_ reader: StoreReader, _ address: ChunkAddress, overlay: OverlayAddress) throws -> (Report, [UInt8]?) {
        var r = Report(address: address.hex, present: false, snapshotTransactionID: reader.transactionID)
        let record: ChunkRecord?
        do {
            record = try reader.record(address)
        } catch let error as LMDBDecodingError {
            r.present = true
            r.problems.append("record does not decode: \(error.message)")
            return (r, nil)
        }
        guard let record else {
            r.fetch = try reader.fetchEntry(address).map { FetchEntry(address, $0) }
            return (r, nil)
        }
        r.present = true
        (r.bin, r.binID, r.span, r.length, r.slot) = (Int(record.bin), record.binID, record.span, record.length, record.slot)
        r.table = try reader.isLanded(address) ? Schema.Name.landing : Schema.Name.chunks
        let indexed = try reader.range(bin: Int(record.bin), from: record.binID, limit: 1).first
        r.indexed = indexed?.binID == record.binID && indexed?.address == address
        if r.indexed == false {
            r.problems.append("no pull entry \(record.bin)/\(record.binID) pointing to it")
        }
        let expectedBin = Proximity.bin(of: address, relativeTo: overlay)
        if expectedBin != Int(record.bin) {
            r.problems.append("recorded in bin \(record.bin), but its proximity to the overlay puts it in bin \(expectedBin)")
        }
        let slotsNext = try reader.slotsNext()
        guard SlotBounds.isHandedOut(record.slot, slotsNext: slotsNext) else {
            // Not read: no payload of this store lives there, and ShoalStore's slot file traps
            // on offsets beyond Int64 rather than throwing.
            r.intact = false
            r.problems.append("slot \(record.slot) lies beyond the \(slotsNext) slots handed out")
            return (r, nil)
        }
        r.slotOffset = record.slot * UInt64(Schema.slotSize)
        do {
            _ = try reader.chunk(address, verify: true)
            r.intact = true
        } catch let error as ChunkError {
            r.intact = false
            r.problems.append("payload does not hash to the address: \(error)")
        } catch let error as StoreError {
            r.intact = false
            r.problems.append("payload unreadable: \(InspectFailure.oneLine(error.description))")
        }
        var bytes: [UInt8]?
        if payload {
            var buffer = [UInt8](repeating: 0, count: Int(record.length))
            do {
                _ = try buffer.withUnsafeMutableBytes { try reader.readPayload(address, into: $0) }
                bytes = buffer
            } catch {
                bytes = nil  // Already reported as unreadable above.
            }
        }
        return (r, bytes)
    }

    private func text(_ r: Report) -> String {
        guard r.present else {
            var s = "chunk \(r.address) is not in the store"
            if let f = r.fetch {
                s += "\nin the fetch set: attempts \(f.attempts), next attempt \(Format.timeText(ms: f.nextAttemptMs)), hints \(f.hints.count)"
            }
            return s
        }
        var lines = ["chunk     \(r.address)"]
        if let bin = r.bin, let binID = r.binID, let span = r.span, let length = r.length, let slot = r.slot {
            lines.append("bin       \(bin), bin ID \(binID)")
            lines.append("span      \(span)")
            lines.append("length    \(length)")
            lines.append("slot      \(slot)" + (r.slotOffset.map { " (offset \($0) in \(Schema.slotFileName))" } ?? ""))
            lines.append("record    in `\(r.table ?? "?")`" + (r.table == Schema.Name.landing ? " (not merged into `chunks` yet)" : ""))
            lines.append("indexed   \(r.indexed == true ? "yes" : "no")")
            lines.append("hash      \(r.intact == true ? "intact: the payload re-hashes to the address" : "DAMAGED")")
        }
        for p in r.problems { lines.append("problem   \(p)") }
        return lines.joined(separator: "\n")
    }
}

// MARK: intervals

struct Intervals: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List synced intervals: per peer and bin, the peer's epoch and the bin-ID ranges synced.")

    @OptionGroup var location: StoreLocation
    @Option(help: ArgumentHelp("Only this peer's intervals (its overlay: 64 hex digits).", valueName: "overlay"))
    var peer: String?
    @OptionGroup var limit: LimitOption
    @OptionGroup var output: OutputOptions

    func validate() throws { if let peer { _ = try parseAddress(peer, "--peer") } }

    struct Entry: Encodable {
        var peer: String
        var bin: Int
        var epoch: UInt64
        /// [from, to] pairs, inclusive.
        var ranges: [[UInt64]]
        /// Bin IDs covered.
        var synced: UInt64
    }

    func run() throws {
        let peerAddress = try peer.map { try parseAddress($0, "--peer") }
        try runReporting(json: output.json) {
            try location.withReadOnlyStore { store in
                let (records, snapshot) = try store.read { r in (try r.allIntervals(peer: peerAddress), r.transactionID) }
                let listing = Listing(json: output.json, arrayKey: "intervals", textHeader:
                    Format.pad("peer", 66) + Format.padLeft("bin", 4) + "  " + Format.pad("epoch", 21) + Format.padLeft("synced", 10) + "  ranges")
                for (key, record) in records.prefix(limit.count) {
                    let e = Entry(peer: key.peer.hex, bin: Int(key.bin), epoch: record.epoch,
                                  ranges: record.ranges.map { [$0.lowerBound, $0.upperBound] }, synced: IntervalSet(record.ranges).count)
                    listing.add(e, text: Format.pad(e.peer, 66) + Format.padLeft(e.bin, 4) + "  " + Format.pad("\(e.epoch)", 21)
                                + Format.padLeft(e.synced, 10) + "  " + record.ranges.map { "\($0.lowerBound)-\($0.upperBound)" }.joined(separator: ","))
                }
                let truncated = records.count > limit.count
                listing.finish(trailer: ListingTrailer(count: listing.count, truncated: truncated, snapshotTransactionID: snapshot),
                               textFooter: Format.listed(listing.count, truncated: truncated, "interval record"))
                return ExitStatus.ok
            }
        }
    }
}

// MARK: fetch

struct FetchEntry: Encodable {
    var address: String
    var attempts: UInt32
    var nextAttemptMs: UInt64
    var nextAttempt: String?
    /// The download (root address) the fetch belongs to.
    var group: String?
    var hints: [String]

    init(_ address: ChunkAddress, _ r: FetchRecord) {
        self.address = address.hex
        attempts = r.attempts
        nextAttemptMs = r.nextAttemptMs
        nextAttempt = Format.time(ms: r.nextAttemptMs)
        group = r.group?.hex
        hints = r.hints.map(\.hex)
    }
}

struct Fetch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the fetch set: chunks the node still has to fetch, with attempts, back-off and hints.")

    @OptionGroup var location: StoreLocation
    @OptionGroup var limit: LimitOption
    @OptionGroup var output: OutputOptions

    func run() throws {
        try runReporting(json: output.json) {
            try location.withReadOnlyStore { store in
                let (entries, snapshot) = try store.read { r in
                    (try r.fetchSet(limit: limit.count == .max ? .max : limit.count + 1), r.transactionID)
                }
                let listing = Listing(json: output.json, arrayKey: "fetch", textHeader:
                    Format.pad("address", 66) + Format.padLeft("attempts", 9) + "  " + Format.pad("next attempt", 26)
                        + Format.pad("group", 18) + "hints")
                for (address, record) in entries.prefix(limit.count) {
                    let e = FetchEntry(address, record)
                    listing.add(e, text: Format.pad(e.address, 66) + Format.padLeft(e.attempts, 9) + "  "
                                + Format.pad(e.nextAttempt ?? "now", 26) + Format.pad(e.group.map { String($0.prefix(16)) } ?? "-", 18)
                                + "\(e.hints.count)" + (e.hints.isEmpty ? "" : ": " + e.hints.map { String($0.prefix(16)) }.joined(separator: " ")))
                }
                let truncated = entries.count > limit.count
                listing.finish(trailer: ListingTrailer(count: listing.count, truncated: truncated, snapshotTransactionID: snapshot),
                               textFooter: Format.listed(listing.count, truncated: truncated, "fetch entry", "fetch entries"))
                return ExitStatus.ok
            }
        }
    }
}

// MARK: peers

struct Peers: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List known peers: overlay, network addresses, last seen, score, ban.")

    @OptionGroup var location: StoreLocation
    @OptionGroup var limit: LimitOption
    @OptionGroup var output: OutputOptions

    struct Entry: Encodable {
        var overlay: String
        var addresses: [String]
        var lastSeenMs: UInt64
        var lastSeen: String?
        var score: Int64
        var banUntilMs: UInt64
        var banUntil: String?
        /// Banned as of now (this machine's clock).
        var banned: Bool
    }

    func run() throws {
        let now = Store.wallClockMs()
        try runReporting(json: output.json) {
            try location.withReadOnlyStore { store in
                let (entries, snapshot) = try store.read { r in
                    (try r.peers(limit: limit.count == .max ? .max : limit.count + 1), r.transactionID)
                }
                let listing = Listing(json: output.json, arrayKey: "peers", textHeader:
                    Format.pad("overlay", 66) + Format.pad("last seen", 26) + Format.padLeft("score", 8) + "  "
                        + Format.pad("banned until", 26) + "addresses")
                for (overlay, r) in entries.prefix(limit.count) {
                    let e = Entry(overlay: overlay.hex, addresses: r.addresses, lastSeenMs: r.lastSeenMs,
                                  lastSeen: Format.time(ms: r.lastSeenMs), score: r.score, banUntilMs: r.banUntilMs,
                                  banUntil: Format.time(ms: r.banUntilMs), banned: r.banUntilMs > now)
                    listing.add(e, text: Format.pad(e.overlay, 66) + Format.pad(e.lastSeen ?? "never", 26)
                                + Format.padLeft(e.score, 8) + "  " + Format.pad(e.banned ? e.banUntil ?? "-" : "-", 26)
                                + e.addresses.joined(separator: " "))
                }
                let truncated = entries.count > limit.count
                listing.finish(trailer: ListingTrailer(count: listing.count, truncated: truncated, snapshotTransactionID: snapshot),
                               textFooter: Format.listed(listing.count, truncated: truncated, "peer"))
                return ExitStatus.ok
            }
        }
    }
}

// MARK: downloads

struct Downloads: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List downloads: root address, policy, state, progress.")

    @OptionGroup var location: StoreLocation
    @OptionGroup var limit: LimitOption
    @OptionGroup var output: OutputOptions

    struct Entry: Encodable {
        var root: String
        var policy: String
        var state: String
        var chunksDone: UInt64
        var chunksTotal: UInt64
        var createdMs: UInt64
        var created: String?
    }

    func run() throws {
        try runReporting(json: output.json) {
            try location.withReadOnlyStore { store in
                let (entries, snapshot) = try store.read { r in
                    (try r.downloads(limit: limit.count == .max ? .max : limit.count + 1), r.transactionID)
                }
                let listing = Listing(json: output.json, arrayKey: "downloads", textHeader:
                    Format.pad("root", 66) + Format.pad("policy", 10) + Format.pad("state", 8) + Format.padLeft("done", 12)
                        + Format.padLeft("total", 12) + "  created")
                for (root, r) in entries.prefix(limit.count) {
                    let e = Entry(root: root.hex, policy: "\(r.policy)", state: "\(r.state)", chunksDone: r.chunksDone,
                                  chunksTotal: r.chunksTotal, createdMs: r.createdMs, created: Format.time(ms: r.createdMs))
                    listing.add(e, text: Format.pad(e.root, 66) + Format.pad(e.policy, 10) + Format.pad(e.state, 8)
                                + Format.padLeft(e.chunksDone, 12) + Format.padLeft(e.chunksTotal, 12) + "  " + (e.created ?? "-"))
                }
                let truncated = entries.count > limit.count
                listing.finish(trailer: ListingTrailer(count: listing.count, truncated: truncated, snapshotTransactionID: snapshot),
                               textFooter: Format.listed(listing.count, truncated: truncated, "download"))
                return ExitStatus.ok
            }
        }
    }
}

// MARK: pins

struct Pins: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List pinned files: root address, chunks held, size, when pinned.")

    @OptionGroup var location: StoreLocation
    @OptionGroup var limit: LimitOption
    @OptionGroup var output: OutputOptions

    struct Entry: Encodable {
        var root: String
        var chunks: UInt64
        var bytes: UInt64
        var pinnedMs: UInt64
        var pinned: String?
    }

    func run() throws {
        try runReporting(json: output.json) {
            try location.withReadOnlyStore { store in
                let (entries, held, snapshot) = try store.read { r in
                    (try r.pins(limit: limit.count == .max ? .max : limit.count + 1), try r.pinnedChunkCount(), r.transactionID)
                }
                let listing = Listing(json: output.json, arrayKey: "pins", textHeader:
                    Format.pad("root", 66) + Format.padLeft("chunks", 10) + Format.padLeft("bytes", 16) + "  pinned")
                for (root, r) in entries.prefix(limit.count) {
                    let e = Entry(root: root.hex, chunks: r.chunks, bytes: r.bytes, pinnedMs: r.pinnedMs, pinned: Format.time(ms: r.pinnedMs))
                    listing.add(e, text: Format.pad(e.root, 66) + Format.padLeft(e.chunks, 10) + Format.padLeft(e.bytes, 16)
                                + "  " + (e.pinned ?? "-"))
                }
                let truncated = entries.count > limit.count
                listing.finish(trailer: ListingTrailer(count: listing.count, truncated: truncated, snapshotTransactionID: snapshot),
                               textFooter: Format.listed(listing.count, truncated: truncated, "pin") + "; \(held) distinct chunks held")
                return ExitStatus.ok
            }
        }
    }
}

// MARK: journal

struct Journal: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the newest supervisor decisions from the journal, oldest first.",
        discussion: """
            Lines are `key=value` tokens, the first `event=…` (Docs/Topology.md). --peer, --bin and \
            --event keep the lines every given filter matches; older free-text entries are shown only \
            without a filter. With a filter the whole journal is read (at most \(Schema.journalEntriesMax) entries).
            """)

    @OptionGroup var location: StoreLocation
    @Option(help: ArgumentHelp("Only lines about this peer: hex digits its overlay starts with (lines name a peer by its first 16).",
                               valueName: "hex"))
    var peer: String?
    @Option(help: "Only lines naming this bin (0…31) in `bins=` or `bin=`.") var bin: Int?
    @Option(help: ArgumentHelp("Only lines of this event: reconcile, subscribe, cancel, disconnect, …", valueName: "name"))
    var event: String?
    @OptionGroup var limit: LimitOption
    @OptionGroup var output: OutputOptions

    func validate() throws {
        if let peer, peer.isEmpty || peer.count > 64 || !peer.allSatisfy(\.isHexDigit) {
            throw ValidationError("--peer must be 1…64 hex digits; got '\(peer)'")
        }
        if let bin, !(0..<Proximity.binCount).contains(bin) {
            throw ValidationError("--bin must be 0…\(Proximity.maxBin); got \(bin)")
        }
        if let event, event.isEmpty || event.contains(where: \.isWhitespace) || event.contains("=") {
            throw ValidationError("--event must be one word, like subscribe; got '\(event)'")
        }
    }

    struct Entry: Encodable {
        var sequence: UInt64
        var timeMs: UInt64
        var time: String?
        var text: String
    }

    func run() throws {
        let filter = JournalLine.Filter(peerPrefix: peer, bin: bin, event: event)
        try runReporting(json: output.json) {
            try location.withReadOnlyStore { store in
                let (read, total, snapshot) = try store.read { r in
                    (try r.journal(limit: filter.isEmpty ? limit.count : .max),
                     try r.databaseStats().first { $0.name == Schema.Name.journal }?.stat.entries ?? 0, r.transactionID)
                }
                let matching = filter.isEmpty ? read : read.filter { filter.matches($0.entry.text) }
                let entries = matching.suffix(limit.count)
                let listing = Listing(json: output.json, arrayKey: "journal", textHeader: nil)
                for (sequence, entry) in entries {
                    let e = Entry(sequence: sequence, timeMs: entry.timeMs, time: Format.time(ms: entry.timeMs), text: entry.text)
                    listing.add(e, text: Format.padLeft(e.sequence, 8) + "  " + (e.time ?? "-") + "  "
                                + InspectFailure.oneLine(e.text))
                }
                let available = filter.isEmpty ? total : matching.count
                let truncated = available > entries.count
                let noun = filter.isEmpty ? "entries" : "matching entries"
                listing.finish(trailer: ListingTrailer(count: listing.count, truncated: truncated, snapshotTransactionID: snapshot),
                               textFooter: truncated
                                   ? "newest \(listing.count) of \(available) \(noun) (raise --limit, or --limit 0 for all)"
                                   : filter.isEmpty ? Format.listed(listing.count, truncated: false, "entry", "entries")
                                                    : "\(Format.count(listing.count, "matching entry", "matching entries")) of \(total)")
                return ExitStatus.ok
            }
        }
    }
}
