/// What a progress display counts: bytes of a transfer, or chunks a node's download has stored.
enum ProgressUnit: Sendable, Equatable {
    case bytes
    case chunks
}

/// A transfer's progress at one moment: what every progress display is drawn from.
struct ProgressState: Sendable, Equatable {
    /// "upload", "download" or "fetch".
    var label: String
    /// Bytes (or chunks, by `unit`) moved so far.
    var bytes: UInt64
    /// Bytes (or chunks) to move in all, when known (an upload from a pipe does not know).
    var total: UInt64?
    /// Seconds since the transfer started.
    var elapsedSeconds: Double
    /// Bytes (or chunks) per second, recently (`RateMeter`).
    var rate: Double
    var unit: ProgressUnit = .bytes
}

/// Pure formatting of progress: sizes, rates, durations, the bar, and the three kinds of line
/// (`--progress auto` on a terminal, `plain`, `json`). No I/O, no clock: tested alone.
enum ProgressFormat {
    private static let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]

    /// A byte count in binary units: "512 B", "1.5 KiB", "12.3 MiB", "123 MiB".
    /// One decimal below 100 of a unit, none above; a value that rounds up to 1024 of a unit
    /// is shown in the next one ("1.0 MiB", never "1024.0 KiB").
    static func bytes(_ count: UInt64) -> String {
        if count < 1024 { return "\(count) B" }
        var value = Double(count)
        var unit = 0
        while unit < units.count - 1 {
            value /= 1024
            unit += 1
            let shown = value < 99.95 ? (value * 10).rounded() / 10 : value.rounded()
            if shown < 1024 { break }
        }
        return "\(oneDecimal(value, dropBelow: 99.95)) \(units[unit])"
    }

    /// A rate: "5.1 MiB/s", "0 B/s" for nothing yet (or nonsense: negative, NaN).
    static func rate(_ bytesPerSecond: Double) -> String {
        guard bytesPerSecond.isFinite, bytesPerSecond > 0 else { return "0 B/s" }
        return bytes(bytesPerSecond >= Double(UInt64.max) ? UInt64.max : UInt64(bytesPerSecond.rounded())) + "/s"
    }

    /// A duration as "m:ss" or "h:mm:ss", rounded up to the second; ">99h" beyond 99 hours,
    /// "--:--" when unknown (nil, negative, not finite).
    static func duration(_ seconds: Double?) -> String {
        guard let seconds, seconds.isFinite, seconds >= 0 else { return "--:--" }
        guard seconds < 99 * 3600 else { return ">99h" }
        let whole = Int(seconds.rounded(.up))
        let h = whole / 3600, m = (whole % 3600) / 60, s = whole % 60
        let ss = s < 10 ? "0\(s)" : "\(s)"
        if h > 0 { return "\(h):\(m < 10 ? "0\(m)" : "\(m)"):\(ss)" }
        return "\(m):\(ss)"
    }

    /// A count in `unit`: `bytes(_:)`, or "1 chunk", "12345 chunks".
    static func amount(_ count: UInt64, _ unit: ProgressUnit) -> String {
        switch unit {
        case .bytes: bytes(count)
        case .chunks: count == 1 ? "1 chunk" : "\(count) chunks"
        }
    }

    /// A rate in `unit`: `rate(_:)`, or "37 chunks/s" (whole chunks, "0 chunks/s" for nothing).
    static func rate(_ perSecond: Double, _ unit: ProgressUnit) -> String {
        switch unit {
        case .bytes: return rate(perSecond)
        case .chunks:
            guard perSecond.isFinite, perSecond > 0 else { return "0 chunks/s" }
            return "\(perSecond >= 1e18 ? UInt64(1e18) : UInt64(perSecond.rounded())) chunks/s"
        }
    }

    /// Seconds left at `rate`, when the total is known and the rate is positive.
    static func eta(_ state: ProgressState) -> Double? {
        guard let total = state.total, state.rate.isFinite, state.rate > 0 else { return nil }
        guard total > state.bytes else { return 0 }
        return Double(total - state.bytes) / state.rate
    }

    /// Whole percent done (rounded down, so 100 only at the end), when the total is known.
    /// An empty transfer is 100% done.
    static func percent(bytes: UInt64, total: UInt64?) -> Int? {
        guard let total else { return nil }
        guard total > 0 else { return 100 }
        guard bytes < total else { return 100 }
        return Int((Double(bytes) / Double(total) * 100).rounded(.down))
    }

    /// "[=====>    ]" of `width` characters in all (brackets included, at least 3).
    static func bar(fraction: Double, width: Int) -> String {
        let inner = max(1, width - 2)
        let clamped = fraction.isFinite ? min(1, max(0, fraction)) : 0
        let filled = Int((clamped * Double(inner)).rounded(.down))
        if filled >= inner { return "[" + String(repeating: "=", count: inner) + "]" }
        return "[" + String(repeating: "=", count: filled) + ">" + String(repeating: " ", count: inner - filled - 1) + "]"
    }

    /// The one line redrawn on a terminal, at most `columns` characters:
    /// "download [=====>     ]  45% 12.3 MiB / 27.4 MiB  5.1 MiB/s  ETA 0:03".
    /// Without a total: "upload 12.3 MiB  5.1 MiB/s  0:05" (elapsed time). The bar shrinks
    /// (and goes) before the figures do; the figures are cut only on very narrow terminals.
    static func terminalLine(_ state: ProgressState, columns: Int) -> String {
        let figures: String
        var fraction: Double?
        if let total = state.total, let percent = percent(bytes: state.bytes, total: total) {
            let p = percent < 10 ? "  \(percent)%" : percent < 100 ? " \(percent)%" : "\(percent)%"
            figures = "\(p) \(amount(state.bytes, state.unit)) / \(amount(total, state.unit))  \(rate(state.rate, state.unit))  ETA \(duration(eta(state)))"
            fraction = total == 0 ? 1 : Double(state.bytes) / Double(total)
        } else {
            figures = "\(amount(state.bytes, state.unit))  \(rate(state.rate, state.unit))  \(duration(state.elapsedSeconds))"
        }
        let barWidthMax = 40, barWidthMin = 10
        let room = columns - state.label.count - figures.count - 2
        var line: String
        if let fraction, room >= barWidthMin {
            line = "\(state.label) \(bar(fraction: fraction, width: min(barWidthMax, room))) \(figures)"
        } else {
            line = "\(state.label) \(figures)"
        }
        if line.count > columns { line = String(line.prefix(max(0, columns))) }
        return line
    }

    /// A progress line for logs: "upload: 12.3 MiB of 27.4 MiB (45%), 5.1 MiB/s, ETA 0:03",
    /// or without a total "upload: 12.3 MiB, 5.1 MiB/s".
    static func plainLine(_ state: ProgressState) -> String {
        if let total = state.total, let percent = percent(bytes: state.bytes, total: total) {
            return "\(state.label): \(amount(state.bytes, state.unit)) of \(amount(total, state.unit)) (\(percent)%), \(rate(state.rate, state.unit)), ETA \(duration(eta(state)))"
        }
        return "\(state.label): \(amount(state.bytes, state.unit)), \(rate(state.rate, state.unit))"
    }

    /// The last plain line: "upload: 27.4 MiB in 0:05 (5.1 MiB/s)", the rate averaged over the
    /// whole transfer.
    static func plainSummary(_ state: ProgressState) -> String {
        "\(state.label): \(amount(state.bytes, state.unit)) in \(duration(state.elapsedSeconds)) (\(rate(averageRate(state), state.unit)))"
    }

    /// One JSON object: {"bytes":n,"total":n|null,"rate":n} with the rate in whole bytes per
    /// second ({"chunks":n,…} in chunks for a node's download); the last one (`done`) adds
    /// "seconds" and "done":true and has the average rate.
    static func jsonLine(_ state: ProgressState, done: Bool = false) -> String {
        let total = state.total.map { "\($0)" } ?? "null"
        let shownRate = done ? averageRate(state) : state.rate
        let rateValue = shownRate.isFinite && shownRate > 0 ? UInt64(min(shownRate, 1e18).rounded()) : 0
        let key = state.unit == .bytes ? "bytes" : "chunks"
        var line = #"{"\#(key)":\#(state.bytes),"total":\#(total),"rate":\#(rateValue)"#
        if done {
            let millis = state.elapsedSeconds.isFinite && state.elapsedSeconds > 0 ? UInt64((state.elapsedSeconds * 1000).rounded()) : 0
            line += #","seconds":\#(millis / 1000).\#(threeDigits(millis % 1000)),"done":true"#
        }
        return line + "}"
    }

    /// Bytes over the whole elapsed time (0 before any time has passed).
    static func averageRate(_ state: ProgressState) -> Double {
        state.elapsedSeconds > 0 ? Double(state.bytes) / state.elapsedSeconds : 0
    }

    private static func oneDecimal(_ value: Double, dropBelow limit: Double) -> String {
        if value >= limit { return "\(Int(value.rounded()))" }
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }

    private static func threeDigits(_ n: UInt64) -> String {
        n < 10 ? "00\(n)" : n < 100 ? "0\(n)" : "\(n)"
    }
}

/// When a progress display draws: at most 10 times a second on a terminal; otherwise once a
/// second, or when another tenth of a known total is done. Time is passed in (seconds since
/// the start), so the schedule is tested without a clock.
struct ProgressSchedule: Sendable, Equatable {
    enum Kind: Sendable, Equatable {
        /// The redrawn one-line bar.
        case terminal
        /// Lines for logs and pipes (`plain` and `json`).
        case lines
    }

    let kind: Kind
    /// When it last drew (seconds since the start); lines count the start itself as drawn.
    private(set) var lastDrawn: Double?
    /// Tenths of the total done at the last line.
    private(set) var lastTenth = 0

    static let terminalIntervalSeconds = 0.1
    static let linesIntervalSeconds = 1.0

    init(kind: Kind) {
        self.kind = kind
        lastDrawn = kind == .lines ? 0 : nil
    }

    /// Whether to draw now; if so, remembers that it did.
    mutating func shouldDraw(at now: Double, bytes: UInt64, total: UInt64?) -> Bool {
        let interval = kind == .terminal ? ProgressSchedule.terminalIntervalSeconds : ProgressSchedule.linesIntervalSeconds
        var draw = lastDrawn.map { now - $0 >= interval } ?? true
        var tenth = lastTenth
        if kind == .lines, let percent = ProgressFormat.percent(bytes: bytes, total: total) {
            tenth = percent / 10
            if tenth > lastTenth { draw = true }
        }
        if draw {
            lastDrawn = now
            lastTenth = tenth
        }
        return draw
    }
}

/// The recent transfer rate: bytes over the last `windowSeconds`, from samples taken as the
/// transfer goes (kept to a bounded number).
struct RateMeter: Sendable {
    let windowSeconds: Double
    /// (seconds since the start, bytes so far), oldest first.
    private var samples: [(time: Double, bytes: UInt64)] = [(0, 0)]
    static let samplesMax = 64

    init(windowSeconds: Double = 3) {
        self.windowSeconds = windowSeconds
    }

    /// Records the total at `time`; samples closer than a window's sixty-fourth replace the
    /// last one, so the count stays bounded at any call rate.
    mutating func record(at time: Double, bytes: UInt64) {
        if samples.count > 1, time - samples[samples.count - 2].time < windowSeconds / Double(RateMeter.samplesMax) {
            samples[samples.count - 1] = (time, bytes)
        } else {
            samples.append((time, bytes))
        }
        // Keep one sample at or before the window's start, so the rate spans the whole window.
        while samples.count > 2, samples[1].time <= time - windowSeconds { samples.removeFirst() }
        if samples.count > RateMeter.samplesMax { samples.removeFirst(samples.count - RateMeter.samplesMax) }
    }

    /// Samples kept (bounded by `samplesMax`).
    var sampleCount: Int { samples.count }

    /// Bytes per second between the oldest sample kept and the newest (0 before time passes).
    var rate: Double {
        guard let first = samples.first, let last = samples.last, last.time > first.time, last.bytes >= first.bytes else { return 0 }
        return Double(last.bytes - first.bytes) / (last.time - first.time)
    }
}
